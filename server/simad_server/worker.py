"""The simulation worker: a child process that owns Taichi, and the bounded queue in front of it.

Why a process and not a thread: a Taichi kernel holds Python's GIL while it runs (measured: a
0.8 s rollout let another thread run 5 times instead of ~700), so a kernel on a thread of the
server would freeze the event loop, health checks included. In a child process the event loop
only decodes, validates, encodes and waits. A crash inside a kernel kills the worker, not the
server: pending calls fail with UNAVAILABLE and a new worker starts with every model.

Protocol over a pipe (pickle): ("model", key, Model) registers a model; ("drop", key) forgets
it; ("call", id, job, key, overrides, args, kwargs, deadline) runs ``jobs.JOBS[job]`` with the
model first (when key is not None) and answers ("ok", id, result) or ("err", id, exception).
Calls run one at a time, in order; a call whose deadline (wall clock) has passed when its turn
comes is answered DEADLINE_EXCEEDED without running.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import queue
import threading
import time

from simad_client.errors import WireError

log = logging.getLogger("simad.server")


def _worker_main(conn, init_kwargs: dict) -> None:
    import os

    os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "False")
    import simad

    from .jobs import JOBS

    simad.init(**init_kwargs)
    models: dict = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        kind = msg[0]
        if kind == "model":
            models[msg[1]] = msg[2]
        elif kind == "drop":
            models.pop(msg[1], None)
        elif kind == "stop":
            break
        elif kind == "call":
            _, cid, job, key, overrides, args, kwargs, deadline = msg
            try:
                if deadline is not None and time.time() > deadline:
                    raise WireError("DEADLINE_EXCEEDED", "the deadline passed while the call was queued")
                if key is not None:
                    if key not in models:  # deleted while a call or a control session still used it
                        raise WireError("NOT_FOUND", "the model was deleted while this call or session used it",
                                        "model_id")
                    model = models[key]
                    if overrides:
                        model = model.replace(**overrides)
                    args = (model,) + tuple(args)
                out = ("ok", cid, JOBS[job](*args, **kwargs))
            except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
                out = ("err", cid, e)
            try:
                conn.send(out)
            except Exception as e:  # noqa: BLE001 - e.g. an unpicklable exception
                conn.send(("err", cid, RuntimeError(f"{type(e).__name__}: {e}")))
    try:
        import taichi as ti

        ti.reset()  # writes the offline cache
    except Exception:  # noqa: BLE001
        pass


class SimWorker:
    """Main-process handle: ``await run(job, key, *args, ...)``; a sender and a reader thread
    keep pipe I/O off the event loop (a large send blocks until the worker reads it)."""

    def __init__(self, max_queue: int, init_kwargs: dict, models=lambda: {}):
        self.max_queue = int(max_queue)
        self._init_kwargs = dict(init_kwargs)
        self._models = models  # () -> {key: Model}, re-sent to a restarted worker
        self._lock = threading.Lock()
        self._pending: dict[int, tuple] = {}
        self._ids = itertools.count()
        self._outbox: queue.Queue = queue.Queue()
        self._closed = False
        self.restarts = 0
        self._start_process()
        threading.Thread(target=self._sender, name="simad-send", daemon=True).start()

    # ---- process management ----------------------------------------------------------------
    def _start_process(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child, self._init_kwargs), name="simad-worker", daemon=True)
        proc.start()
        child.close()
        with self._lock:  # shutdown() only ever sees a started process
            self._proc, self._conn = proc, parent
        for key, model in self._models().items():
            self._conn.send(("model", key, model))
        threading.Thread(target=self._reader, args=(parent,), name="simad-recv", daemon=True).start()

    def _sender(self) -> None:
        while True:
            msg = self._outbox.get()
            if msg is None:
                return
            try:
                self._conn.send(msg)
            except (OSError, ValueError) as e:  # a dead worker's pipe; the reader restarts it
                if msg[0] == "call":
                    self._resolve(msg[1], "err", WireError("UNAVAILABLE", f"the simulation worker is unavailable ({e})"))
            except Exception as e:  # noqa: BLE001 - e.g. an argument that does not pickle: that call fails, not the thread
                log.exception("cannot send to the simulation worker")
                if msg[0] == "call":
                    self._resolve(msg[1], "err", e)

    def _reader(self, conn) -> None:
        while True:
            try:
                kind, cid, value = conn.recv()
            except (EOFError, OSError):
                break
            self._resolve(cid, kind, value)
        if self._closed:
            return
        self._proc.join(1)  # reap it, so the exit code is known
        code = self._proc.exitcode
        log.error(f'{{"event":"worker_died","exitcode":{code}}}')
        with self._lock:
            lost = list(self._pending)
        for cid in lost:
            self._resolve(cid, "err", WireError("UNAVAILABLE", f"the simulation worker died (exit code {code}) during "
                                                "this call or before it; it was restarted, retry"))
        self.restarts += 1
        self._start_process()

    def _resolve(self, cid: int, kind: str, value) -> None:
        with self._lock:
            entry = self._pending.pop(cid, None)
        if entry is None:
            return
        loop, fut = entry
        if loop is None:
            fut.put((kind, value))
            return

        def done():
            if fut.done():
                return
            if kind == "ok":
                fut.set_result(value)
            else:
                fut.set_exception(value)

        loop.call_soon_threadsafe(done)

    # ---- calls -------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._pending)

    def _submit(self, job, key, overrides, args, kwargs, timeout, loop, fut) -> None:
        with self._lock:
            if self._closed:
                raise WireError("UNAVAILABLE", "the server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise WireError("RESOURCE_EXHAUSTED", f"server busy: {len(self._pending)} calls queued (limit {self.max_queue})")
            cid = next(self._ids)
            self._pending[cid] = (loop, fut)
        deadline = time.time() + timeout if timeout is not None else None
        self._outbox.put(("call", cid, job, key, overrides or None, tuple(args), dict(kwargs), deadline))

    async def run(self, job: str, key: str | None = None, *args, overrides=None, timeout=None, **kwargs):
        """Runs ``JOBS[job](model_of(key), *args, **kwargs)`` in the worker; ``timeout``: the
        call's remaining deadline, s."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._submit(job, key, overrides, args, kwargs, timeout, loop, fut)
        return await fut

    def call(self, job: str, key: str | None = None, *args, **kwargs):
        """Blocking variant (start-up, outside the event loop)."""
        box: queue.Queue = queue.Queue()
        self._submit(job, key, None, args, kwargs, None, None, box)
        kind, value = box.get()
        if kind != "ok":
            raise value
        return value

    def add_model(self, key: str, model) -> None:
        self._outbox.put(("model", key, model))

    def drop_model(self, key: str) -> None:
        self._outbox.put(("drop", key))

    def shutdown(self, timeout: float = 30.0) -> None:
        self._closed = True
        self._outbox.put(("stop",))
        self._outbox.put(None)
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()
        with self._lock:
            lost = list(self._pending)
        for cid in lost:
            self._resolve(cid, "err", WireError("UNAVAILABLE", "the server is shutting down"))
