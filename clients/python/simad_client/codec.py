"""numpy <-> simad.v1.Tensor, shared by the server and the client (one wire codec).

Row-major, little-endian raw bytes. Decoding validates dtype, shape and byte count and names
the field on failure; it never trusts the sender's sizes.
"""

from __future__ import annotations

import numpy as np

from .errors import WireError
from .proto import tensor_pb2

DType = tensor_pb2.DType
_TO_NP = {
    DType.FLOAT64: np.dtype("<f8"),
    DType.FLOAT32: np.dtype("<f4"),
    DType.INT32: np.dtype("<i4"),
    DType.INT64: np.dtype("<i8"),
    DType.BOOL: np.dtype("?"),
}
_FROM_NP = {v.newbyteorder("=") if v.kind != "b" else v: k for k, v in _TO_NP.items()}
MAX_DIMS = 8
MAX_DIM = 2**40  # per dimension, even for arrays with zero elements (numpy refuses larger shapes)


def to_tensor(a, out: tensor_pb2.Tensor | None = None) -> tensor_pb2.Tensor:
    """Encodes a numpy array (or anything ``np.asarray`` takes) as a Tensor."""
    arr = np.asarray(a)
    if arr.dtype.kind == "f" and arr.dtype.itemsize not in (4, 8):
        arr = arr.astype(np.float64)
    elif arr.dtype.kind in "iu":
        arr = arr.astype(np.int64) if arr.dtype.itemsize > 4 or arr.dtype.kind == "u" else arr.astype(np.int32)
    code = _FROM_NP.get(arr.dtype.newbyteorder("=") if arr.dtype.kind != "b" else arr.dtype)
    if code is None:
        raise TypeError(f"cannot encode dtype {arr.dtype} (float32/64, int32/64, bool)")
    t = out if out is not None else tensor_pb2.Tensor()
    t.dtype = code
    del t.shape[:]
    t.shape.extend(int(s) for s in arr.shape)
    t.data = np.ascontiguousarray(arr, dtype=_TO_NP[code]).tobytes()
    return t


def is_set(t: tensor_pb2.Tensor | None) -> bool:
    """A Tensor field counts as present if it has a dtype (proto3 sub-messages default to empty)."""
    return t is not None and t.dtype != DType.DTYPE_UNSPECIFIED


def from_tensor(t: tensor_pb2.Tensor, field: str, *, max_elements: int | None = None) -> np.ndarray:
    """Decodes a Tensor to a read-only numpy array (native byte order), validating it.

    Raises:
        WireError: INVALID_ARGUMENT naming ``field`` for an unknown dtype, negative or too many
            dimensions, or a byte count that does not match the shape; RESOURCE_EXHAUSTED when
            the element count exceeds ``max_elements``.
    """
    dt = _TO_NP.get(t.dtype)
    if dt is None:
        raise WireError("INVALID_ARGUMENT", f"unknown or unspecified dtype {t.dtype}", field)
    shape = tuple(t.shape)
    if len(shape) > MAX_DIMS or any(s < 0 or s > MAX_DIM for s in shape):
        raise WireError("INVALID_ARGUMENT", f"expected at most {MAX_DIMS} dimensions, each in [0, 2**40], got shape "
                        f"{shape}", field)
    n, span = 1, 1
    for s in shape:
        n *= s
        span *= max(s, 1)
    if span > MAX_DIM:  # also for zero-element shapes: numpy cannot even describe (2**40, 2**23, 0)
        raise WireError("INVALID_ARGUMENT", f"shape {shape} is too large to describe (product of the non-zero "
                        f"dimensions over 2**40)", field)
    if max_elements is not None and n > max_elements:
        raise WireError("RESOURCE_EXHAUSTED", f"{n} elements exceed the limit of {max_elements}", field)
    if len(t.data) != n * dt.itemsize:
        raise WireError(
            "INVALID_ARGUMENT", f"shape {shape} of {dt.name} needs {n * dt.itemsize} bytes, got {len(t.data)}", field
        )
    arr = np.frombuffer(t.data, dtype=dt).reshape(shape)
    return arr.astype(dt.newbyteorder("="), copy=False) if dt.kind != "b" else arr
