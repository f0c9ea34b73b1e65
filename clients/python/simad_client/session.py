"""A model-predictive-control session over the bidirectional ``ControlService/Session`` stream."""

from __future__ import annotations

import queue

import grpc

from . import encode, results
from ._rpc import wire_error
from .errors import WireError
from .proto import control_pb2

_END = object()  # put on the request queue to half-close the stream


class ControlSession:
    """One control loop: a ``start`` message, then one tick and one reply per control period.

    Made by ``Client.control_session``; use it as a context manager (or ``open()`` /
    ``close()``). After each reply the server shifts its nominal controls one step (warm start).
    Not thread-safe: call ``step`` from one thread.

    Attributes (after opening, from the server's ``ready``):
        nq, nv, nu: the model's sizes. horizon: T, steps planned ahead.
    """

    def __init__(self, rpc, start: control_pb2.SessionStart, *, metadata=(), timeout: float | None = None):
        self._rpc, self._start, self._metadata, self._timeout = rpc, start, tuple(metadata), timeout
        self._requests: queue.Queue = queue.Queue()
        self._replies = None
        self._closed = False
        self._seq = 0
        self.nq = self.nv = self.nu = self.horizon = None

    def __enter__(self) -> ControlSession:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()  # keep the caller's exception; do not wait for the server

    def open(self) -> ControlSession:
        """Opens the stream, sends ``start`` and waits for ``ready``.

        Raises:
            WireError: the server's refusal (INVALID_ARGUMENT "start.<field>", NOT_FOUND
                model_id, UNAUTHENTICATED, ...), or FAILED_PRECONDITION if already opened.
        """
        if self._replies is not None or self._closed:
            raise WireError("FAILED_PRECONDITION", "the session was already opened", "")
        requests = iter(self._requests.get, _END)
        self._replies = self._rpc(requests, timeout=self._timeout, metadata=self._metadata)
        self._requests.put(control_pb2.ControlRequest(start=self._start))
        reply = self._receive(None)
        if reply.WhichOneof("body") != "ready":
            self._abort()
            raise WireError("INTERNAL", f"expected ready, got {reply.WhichOneof('body')}", "reply")
        r = reply.ready
        self.nq, self.nv, self.nu, self.horizon = r.nq, r.nv, r.nu, r.horizon
        return self

    def step(self, q, qd, controls=None) -> results.Linearization | results.FeedbackPlan:
        """Sends the measured state and blocks for the answer to this tick.

        Args:
            q: (nq,) measured configuration. qd: (nv,) measured velocity, rad/s or m/s.
            controls: optional (T, nu) nominal controls replacing the server's (e.g. the
                output of the client's own solver).

        Returns:
            A ``Linearization`` ("linearization" mode) or a ``FeedbackPlan`` ("plan" mode).

        Raises:
            WireError: FAILED_PRECONDITION if the session is not open or was closed;
                INVALID_ARGUMENT "tick.<field>"; any error that ended the stream.
        """
        if self._replies is None or self._closed:
            raise WireError("FAILED_PRECONDITION", "the session is not open (closed, or never opened)", "")
        tick = control_pb2.ControlTick(seq=self._seq + 1)
        encode.set_tensor(tick, "q", q, "tick.q")
        encode.set_tensor(tick, "qd", qd, "tick.qd")
        encode.set_tensor(tick, "controls", controls, "tick.controls")
        self._seq += 1
        self._requests.put(control_pb2.ControlRequest(tick=tick))
        return results.control_reply(self._receive(self._seq))

    def close(self) -> None:
        """Half-closes the stream and drains it; idempotent.

        Raises:
            WireError: if the server ended the stream with an error status.
        """
        if self._closed or self._replies is None:
            self._closed = True
            return
        self._finish()
        try:
            for _ in self._replies:
                pass
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                raise wire_error(err) from None

    @property
    def closed(self) -> bool:
        return self._closed

    def _receive(self, seq: int | None) -> control_pb2.ControlReply:
        """The next reply answering ``seq`` (any for None), skipping stale ones."""
        while True:
            try:
                reply = next(self._replies)
            except StopIteration:
                self._finish()
                raise WireError("FAILED_PRECONDITION", "the server ended the session", "") from None
            except grpc.RpcError as err:
                self._finish()
                raise wire_error(err) from None
            if seq is None or reply.seq == seq:
                return reply
            if reply.seq > seq:
                self._abort()
                raise WireError("INTERNAL", f"reply for tick {reply.seq} while waiting for tick {seq}", "seq")

    def _finish(self) -> None:
        self._closed = True
        self._requests.put(_END)  # also releases gRPC's request-consuming thread

    def _abort(self) -> None:
        self._finish()
        if self._replies is not None:
            self._replies.cancel()
