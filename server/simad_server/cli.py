"""``simad serve``: the server's command line. Every flag has a SIMAD_* environment variable."""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import signal
import sys
import threading

from .app import ServerConfig, create_server


def _env(name, default=None, kind=str):
    v = os.environ.get(name)
    return default if v in (None, "") else kind(v)


def parser() -> argparse.ArgumentParser:
    d = ServerConfig()
    p = argparse.ArgumentParser(prog="simad", description="simad: differentiable simulation over gRPC")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the gRPC server")
    s.add_argument("--address", default=_env("SIMAD_ADDRESS", d.address), help="host:port (port 0: any free port) [SIMAD_ADDRESS]")
    s.add_argument("--data-dir", default=_env("SIMAD_DATA_DIR", d.data_dir), help="model store directory [SIMAD_DATA_DIR]")
    s.add_argument("--token", default=_env("SIMAD_TOKEN"), help="require 'authorization: Bearer <token>' [SIMAD_TOKEN]")
    s.add_argument("--tls-cert", default=_env("SIMAD_TLS_CERT"), help="PEM certificate chain [SIMAD_TLS_CERT]")
    s.add_argument("--tls-key", default=_env("SIMAD_TLS_KEY"), help="PEM private key [SIMAD_TLS_KEY]")
    s.add_argument("--precision", default=_env("SIMAD_PRECISION", "f64"), choices=["f64", "f32"], help="[SIMAD_PRECISION]")
    s.add_argument("--backend", default=_env("SIMAD_ARCH", "cpu"), choices=["cpu", "gpu", "cuda", "vulkan", "metal"], help="Taichi arch [SIMAD_ARCH]")
    s.add_argument("--compile", default=_env("SIMAD_COMPILE", "balanced"), choices=["balanced", "fast", "max"], help="[SIMAD_COMPILE]")
    for name, kind in (("max_batch", int), ("max_steps", int), ("max_elements", int), ("max_message_bytes", int),
                       ("max_queue", int), ("max_models", int)):
        flag = "--" + name.replace("_", "-")
        s.add_argument(flag, type=kind, default=_env("SIMAD_" + name.upper(), getattr(d, name), kind), help=f"[SIMAD_{name.upper()}]")
    s.add_argument("--warmup", default=_env("SIMAD_WARMUP", "all"), choices=["all", "serial", "none"],
                   help="kernels compiled before health says SERVING: all; serial (small-batch variants only, "
                        "a first call with B >= 16 compiles); none (first calls compile) [SIMAD_WARMUP]")
    s.add_argument("--no-warmup", action="store_true", help="same as --warmup none")
    s.add_argument("--metrics-port", type=int, default=_env("SIMAD_METRICS_PORT", None, int), help="serve Prometheus /metrics on 127.0.0.1:PORT")
    s.add_argument("--grace", type=float, default=_env("SIMAD_GRACE_S", d.grace_s, float), help="seconds to drain on SIGTERM")
    s.add_argument("--worker-spin-us", type=float, default=_env("SIMAD_WORKER_SPIN_US", d.worker_spin_us, float),
                   help="the simulation worker polls this many microseconds for the next call before it sleeps "
                        "(0: sleeps at once) [SIMAD_WORKER_SPIN_US]")
    s.add_argument("--log-level", default=_env("SIMAD_LOG_LEVEL", "INFO"), help="DEBUG, INFO (one JSON line per call), WARNING")
    return p


async def serve(args) -> int:
    if (args.tls_cert is None) != (args.tls_key is None):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    cfg = ServerConfig(address=args.address, data_dir=args.data_dir, token=args.token, tls_cert=args.tls_cert,
                       tls_key=args.tls_key, precision=args.precision, backend=args.backend, compile=args.compile,
                       max_batch=args.max_batch, max_steps=args.max_steps, max_elements=args.max_elements,
                       max_message_bytes=args.max_message_bytes, max_queue=args.max_queue, max_models=args.max_models,
                       warmup="none" if args.no_warmup else args.warmup, metrics_port=args.metrics_port, grace_s=args.grace,
                       worker_spin_us=args.worker_spin_us)
    server = create_server(cfg)
    host = args.address.rsplit(":", 1)[0]
    print(f"simad: listening on {host}:{server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.ensure_future(server.start())
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if starting.done():
        starting.result()
        extra = f", metrics on 127.0.0.1:{server.metrics_server.server_address[1]}" if server.metrics_server else ""
        print(f"simad: ready ({server.core.info['backend']}, {server.core.info['precision']}, "
              f"{len(server.registry)} stored models{extra})", flush=True)
        await waiter
    else:
        starting.cancel()
    print("simad: draining", flush=True)
    await server.stop()
    print("simad: stopped", flush=True)
    return 0


class BatchedLog(logging.Handler):
    """Writes log records from a thread that wakes every ``interval`` s (at once for warnings and
    errors): the event loop only appends the record to a deque, and the writer takes the GIL a
    few times a second instead of once per call (measured with one JSON line per call: a
    queue-and-listener thread per record cost the FK call ~0.15 ms here, the listener and the
    loop contending for the GIL on 2 cores). Records are formatted by the writer thread."""

    def __init__(self, stream, interval: float = 0.05):
        super().__init__()
        self.stream, self.interval = stream, interval
        self._records: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="simad-log", daemon=True)
        self._thread.start()

    def handle(self, record) -> bool:  # no lock: deque.append is atomic; filters as Handler.handle
        rv = self.filter(record)
        if rv:
            self._records.append(record)
            if record.levelno >= logging.WARNING:
                self._wake.set()
        return rv

    def emit(self, record) -> None:  # handle() does not call it; kept for the Handler API
        self.handle(record)

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        lines = []
        while self._records:
            record = self._records.popleft()
            try:
                lines.append(self.format(record))
            except Exception:  # noqa: BLE001 - as logging does: report it and go on
                self.handleError(record)
        if lines:
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed
                pass

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(5)
        self.flush()
        super().close()


# gRPC core's legacy (iomgr) listener and client endpoints instead of the EventEngine ones: fewer
# thread hops per call (measured on 2 shared cores, two servers side by side, calls alternated:
# health check -6 to -7 %, FK -3 to -4 %, i.e. ~0.07-0.1 ms). Read when gRPC initialises, so
# only a process that has not made a channel or server yet is affected; an explicit
# GRPC_EXPERIMENTS (even empty) wins.
GRPC_EXPERIMENTS = "-event_engine_listener,-event_engine_client"


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
    # cheaper records (no caller lookup, thread or process names: the lines are JSON messages)
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    out = BatchedLog(sys.stderr)
    out.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.setLevel(getattr(logging, str(args.log_level).upper(), logging.INFO))
    root.addHandler(out)
    try:
        return asyncio.run(serve(args))
    finally:
        root.removeHandler(out)
        out.close()


if __name__ == "__main__":
    sys.exit(main())
