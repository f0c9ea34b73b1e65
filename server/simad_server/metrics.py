"""Prometheus-style metrics (text exposition format 0.0.4) and the structured per-call log line."""

from __future__ import annotations

import asyncio
import bisect
import http.server
import json
import logging
import threading

BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
log = logging.getLogger("simad.server")


class Metrics:
    def __init__(self, queue_depth=lambda: 0):
        self._lock = threading.Lock()
        self._calls: dict[tuple[str, str], int] = {}
        self._hist: dict[str, list[int]] = {}
        self._sum: dict[str, float] = {}
        self._queue_depth = queue_depth

    def observe(self, method: str, code: str, seconds: float, **fields) -> None:
        """Counts one finished call and writes its log line (method, model, B, T, duration, status).

        On an event loop the line is written by a callback of the loop's next turn, after the
        reply has been handed to gRPC (the JSON and the log record cost ~10-30 us, which the
        caller then does not wait for); the counts are updated at once."""
        with self._lock:
            self._calls[(method, code)] = self._calls.get((method, code), 0) + 1
            h = self._hist.setdefault(method, [0] * (len(BUCKETS_S) + 1))
            h[bisect.bisect_left(BUCKETS_S, seconds)] += 1
            self._sum[method] = self._sum.get(method, 0.0) + seconds
        if log.isEnabledFor(logging.INFO):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                _log_line(method, code, seconds, fields)
            else:
                loop.call_soon(_log_line, method, code, seconds, fields)

    def count(self, method: str, code: str) -> int:
        with self._lock:
            return self._calls.get((method, code), 0)

    def render(self) -> str:
        lines = [
            "# HELP simad_calls_total Finished RPCs by method and status code.",
            "# TYPE simad_calls_total counter",
        ]
        with self._lock:
            for (m, c), n in sorted(self._calls.items()):
                lines.append(f'simad_calls_total{{method="{m}",code="{c}"}} {n}')
            lines += ["# HELP simad_call_seconds RPC latency.", "# TYPE simad_call_seconds histogram"]
            for m, h in sorted(self._hist.items()):
                acc = 0
                for b, n in zip(BUCKETS_S, h, strict=False):
                    acc += n
                    lines.append(f'simad_call_seconds_bucket{{method="{m}",le="{b}"}} {acc}')
                acc += h[-1]
                lines.append(f'simad_call_seconds_bucket{{method="{m}",le="+Inf"}} {acc}')
                lines.append(f'simad_call_seconds_sum{{method="{m}"}} {self._sum[m]:.6f}')
                lines.append(f'simad_call_seconds_count{{method="{m}"}} {acc}')
        lines += [
            "# HELP simad_queue_depth Calls queued or running on the simulation thread.",
            "# TYPE simad_queue_depth gauge",
            f"simad_queue_depth {self._queue_depth()}",
        ]
        return "\n".join(lines) + "\n"


def _log_line(method: str, code: str, seconds: float, fields: dict) -> None:
    rec = {"method": method, "status": code, "ms": round(seconds * 1e3, 3)}
    rec.update({k: v for k, v in fields.items() if v not in (None, "")})
    log.info(json.dumps(rec, separators=(",", ":")))


def serve_metrics(metrics: Metrics, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """Serves ``GET /metrics`` on a daemon thread; returns the server (``server_address`` has the port)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") != "/metrics":
                self.send_error(404)
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=srv.serve_forever, name="simad-metrics", daemon=True).start()
    return srv
