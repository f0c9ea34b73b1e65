"""The simulation worker: a child process that owns Taichi, and the bounded queue in front of it.

Why a process and not a thread: a Taichi kernel holds Python's GIL while it runs (measured: a
0.8 s rollout let another thread run 5 times instead of ~700), so a kernel on a thread of the
server would freeze the event loop, health checks included. In a child process the event loop
only decodes, validates, encodes and waits. A crash inside a kernel kills the worker, not the
server: pending calls fail with UNAVAILABLE and a new worker starts with every model.

Protocol over a socket pair, one pickled tuple per frame (protocol 5; numeric arrays as their raw
buffer, dtype string and shape, see ``_Pickler``; multiprocessing.Connection's framing:
a 4-byte big-endian length, or -1 and an 8-byte length): ("model", key, Model) registers a
model; ("drop", key) forgets it; ("call", id, job, key, overrides, args, kwargs, deadline) runs
``jobs.JOBS[job]`` with the model first (when key is not None) and answers ("ok", id, result)
or ("err", id, exception); ("stop",) ends the worker. Calls run one at a time, in order; a call
whose deadline (wall clock) has passed when its turn comes is answered DEADLINE_EXCEEDED without
running.

The server's end does its pipe I/O on the event loop, without threads: replies are read by a
reader callback on the socket (``loop.add_reader``) that resolves the calls' futures directly,
and a request is written from the loop with a non-blocking send; whatever the socket does not
take at once (a large payload) is written by a writer callback as the worker reads, so a big
send never blocks the loop. (Before, a sender and a reader thread did the I/O and handed each
message to the loop: two thread switches under the GIL per call, ~0.1-0.3 ms here.) The
blocking ``call`` (start-up, executor threads) shares the same queue: it waits for the loop's
reader when a running loop owns the I/O, and otherwise does the I/O itself.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import pickle
import queue
import select
import socket
import struct
import threading
import time

import numpy as np
from simad_client.errors import WireError

log = logging.getLogger("simad.server")

PROTOCOL = 5  # pickle protocol of every message (numpy arrays as raw bytes)
_COALESCE = 1 << 16  # a frame up to this size goes out as one buffer with its header
_READ_CHUNK = 1 << 18  # bytes asked of the socket per read
_READ_BUDGET = 1 << 23  # bytes read per reader callback before the loop runs other work
_HDR = struct.Struct("!i")
_HDR_LONG = struct.Struct("!Q")


def _array(buf, dtype: str, shape: tuple):
    """Unpickles an array written by ``_Pickler`` (a writable array; a read-only one is copied)."""
    a = np.frombuffer(buf, dtype).reshape(shape)
    return a if a.flags.writeable else a.copy()


class _Pickler(pickle.Pickler):
    """Pickles numeric C-contiguous numpy arrays as (buffer, dtype string, shape): numpy's own
    reduction pickles a dtype object per array (measured, small call and reply messages: dumps
    22 -> 15 us and 29 -> 21 us with loads; a 21 MB FK reply: dumps 22 -> 3 ms)."""

    def reducer_override(self, obj):
        if type(obj) is np.ndarray and obj.dtype.kind in "biufc" and obj.dtype.isnative and obj.flags.c_contiguous:
            return _array, (pickle.PickleBuffer(obj), obj.dtype.str, obj.shape)
        return NotImplemented


class _Chunks:
    __slots__ = ("write",)

    def __init__(self, chunks: list):
        self.write = chunks.append  # the pickler hands large buffers over without copying them


def _dumps(msg) -> bytes:
    chunks: list = []
    _Pickler(_Chunks(chunks), PROTOCOL).dump(msg)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _frame_header(n: int) -> bytes:
    return _HDR.pack(n) if n <= 0x7FFFFFFF else _HDR.pack(-1) + _HDR_LONG.pack(n)


def _worker_main(conn, init_kwargs: dict, spin_s: float = 0.0) -> None:
    import os

    os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "False")
    import simad

    from .jobs import JOBS

    simad.init(**init_kwargs)
    models: dict = {}
    recv, send, poll, clock = conn.recv_bytes, conn.send_bytes, conn.poll, time.perf_counter
    while True:
        if spin_s > 0:  # stay on the CPU a moment before sleeping in recv (see ServerConfig.worker_spin_us)
            end = clock() + spin_s
            while not poll(0) and clock() < end:
                pass
        try:
            msg = pickle.loads(recv())
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
                data = _dumps(("ok", cid, JOBS[job](*args, **kwargs)))
            except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
                data = _error_frame(cid, e)
            try:
                send(data)
            except OSError:  # the server went away
                break
    try:
        import taichi as ti

        ti.reset()  # writes the offline cache
    except Exception:  # noqa: BLE001
        pass


def _error_frame(cid: int, e: BaseException) -> bytes:
    """The pickled ("err", cid, e); an exception that does not survive a pickle round trip (a
    custom class whose constructor takes other arguments) goes back as a RuntimeError naming it."""
    try:
        data = _dumps(("err", cid, e))
        pickle.loads(data)
        return data
    except Exception as why:  # noqa: BLE001
        return pickle.dumps(("err", cid, RuntimeError(f"{type(e).__name__}: {e} (not picklable: {why})")), PROTOCOL)


class SimWorker:
    """Main-process handle: ``await run(job, key, *args, ...)`` from the event loop, or the
    blocking ``call`` from any thread.

    Args:
        max_queue: calls waiting or running in the worker before RESOURCE_EXHAUSTED.
        init_kwargs: ``simad.init`` arguments of the worker.
        models: () -> {key: Model}, sent to a (re)started worker.
        spin_us: the worker polls its socket this long after each message before it blocks
            (0: blocks at once); see ``ServerConfig.worker_spin_us``.
    """

    def __init__(self, max_queue: int, init_kwargs: dict, models=lambda: {}, spin_us: float = 0.0):
        self.max_queue = int(max_queue)
        self._init_kwargs = dict(init_kwargs)
        self._models = models
        self.spin_us = max(float(spin_us), 0.0)
        self._lock = threading.RLock()  # pending calls, the socket and both buffers
        self._pending: dict[int, tuple] = {}  # id -> (loop, future) or (None, SimpleQueue)
        self._ids = itertools.count()
        self._closed = False
        self.restarts = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that owns the I/O, once a run() came
        self._loop_thread: int | None = None
        self._sock: socket.socket | None = None  # None while the worker restarts
        self._gen = 0  # generation of the worker process (stale callbacks check it)
        self._out: collections.deque = collections.deque()  # bytes not yet written, in order
        self._held: list = []  # model/drop messages while restarting, replayed to the new worker
        self._writer_armed = False
        self._registered: tuple | None = None  # (loop, fd) of the reader callback
        self._rbuf = bytearray(_READ_CHUNK)
        self._rlen = 0  # valid bytes in _rbuf
        self._start_process()

    # ---- process management ----------------------------------------------------------------
    def _start_process(self) -> None:
        models = self._models()  # before our lock: the registry's lock is taken before ours elsewhere
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = socket.socketpair()
        child = multiprocessing.connection.Connection(theirs.detach())
        proc = ctx.Process(target=_worker_main, args=(child, self._init_kwargs, self.spin_us * 1e-6),
                           name="simad-worker", daemon=True)
        proc.start()
        child.close()
        ours.setblocking(False)
        with self._lock:  # shutdown() only ever sees a started process
            if self._closed:
                ours.close()
                proc.kill()
                self._proc = proc
                return
            self._proc, self._sock = proc, ours
            self._gen += 1
            self._out.clear()
            self._rlen = 0
            msgs = [("model", k, m) for k, m in models.items()] + self._held
            self._held = []
            for msg in msgs:
                self._queue(_dumps(msg))
            self._flush()
            loop = self._loop
        if loop is not None:
            self._on_loop(loop, self._register)

    def _dead(self, gen: int) -> None:
        """The worker of generation ``gen`` is gone (EOF or a broken socket): its calls fail with
        UNAVAILABLE and, unless we are shutting down, a new worker starts (on a thread: reaping
        the old one and spawning take a while)."""
        with self._lock:
            if gen != self._gen or self._sock is None:
                return
            sock, self._sock = self._sock, None
            self._out.clear()
            lost = list(self._pending)
            closed = self._closed
            if not closed:
                self.restarts += 1
        self._unregister(sock)
        if closed:
            return
        for cid in lost:
            self._resolve(cid, "err", WireError("UNAVAILABLE", "the simulation worker died during this call or before "
                                                "it; it is being restarted, retry"))
        threading.Thread(target=self._restart, args=(self._proc,), name="simad-restart", daemon=True).start()

    def _restart(self, old) -> None:
        old.join(1)  # reap it, so the exit code is known
        log.error(f'{{"event":"worker_died","exitcode":{old.exitcode}}}')
        try:
            self._start_process()
        except Exception:  # noqa: BLE001 - e.g. out of memory; calls keep getting UNAVAILABLE
            log.exception("cannot restart the simulation worker")

    # ---- the event loop's side -----------------------------------------------------------------
    def _on_loop(self, loop, fn, *args) -> None:
        """Runs ``fn(*args)`` on ``loop``'s thread: now if we are on it, else soon."""
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop is closed: nothing is registered there any more
                pass

    def _attach(self, loop) -> None:
        """From now on ``loop`` (the running one; we are on its thread) does the pipe I/O."""
        with self._lock:
            old, old_reg = self._loop, self._registered
            self._loop, self._loop_thread = loop, threading.get_ident()
            self._writer_armed = False
        if old is not None and old_reg is not None:  # another loop had it (tests): let go there
            try:
                old.call_soon_threadsafe(self._remove, old_reg)
            except RuntimeError:
                pass
            self._registered = None
        self._register()

    def _register(self) -> None:
        """(Loop thread) Watches the current socket for replies, and for room if bytes wait."""
        with self._lock:
            sock, loop = self._sock, self._loop
            if sock is None or loop is None or self._closed:
                return
            fd = sock.fileno()
            if self._registered == (loop, fd):
                return
            if self._registered is not None:
                self._remove(self._registered)
            gen = self._gen
            loop.add_reader(fd, self._on_readable, gen)
            self._registered = (loop, fd)
            self._writer_armed = False
            if self._out:
                self._arm_writer()

    def _remove(self, reg) -> None:
        loop, fd = reg
        try:
            loop.remove_reader(fd)
            loop.remove_writer(fd)
        except (ValueError, OSError, RuntimeError):
            pass

    def _unregister(self, sock) -> None:
        """Stops watching ``sock`` and closes it (on the loop's thread, before its fd number can be reused)."""
        with self._lock:
            reg = self._registered
            loop = self._loop

        def done():
            with self._lock:
                if self._registered is not None and self._registered[1] == sock.fileno():
                    self._remove(self._registered)
                    self._registered = None
                    self._writer_armed = False
            sock.close()

        if loop is None or reg is None or loop.is_closed():
            sock.close()
        else:
            self._on_loop(loop, done)

    def _arm_writer(self) -> None:
        """(Loop thread, lock held) Calls _on_writable when the socket has room."""
        if not self._writer_armed and self._registered is not None:
            loop, fd = self._registered
            loop.add_writer(fd, self._on_writable, self._gen)
            self._writer_armed = True

    def _on_writable(self, gen: int) -> None:
        with self._lock:
            if gen != self._gen:
                return
            self._flush()
            if not self._out and self._writer_armed and self._registered is not None:
                self._registered[0].remove_writer(self._registered[1])
                self._writer_armed = False

    def _on_readable(self, gen: int) -> None:
        with self._lock:
            if gen != self._gen or self._sock is None:
                return
            msgs, eof = self._read()
        for kind, cid, value in msgs:
            self._resolve(cid, kind, value)
        if eof:
            self._dead(gen)

    # ---- bytes in and out (lock held) ------------------------------------------------------
    def _queue(self, data: bytes) -> None:
        header = _frame_header(len(data))
        if len(data) <= _COALESCE:
            self._out.append(header + data)
        else:
            self._out.append(header)
            self._out.append(memoryview(data))

    def _flush(self) -> bool:
        """Writes what the socket takes now (never blocks); True when nothing is left. A broken
        socket is left to the reader, which sees EOF and restarts the worker."""
        sock = self._sock
        while self._out and sock is not None:
            buf = self._out[0]
            try:
                n = sock.send(buf)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                self._out.clear()
                return True
            if n < len(buf):
                self._out[0] = memoryview(buf)[n:]
                return False
            self._out.popleft()
        return not self._out

    def _kick(self) -> None:
        """After queueing bytes: write now; the rest when the socket has room (the loop's writer
        callback, or the blocking caller's own pump)."""
        if self._flush():
            return
        loop = self._loop
        if loop is None or self._registered is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._arm_writer()
        else:
            try:
                loop.call_soon_threadsafe(self._arm_writer_locked)
            except RuntimeError:
                pass

    def _arm_writer_locked(self) -> None:
        with self._lock:
            if self._out:
                self._arm_writer()

    def _read(self) -> tuple[list, bool]:
        """Reads what has arrived (up to a budget) and decodes every complete frame:
        (messages, EOF seen)."""
        sock, msgs, eof, budget = self._sock, [], False, _READ_BUDGET
        while budget > 0:
            if len(self._rbuf) - self._rlen < _READ_CHUNK // 4:
                self._grow()
            try:
                with memoryview(self._rbuf) as mv:
                    n = sock.recv_into(mv[self._rlen:])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                eof = True
                break
            if n == 0:
                eof = True
                break
            self._rlen += n
            budget -= n
            self._decode(msgs)
        return msgs, eof

    def _grow(self) -> None:
        """A larger read buffer: room for the whole frame being read (one allocation for a
        large reply), or for another chunk."""
        need = 0
        if self._rlen >= 4:
            (n,) = _HDR.unpack_from(self._rbuf, 0)
            if n >= 0:
                need = 4 + n
            elif self._rlen >= 12:
                need = 12 + _HDR_LONG.unpack_from(self._rbuf, 4)[0]
        new = bytearray(max(self._rlen + _READ_CHUNK, need))
        with memoryview(self._rbuf) as mv:
            new[:self._rlen] = mv[:self._rlen]
        self._rbuf = new

    def _decode(self, msgs: list) -> None:
        """Appends the messages of the complete frames in the buffer; keeps the rest."""
        pos, buf = 0, self._rbuf
        while True:
            avail = self._rlen - pos
            if avail < 4:
                break
            (n,) = _HDR.unpack_from(buf, pos)
            h = 4
            if n < 0:
                if avail < 12:
                    break
                n, h = _HDR_LONG.unpack_from(buf, pos + 4)[0], 12
            if avail < h + n:
                break
            with memoryview(buf) as mv:
                payload = mv[pos + h:pos + h + n]
                try:
                    msgs.append(pickle.loads(payload))
                except Exception:  # noqa: BLE001 - cannot happen (the worker checks its errors); never hang
                    log.exception("undecodable message from the simulation worker; restarting it")
                    self._proc.kill()
                finally:
                    payload.release()
            pos += h + n
        if pos:
            rest = self._rlen - pos
            if len(buf) > 4 * _READ_CHUNK and rest < _READ_CHUNK:  # a large reply went through: give it back
                self._rbuf = bytearray(_READ_CHUNK)
            if rest:  # (a copy: the ranges may overlap)
                self._rbuf[:rest] = bytes(memoryview(buf)[pos:pos + rest])
            self._rlen = rest

    # ---- calls -------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._pending)

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
            if fut.done():  # e.g. cancelled: the caller's deadline passed
                return
            if kind == "ok":
                fut.set_result(value)
            else:
                fut.set_exception(value)

        if threading.get_ident() == self._loop_thread and loop is self._loop:
            done()
        else:
            try:
                loop.call_soon_threadsafe(done)
            except RuntimeError:  # that loop is closed: nobody waits for the answer
                pass

    def _submit(self, job, key, overrides, args, kwargs, timeout, loop, fut) -> None:
        with self._lock:
            if self._closed:
                raise WireError("UNAVAILABLE", "the server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise WireError("RESOURCE_EXHAUSTED", f"server busy: {len(self._pending)} calls queued (limit {self.max_queue})")
            if self._sock is None:
                raise WireError("UNAVAILABLE", "the simulation worker is restarting; retry")
            cid = next(self._ids)
            deadline = time.time() + timeout if timeout is not None else None
            # an argument that does not pickle fails this call here, before anything is queued
            data = _dumps(("call", cid, job, key, overrides or None, tuple(args), dict(kwargs), deadline))
            self._pending[cid] = (loop, fut)
            self._queue(data)
            self._kick()

    async def run(self, job: str, key: str | None = None, *args, overrides=None, timeout=None, **kwargs):
        """Runs ``JOBS[job](model_of(key), *args, **kwargs)`` in the worker; ``timeout``: the
        call's remaining deadline, s."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._attach(loop)
        fut = loop.create_future()
        self._submit(job, key, overrides, args, kwargs, timeout, loop, fut)
        return await fut

    def call(self, job: str, key: str | None = None, *args, **kwargs):
        """Blocking variant (start-up, executor threads; not from a running loop that owns the I/O)."""
        box: queue.SimpleQueue = queue.SimpleQueue()
        self._submit(job, key, None, args, kwargs, None, None, box)
        while True:
            loop = self._loop
            if loop is not None and loop.is_running() and threading.get_ident() != self._loop_thread:
                try:  # the loop's reader delivers the answer
                    kind, value = box.get(timeout=0.1)
                    break
                except queue.Empty:
                    continue
            try:
                kind, value = box.get_nowait()
                break
            except queue.Empty:
                self._pump(0.05)
        if kind != "ok":
            raise value
        return value

    def _pump(self, timeout: float) -> None:
        """The blocking caller's own I/O (no running loop does it): write, read, deliver, then
        wait up to ``timeout`` s for the socket."""
        with self._lock:
            sock, gen = self._sock, self._gen
            if sock is None:
                busy = False
            else:
                busy = not self._flush()
                msgs, eof = self._read()
        if sock is None:
            time.sleep(min(timeout, 0.01))  # restarting: our call has been answered UNAVAILABLE
            return
        for kind, cid, value in msgs:
            self._resolve(cid, kind, value)
        if eof:
            self._dead(gen)
            return
        if msgs:
            return
        try:
            select.select([sock], [sock] if busy else [], [], timeout)
        except (OSError, ValueError):  # closed meanwhile
            pass

    def add_model(self, key: str, model) -> None:
        self._send(("model", key, model))

    def drop_model(self, key: str) -> None:
        self._send(("drop", key))

    def _send(self, msg) -> None:
        data = _dumps(msg)
        with self._lock:
            if self._sock is None:  # restarting: the new worker gets it after every model
                if msg[0] in ("model", "drop"):
                    self._held.append(msg)
                return
            self._queue(data)
            self._kick()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stops the worker (it finishes the call it runs and writes Taichi's offline cache);
        calls still pending get UNAVAILABLE. Blocking, up to ``timeout`` s, then kill."""
        end = time.monotonic() + timeout
        with self._lock:
            self._closed = True
            sock, gen = self._sock, self._gen
            if sock is not None:
                self._queue(pickle.dumps(("stop",), PROTOCOL))
        proc = self._proc
        while sock is not None and proc.is_alive() and time.monotonic() < end:
            with self._lock:  # keep reading too: a worker blocked writing a reply would never see "stop"
                if self._sock is not sock:
                    break
                busy = not self._flush()
                msgs, eof = self._read()
            for kind, cid, value in msgs:
                self._resolve(cid, kind, value)
            if eof:
                break
            try:
                select.select([sock, proc.sentinel], [sock] if busy else [], [], min(0.1, max(end - time.monotonic(), 0)))
            except (OSError, ValueError):
                break
        proc.join(max(end - time.monotonic(), 0.0))
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        with self._lock:
            lost = list(self._pending)
            if self._sock is not None and self._gen == gen:
                self._sock = None
            else:
                sock = None
        for cid in lost:
            self._resolve(cid, "err", WireError("UNAVAILABLE", "the server is shutting down"))
        if sock is not None:
            self._unregister(sock)
