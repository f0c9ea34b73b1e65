"""Built-in losses for ``value_and_grad``: quadratic costs on states, frame positions and controls.

    L = sum_{t=0}^{T-1} l(x_t, u_t) + l_T(x_T)
    l   = 1/2 sum_i wq_i (q_t,i - qref_t,i)^2 + 1/2 sum_i wqd_i (qd_t,i - qdref_t,i)^2
          + 1/2 sum_a wu_a (u_t,a - uref_t,a)^2 + 1/2 sum_f wf_f |p_f(q_t) - pref_t,f|^2
        + 1/2 sum_{f in obstacle_frames} sum_k wo_k max(0, r_k - |p_f(q_t) - c_k|)^2
    l_T = the same state and frame terms with the terminal weights (and the obstacle term)

q is compared coordinate by coordinate (for a free joint: position and quaternion numbers).
u is the applied control (closed loop: k + K dx), before clipping. p_f is the world position of
frame f (a body or a site), m. Every weight defaults to zero; references default to zero.
The obstacle term keeps frame origins out of spheres (centre c_k, radius r_k: inflate r_k by
the safety margin and by the link's own radius); it is zero, with zero gradient, outside every
sphere and quadratic inside (continuous first derivative at the surface). At a frame exactly at
a centre the direction is undefined and the gradient is taken as zero.
The cost is evaluated per env; ``value_and_grad`` differentiates the sum over envs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .kinematics import forward_kinematics, forward_kinematics_vjp
from .model.model import Model
from .validate import as_array


@dataclass(frozen=True)
class QuadraticCost:
    """Weights and references of a quadratic trajectory cost (see the module docstring).

    Attributes:
        q_weight, terminal_q_weight: (nq,) running and terminal weights on q.
        q_ref: (nq,), (T+1, nq) or (B, T+1, nq) target configurations.
        qd_weight, terminal_qd_weight: (nv,). qd_ref: (nv,), (T+1, nv) or (B, T+1, nv), rad/s, m/s.
        u_weight: (nu,). u_ref: (nu,), (T, nu) or (B, T, nu).
        frames: frame names or indices (bodies or sites) whose positions are costed.
        frame_weight, terminal_frame_weight: (nsel,). frame_ref: (nsel, 3), (T+1, nsel, 3) or
            (B, T+1, nsel, 3), m, world frame.
        obstacle_frames: frame names or indices kept out of the obstacles.
        obstacles: (K, 4) spheres: centre x, y, z and radius, m, world frame.
        obstacle_weight: scalar or (K,) weights of the penetration penalty.
    """

    q_weight: object = None
    q_ref: object = None
    terminal_q_weight: object = None
    qd_weight: object = None
    qd_ref: object = None
    terminal_qd_weight: object = None
    u_weight: object = None
    u_ref: object = None
    frames: tuple = ()
    frame_weight: object = None
    frame_ref: object = None
    terminal_frame_weight: object = None
    obstacle_frames: tuple = ()
    obstacles: object = None
    obstacle_weight: object = None

    def bind(self, model: Model, B: int, T: int) -> _Bound:
        return _Bound(self, model, B, T)


def _weight(x, n, name):
    if x is None:
        return np.zeros(n)
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        a = np.full(n, float(a))
    a = as_array(a, (n,), name).astype(np.float64)
    if np.any(a < 0):
        raise InputError(name, "weights must be >= 0")
    return a


def _ref(x, B, T1, tail, name):
    """A reference as an array broadcastable to (B, T1, *tail)."""
    if x is None:
        return np.zeros((1, 1) + tail)
    a = np.asarray(x, dtype=np.float64)
    for shape in (tail, (T1,) + tail, (B, T1) + tail):
        if a.shape == shape:
            a = as_array(a, shape, name).astype(np.float64)
            return a.reshape((1,) * (2 + len(tail) - a.ndim) + shape)
    raise InputError(name, f"expected shape {tail}, {(T1,) + tail} or {(B, T1) + tail}, got {a.shape}")


class _Bound:
    """A cost validated against one model, batch and horizon."""

    def __init__(self, c: QuadraticCost, model: Model, B: int, T: int):
        self.model, self.B, self.T = model, B, T
        nq, nv, nu = model.nq, model.nv, model.nu
        self.wq = _weight(c.q_weight, nq, "cost.q_weight")
        self.wqT = _weight(c.terminal_q_weight, nq, "cost.terminal_q_weight")
        self.wv = _weight(c.qd_weight, nv, "cost.qd_weight")
        self.wvT = _weight(c.terminal_qd_weight, nv, "cost.terminal_qd_weight")
        self.wu = _weight(c.u_weight, nu, "cost.u_weight")
        self.qref = _ref(c.q_ref, B, T + 1, (nq,), "cost.q_ref")
        self.vref = _ref(c.qd_ref, B, T + 1, (nv,), "cost.qd_ref")
        self.uref = _ref(c.u_ref, B, T, (nu,), "cost.u_ref")
        frames = (c.frames,) if isinstance(c.frames, (str, int)) else tuple(c.frames)
        self.sel = np.array([model.frame_id(f, f"cost.frames[{i}]") for i, f in enumerate(frames)], np.int64)
        ns = self.sel.size
        self.wf = _weight(c.frame_weight, ns, "cost.frame_weight")
        self.wfT = _weight(c.terminal_frame_weight, ns, "cost.terminal_frame_weight")
        self.fref = _ref(c.frame_ref, B, T + 1, (ns, 3), "cost.frame_ref")
        of = (c.obstacle_frames,) if isinstance(c.obstacle_frames, (str, int)) else tuple(c.obstacle_frames)
        self.osel = np.array([model.frame_id(f, f"cost.obstacle_frames[{i}]") for i, f in enumerate(of)], np.int64)
        if c.obstacles is None:
            self.obs = np.zeros((0, 4))
        else:
            o = np.asarray(c.obstacles, dtype=np.float64)
            self.obs = as_array(o, (o.shape[0] if o.ndim == 2 else -1, 4), "cost.obstacles").astype(np.float64)
            if np.any(self.obs[:, 3] <= 0):
                raise InputError("cost.obstacles", "radii (column 3) must be > 0")
        self.wo = _weight(c.obstacle_weight, self.obs.shape[0], "cost.obstacle_weight")
        if self.obs.shape[0] and not self.osel.size:
            raise InputError("cost.obstacle_frames", "obstacles need the frames to keep out of them")

    @staticmethod
    def _rows(ref, t0, n1):
        return ref if ref.shape[1] == 1 else ref[:, t0 : t0 + n1]

    def _obstacles(self, p, count):
        """Penalty value per env and its cotangent on the positions p (B, n1, nf, 3)."""
        d = p[:, :, :, None, :] - self.obs[:, :3]  # (B, n1, nf, K, 3)
        dist = np.linalg.norm(d, axis=-1)
        pen = np.maximum(self.obs[:, 3] - dist, 0.0)  # (B, n1, nf, K)
        w = self.wo * count[:, :, :, None]  # count (1, n1, 1) -> (1, n1, 1, 1)
        val = 0.5 * np.sum(w * pen**2, axis=(1, 2, 3))
        safe = np.where(dist > 0, dist, 1.0)
        grad = -(w * pen / safe)[..., None] * np.where(dist[..., None] > 0, d, 0.0)
        return val, grad.sum(axis=3)

    def clearance(self, q: np.ndarray) -> np.ndarray:
        """Smallest |p_f - c_k| - r_k over the obstacle frames and obstacles, per row of q (N, nq)."""
        pos, _ = forward_kinematics(self.model, q)
        d = np.linalg.norm(pos[:, self.osel, None, :] - self.obs[:, :3], axis=-1) - self.obs[:, 3]
        return d.min(axis=(1, 2))

    def segment(self, t0: int, qs, vs, us, nup: int):
        """Cotangents (cq, cv, cu) and the value per env of the states t0 .. t0 + n and the
        controls of steps t0 .. t0 + n - 1. Row 0 counts only when t0 == 0 (an earlier state
        belongs to the previous segment), matching the reverse kernel."""
        B, n1, _ = qs.shape
        n = n1 - 1
        m = self.model
        term = (np.arange(t0, t0 + n1) == self.T)[None, :, None]
        count = np.ones((1, n1, 1))
        if t0 > 0:
            count[:, 0] = 0.0
        wq = np.where(term, self.wqT, self.wq) * count
        wv = np.where(term, self.wvT, self.wv) * count
        dq = qs - self._rows(self.qref, t0, n1)
        dv = vs - self._rows(self.vref, t0, n1)
        cq = wq * dq
        cv = wv * dv
        val = 0.5 * (np.sum(cq * dq, axis=(1, 2)) + np.sum(cv * dv, axis=(1, 2)))
        cu = np.zeros((B, n, nup))
        if m.nu:
            du = us[:, :, : m.nu] - self._rows(self.uref, t0, n)
            cu[:, :, : m.nu] = self.wu * du
            val += 0.5 * np.sum(cu[:, :, : m.nu] * du, axis=(1, 2))
        tracked = self.sel.size and (np.any(self.wf) or np.any(self.wfT))
        avoided = self.osel.size and self.obs.shape[0] and np.any(self.wo)
        if tracked or avoided:
            qf = qs.reshape(B * n1, m.nq)
            pos, _ = forward_kinematics(m, qf)
            pos = pos.reshape(B, n1, m.nframe, 3)
            pos_bar = np.zeros((B, n1, m.nframe, 3))
            if tracked:
                wf = np.where(term, self.wfT, self.wf) * count  # (1, n1, nsel)
                d = pos[:, :, self.sel] - self._rows(self.fref, t0, n1)
                pb = wf[..., None] * d
                val += 0.5 * np.sum(pb * d, axis=(1, 2, 3))
                np.add.at(pos_bar, (slice(None), slice(None), self.sel), pb)
            if avoided:
                val_o, pb_o = self._obstacles(pos[:, :, self.osel], count)
                val += val_o
                np.add.at(pos_bar, (slice(None), slice(None), self.osel), pb_o)
            g = forward_kinematics_vjp(m, qf, pos_bar.reshape(B * n1, m.nframe, 3), space="coords")
            cq = cq + g.reshape(B, n1, m.nq)
        dt = qs.dtype
        return (np.ascontiguousarray(cq, dt), np.ascontiguousarray(cv, dt), np.ascontiguousarray(cu, dt), val)
