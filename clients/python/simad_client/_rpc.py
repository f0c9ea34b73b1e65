"""gRPC plumbing of the client: status -> WireError, retries with backoff, the health codec.

Nothing here knows the simad messages; ``client.py`` and ``session.py`` build on it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import grpc

from .errors import FIELD_KEY, WireError

BACKOFF_FIRST = 0.05  # s, pause before the first retry; doubles each retry
BACKOFF_MAX = 2.0  # s, cap of one pause
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def wire_error(err: grpc.RpcError) -> WireError:
    """The WireError of a failed call: status name, details and the field named in the trailers."""
    code = err.code() if callable(getattr(err, "code", None)) else None
    details = err.details() if callable(getattr(err, "details", None)) else str(err)
    trailers = err.trailing_metadata() if callable(getattr(err, "trailing_metadata", None)) else None
    field = ""
    for key, value in trailers or ():
        if key == FIELD_KEY:
            field = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    details = details or ""
    if field and details.startswith(field + ": "):  # the server repeats the field for plain gRPC users
        details = details[len(field) + 2 :]
    return WireError(code.name if code is not None else "UNKNOWN", details, field)


def backoff(attempt: int) -> float:
    """Pause before retry ``attempt`` (0-based), s: exponential, capped, jittered to 50-100 %."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2.0**attempt) * random.uniform(0.5, 1.0)


def invoke(call: Callable[[float | None], object], timeout: float | None, retries: int):
    """Runs ``call(seconds_left)`` until it succeeds, retrying only UNAVAILABLE.

    Args:
        call: makes one attempt; receives the time left of the deadline (None: no deadline).
        timeout: deadline of the whole call, retries included, s (None: none).
        retries: retries after the first attempt (0 for non-idempotent calls).

    Raises:
        WireError: the last attempt's status (immediately for any code but UNAVAILABLE).
    """
    end = None if timeout is None else time.monotonic() + timeout
    for attempt in range(retries + 1):
        left = None if end is None else max(end - time.monotonic(), 0.0)
        try:
            return call(left)
        except grpc.RpcError as err:
            failure = err
        pause = backoff(attempt)
        late = end is not None and time.monotonic() + pause >= end
        if attempt == retries or failure.code() != grpc.StatusCode.UNAVAILABLE or late:
            break
        time.sleep(pause)
    raise wire_error(failure) from None


def health_request(service: str) -> bytes:
    """Encodes grpc.health.v1.HealthCheckRequest {string service = 1} by hand."""
    data = service.encode("utf-8")
    return b"\x0a" + _varint(len(data)) + data if data else b""


def health_status(data: bytes) -> str:
    """Decodes grpc.health.v1.HealthCheckResponse {enum status = 1} to the status name."""
    status, pos = 0, 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        kind = key & 7
        if kind == 0:
            value, pos = _read_varint(data, pos)
            if key >> 3 == 1:
                status = value
        elif kind == 2:
            size, pos = _read_varint(data, pos)
            pos += size
        elif kind in (1, 5):
            pos += 8 if kind == 1 else 4
        else:
            raise WireError("INTERNAL", f"malformed health response (wire type {kind})", "health")
    return HEALTH_STATUS.get(status, f"UNKNOWN({status})")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise WireError("INTERNAL", "truncated health response", "health")
