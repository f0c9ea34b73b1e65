"""Starts a throwaway simad server on 127.0.0.1 for the examples (a subprocess, temp store)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "clients" / "python")]


@contextlib.contextmanager
def local_server(*, warmup: str = "serial", status=None):
    """Yields the address of a fresh server once its health is SERVING; stops it after (SIGTERM).

    ``warmup`` is the server's ``--warmup`` level. The examples make small-batch calls only
    (B < 16), so ``serial`` compiles what they use: on a fresh machine that is about a quarter
    of the cold start of ``all`` (the production default)."""
    from simad_client import Client

    env = dict(os.environ)
    paths = os.pathsep.join(str(ROOT / p) for p in ("", "server", "clients/python"))
    env["PYTHONPATH"] = paths + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("SIMAD_LOG_LEVEL", "WARNING")
    with tempfile.TemporaryDirectory(prefix="simad-example-") as data:
        cmd = [sys.executable, "-m", "simad_server", "serve", "--address", "127.0.0.1:0", "--data-dir", data]
        proc = subprocess.Popen(cmd + ["--warmup", warmup], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        try:
            address = None
            for line in proc.stdout:
                if line.startswith("simad: listening on"):
                    address = line.rsplit(" ", 1)[-1].strip()
                    break
            if address is None:
                raise RuntimeError(f"the server did not start (exit code {proc.wait()})")
            with Client(address, timeout=60) as c, (status or contextlib.nullcontext)():
                while c.health() != "SERVING":
                    if proc.poll() is not None:
                        raise RuntimeError(f"the server exited with code {proc.returncode}")
                    time.sleep(0.2)
            yield address
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
