"""Argument checks at the engine boundary: shapes, dtypes, finiteness, ranges.

Kernels never validate; every public function calls these first and raises ``InputError``
naming the argument ("expected X, got Y").
"""

from __future__ import annotations

import numpy as np

from . import runtime
from .errors import InputError
from .model.model import JointType

MAX_BATCH = 10_000_000  # envs per call; bounded so a typo cannot allocate the machine away


def as_array(x, shape: tuple, name: str, *, finite: bool = True) -> np.ndarray:
    """``x`` as a C-contiguous array of the runtime float type with exactly ``shape``."""
    if type(x) is np.ndarray:
        a = x
    else:
        try:
            a = np.asarray(x)
        except Exception as e:  # noqa: BLE001 - any conversion failure is the caller's input
            raise InputError(name, f"cannot convert to an array: {e}") from None
    kind = a.dtype.kind
    if kind not in "biuf":  # bool, signed, unsigned, float
        if kind == "c":
            raise InputError(name, "expected real numbers, got complex")
        raise InputError(name, f"expected a numeric array, got dtype {a.dtype}")
    if a.shape != tuple(shape):
        raise InputError(name, f"expected shape {tuple(shape)}, got {a.shape}")
    dtype = runtime.real_dtype()
    if a.dtype != dtype or not a.flags.c_contiguous:
        a = np.ascontiguousarray(a, dtype=dtype)
    if finite and not np.isfinite(a).all():
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise InputError(name, f"non-finite value {a[idx]} at index {list(idx)}")
    return a


def as_batch(model, x, name: str, width: int | None = None) -> tuple[np.ndarray, bool]:
    """A (B, width) batch from (B, width) or (width,) input; ``width`` defaults to nq.

    Returns the array and whether the input was a single (1-D) row. Free-joint quaternions in
    a configuration (width == nq, name 'q*') must have a non-zero norm.
    """
    width = model.nq if width is None else width
    a = np.asarray(x) if not isinstance(x, np.ndarray) else x
    single = a.ndim == 1
    if a.ndim not in (1, 2):
        raise InputError(name, f"expected shape (B, {width}) or ({width},), got {a.shape}")
    if single:
        a = a[None, :]
    if a.shape[0] < 1 or a.shape[0] > MAX_BATCH:
        raise InputError(name, f"batch size must be in [1, {MAX_BATCH}], got {a.shape[0]}")
    a = as_array(a, (a.shape[0], width), name)
    if width == model.nq and name.startswith("q") and model.has_free_joint:
        for j in np.flatnonzero(model.jnt_type == JointType.FREE):
            qa = model.jnt_qadr[j]
            n = np.linalg.norm(a[:, qa + 3 : qa + 7], axis=1)
            bad = np.flatnonzero(n < 1e-9)
            if bad.size:
                raise InputError(f"{name}[{bad[0]}, {qa + 3}:{qa + 7}]", f"quaternion of joint '{model.jnt_names[j]}' has zero norm")
    return a, single


def check_frames(model, frame) -> tuple[np.ndarray, bool]:
    """Frame ids (int32 array) from a name, an index or a list of them; and whether one was given."""
    if isinstance(frame, (str, int, np.integer)):
        return np.array([model.frame_id(frame)], np.int32), True
    try:
        items = list(frame)
    except TypeError:
        raise InputError("frame", f"expected a frame name, index or list, got {type(frame).__name__}") from None
    if not items:
        raise InputError("frame", "empty frame list")
    return np.array([model.frame_id(f, f"frame[{k}]") for k, f in enumerate(items)], np.int32), False
