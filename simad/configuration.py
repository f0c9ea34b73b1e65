"""Configurations on the manifold: integrate, difference, random and neutral configurations.

Revolute and prismatic coordinates are Euclidean. A free joint's coordinates are
(x, y, z, qw, qx, qy, qz) and its velocity (v, w) is in the body frame, so
``integrate`` moves the position by R(quat) v dt and the orientation by quat * exp(w dt / 2);
``difference`` is its inverse: integrate(q0, difference(q0, q1)) == q1.
"""

from __future__ import annotations

import numpy as np

from .model import rotations as rot
from .model.model import JointType, Model
from .validate import as_batch


def _free_joints(model: Model):
    for j in np.flatnonzero(model.jnt_type == JointType.FREE):
        yield int(model.jnt_qadr[j]), int(model.jnt_vadr[j])


def _euclid_maps(model: Model):
    """Index arrays (q indices, v indices) of the one-dof joints."""
    m = model.jnt_type != JointType.FREE
    return model.jnt_qadr[m], model.jnt_vadr[m]


def integrate(model: Model, q, v, dt: float = 1.0) -> np.ndarray:
    """q (+) v dt on the configuration manifold. q: (B, nq) or (nq,); v: (B, nv) or (nv,)."""
    qb, single = as_batch(model, q, "q")
    vb, _ = as_batch(model, v, "v", model.nv)
    if vb.shape[0] != qb.shape[0]:
        vb = np.broadcast_to(vb, (qb.shape[0], model.nv))
    out = qb.copy()
    qi, vi = _euclid_maps(model)
    out[:, qi] += vb[:, vi] * dt
    for qa, va in _free_joints(model):
        quat = qb[:, qa + 3 : qa + 7] / np.linalg.norm(qb[:, qa + 3 : qa + 7], axis=1, keepdims=True)
        out[:, qa : qa + 3] += np.einsum("bij,bj->bi", rot.quat_to_mat(quat), vb[:, va : va + 3]) * dt
        nq = rot.quat_mul(quat, rot.quat_exp(vb[:, va + 3 : va + 6] * dt))
        out[:, qa + 3 : qa + 7] = nq / np.linalg.norm(nq, axis=1, keepdims=True)
    return out[0] if single else out


def difference(model: Model, q0, q1) -> np.ndarray:
    """The velocity v (B, nv) with integrate(q0, v, 1) == q1."""
    a, single = as_batch(model, q0, "q0")
    b, _ = as_batch(model, q1, "q1")
    v = np.zeros((max(a.shape[0], b.shape[0]), model.nv), a.dtype)
    qi, vi = _euclid_maps(model)
    v[:, vi] = b[:, qi] - a[:, qi]
    for qa, va in _free_joints(model):
        qa0 = a[:, qa + 3 : qa + 7] / np.linalg.norm(a[:, qa + 3 : qa + 7], axis=1, keepdims=True)
        qa1 = b[:, qa + 3 : qa + 7] / np.linalg.norm(b[:, qa + 3 : qa + 7], axis=1, keepdims=True)
        R0 = rot.quat_to_mat(qa0)
        v[:, va : va + 3] = np.einsum("bji,bj->bi", R0, b[:, qa : qa + 3] - a[:, qa : qa + 3])
        conj = qa0 * np.array([1.0, -1, -1, -1])
        v[:, va + 3 : va + 6] = rot.quat_log(rot.quat_mul(conj, qa1))
    return v[0] if single else v


def neutral(model: Model, batch: int | None = None) -> np.ndarray:
    """The model's default configuration qpos0, optionally tiled to (batch, nq)."""
    return model.qpos0.copy() if batch is None else np.tile(model.qpos0, (batch, 1))


def random_configuration(model: Model, batch: int, rng=None, *, unlimited_range: float = np.pi) -> np.ndarray:
    """Uniform samples within joint limits (unlimited joints in +-unlimited_range, free joints
    at a position in [-1, 1]^3 with a uniformly random orientation). Shape (batch, nq)."""
    rng = np.random.default_rng(rng)
    q = np.tile(model.qpos0, (batch, 1)).astype(np.float64)
    for j in range(model.njnt):
        qa = model.jnt_qadr[j]
        if model.jnt_type[j] == JointType.FREE:
            q[:, qa : qa + 3] = rng.uniform(-1, 1, (batch, 3))
            quat = rng.normal(size=(batch, 4))
            q[:, qa + 3 : qa + 7] = quat / np.linalg.norm(quat, axis=1, keepdims=True)
        else:
            lo, hi = model.jnt_range[j] if model.jnt_limited[j] else (-unlimited_range, unlimited_range)
            q[:, qa] = rng.uniform(lo, hi, batch)
    return q


def tangent_to_coords_gradient(model: Model, q: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Maps a gradient along the tangent directions (B, nv) to one in the coordinates (B, nq).

    A free joint's position gradient is R(quat) g_v (integrate moves the position by R v); its
    quaternion gradient is 2 quat * (0, g_w) / |quat|, the chain rule through the normalisation
    and the body-frame exponential map (orthogonal to quat: moving along quat changes nothing).
    """
    out = np.zeros((q.shape[0], model.nq), g.dtype)
    qi, vi = _euclid_maps(model)
    out[:, qi] = g[:, vi]
    for qa, va in _free_joints(model):
        quat = q[:, qa + 3 : qa + 7]
        n = np.linalg.norm(quat, axis=1, keepdims=True)
        out[:, qa : qa + 3] = np.einsum("bij,bj->bi", rot.quat_to_mat(quat / n), g[:, va : va + 3])
        pure = np.concatenate([np.zeros((q.shape[0], 1)), g[:, va + 3 : va + 6]], 1)
        out[:, qa + 3 : qa + 7] = 2.0 * rot.quat_mul(quat / n, pure) / n
    return out
