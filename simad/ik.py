"""Batched inverse kinematics: damped least squares (Levenberg-Marquardt) within joint limits.

Each env runs its own iteration inside one kernel launch: error e = (p* - p, log(R* R^T)) in
world axes, step dq = J^T (J J^T + lambda I)^-1 e, q <- clip(integrate(q, dq), limits); a
step that does not reduce |e| is rejected and lambda grows, an accepted one shrinks lambda.
Envs that fail are restarted from seeded random configurations within the limits. A target
that no restart reaches is reported as failed with its residual: never returned as solved.
"""

from dataclasses import dataclass

import numpy as np
import taichi as ti

from .configuration import random_configuration
from .errors import InputError
from .kinematics import _FREE, batch_mode, device, frame_jacobian_into, frame_poses
from .launch import fast_kernel
from .model.model import Model
from .tmath import POS, ROT, mat3, quat_exp, quat_mul, quat_to_mat, rot_log, vec3
from .validate import as_array, as_batch, check_frames


@dataclass
class IKResult:
    """Result of ``inverse_kinematics`` (batch axis first).

    Attributes:
        q: (B, nq) solutions (the best configuration found when not successful).
        success: (B,) bool, both residuals below their tolerances.
        pos_residual: (B,) m, |p* - p| at q.
        rot_residual: (B,) rad, angle of R* R^T at q (0 when no target rotation was given).
        iterations: (B,) total iterations spent, over all restarts.
    """

    q: np.ndarray
    success: np.ndarray
    pos_residual: np.ndarray
    rot_residual: np.ndarray
    iterations: np.ndarray


@ti.func
def _ik_error(topo: ti.template(), pose: ti.template(), target: ti.template(), b, f, use_rot):
    """6-vector error of frame f against target[b] = (R* row-major 9, p* 3)."""
    e_p = vec3(target, b, 0, POS) - vec3(pose, b, f, POS)
    e_r = ti.Vector([0.0, 0.0, 0.0])
    if use_rot:
        e_r = rot_log(mat3(target, b, 0, ROT) @ mat3(pose, b, f, ROT).transpose())
    return ti.Vector([e_p[0], e_p[1], e_p[2], e_r[0], e_r[1], e_r[2]])


@ti.func
def _cholesky_solve6(A, y):
    """Solves A x = y for a symmetric positive definite 6x6 A (unrolled Cholesky)."""
    L = ti.Matrix.zero(float, 6, 6)
    for i in ti.static(range(6)):
        for j in ti.static(range(i + 1)):
            s = A[i, j]
            for k in ti.static(range(j)):
                s -= L[i, k] * L[j, k]
            if ti.static(i == j):
                L[i, i] = ti.sqrt(ti.max(s, 1e-300))
            else:
                L[i, j] = s / L[j, j]
    z = ti.Vector.zero(float, 6)
    for i in ti.static(range(6)):
        s = y[i]
        for k in ti.static(range(i)):
            s -= L[i, k] * z[k]
        z[i] = s / L[i, i]
    x = ti.Vector.zero(float, 6)
    for i in ti.static(range(5, -1, -1)):
        s = z[i]
        for k in ti.static(range(i + 1, 6)):
            s -= L[k, i] * x[k]
        x[i] = s / L[i, i]
    return x


@ti.func
def _step(q: ti.template(), qt: ti.template(), topo: ti.template(), qlim: ti.template(), J: ti.template(), b, y, scale):
    """qt[b] = clip(integrate(q[b], scale * J^T y), limits)."""
    nbody, nq = topo[0, 2], q.shape[1]
    for k in range(nq):
        qt[b, k] = q[b, k]
    for i in range(1, nbody):
        jt, qa, va = topo[i, 1], topo[i, 2], topo[i, 3]
        if jt == _FREE:
            dv = ti.Vector.zero(float, 6)
            for c in ti.static(range(6)):
                for r in ti.static(range(6)):
                    dv[c] += J[b, 0, r, va + c] * y[r] * scale
            quat = ti.Vector([q[b, qa + 3], q[b, qa + 4], q[b, qa + 5], q[b, qa + 6]])
            quat = quat / quat.norm()
            # position moves by R(quat) v, orientation by quat * exp(w / 2) (configuration.integrate)
            R = quat_to_mat(quat[0], quat[1], quat[2], quat[3])
            dp = R @ ti.Vector([dv[0], dv[1], dv[2]])
            nquat = quat_mul(quat, quat_exp(ti.Vector([dv[3], dv[4], dv[5]])))
            nquat = nquat / nquat.norm()
            for c in ti.static(range(3)):
                qt[b, qa + c] = q[b, qa + c] + dp[c]
            for c in ti.static(range(4)):
                qt[b, qa + 3 + c] = nquat[c]
        elif jt != 0:
            d = 0.0
            for r in ti.static(range(6)):
                d += J[b, 0, r, va] * y[r]
            qt[b, qa] = ti.min(ti.max(q[b, qa] + scale * d, qlim[qa, 0]), qlim[qa, 1])


@ti.func
def _dls(J: ti.template(), b, lam, e):
    """y = (J J^T + lam I)^-1 e for J = J[b, 0] (6 x nv)."""
    A = ti.Matrix.zero(float, 6, 6)
    for c in range(J.shape[3]):
        col = ti.Vector([J[b, 0, r, c] for r in ti.static(range(6))])
        A += col.outer_product(col)
    for r in ti.static(range(6)):
        A[r, r] += lam + 1e-12
    return _cholesky_solve6(A, e)


@ti.func
def _freeze_blocked(q: ti.template(), topo: ti.template(), qlim: ti.template(), J: ti.template(), b, y):
    """Zeroes the Jacobian columns of 1-dof joints at a limit whose step J^T y points outward."""
    n = 0
    for i in range(1, topo[0, 2]):
        jt, qa, va = topo[i, 1], topo[i, 2], topo[i, 3]
        if jt == 1 or jt == 2:
            d = 0.0
            for r in ti.static(range(6)):
                d += J[b, 0, r, va] * y[r]
            if (q[b, qa] >= qlim[qa, 1] and d > 0.0) or (q[b, qa] <= qlim[qa, 0] and d < 0.0):
                n += 1
                for r in ti.static(range(6)):
                    J[b, 0, r, va] = 0.0
    return n


@fast_kernel
@ti.kernel
def _ik_kernel(
    q: ti.types.ndarray(ndim=2),
    qt: ti.types.ndarray(ndim=2),
    topo: ti.types.ndarray(ndim=2),
    geo: ti.types.ndarray(ndim=2),
    qlim: ti.types.ndarray(ndim=2),
    target: ti.types.ndarray(ndim=3),
    pose: ti.types.ndarray(ndim=3),
    J: ti.types.ndarray(ndim=4),
    opts: ti.types.ndarray(ndim=1),
    iopts: ti.types.ndarray(ndim=1),
    out: ti.types.ndarray(ndim=2),
    spread: ti.i32, serial: ti.template(),
):
    """opts = (tol_pos, tol_rot, lambda0, max_step); iopts = (frame, max_iters, use_rot).
    out[b] = (pos residual, rot residual, iterations, success)."""
    ti.loop_config(serialize=serial)
    for jb in range(q.shape[0] * spread):  # see runtime.spread
        if jb % spread != 0:
            continue
        b = jb // spread
        f, max_iters, use_rot = iopts[0], iopts[1], iopts[2]
        tol_p, tol_r, lam, max_step = opts[0], opts[1], opts[2], opts[3]
        frame_poses(q, topo, geo, pose, b)
        e = _ik_error(topo, pose, target, b, f, use_rot)
        cost = e.dot(e)
        it = 0
        done = 0
        while it < max_iters and done == 0:
            ep = ti.Vector([e[0], e[1], e[2]]).norm()
            er = ti.Vector([e[3], e[4], e[5]]).norm()
            if ep < tol_p and er < tol_r:
                done = 1
            else:
                it += 1
                for r, c in ti.ndrange(6, J.shape[3]):
                    J[b, 0, r, c] = 0.0
                frame_jacobian_into(topo, geo, pose, J, b, 0, f)
                if not use_rot:
                    for r, c in ti.ndrange((3, 6), J.shape[3]):
                        J[b, 0, r, c] = 0.0
                y = _dls(J, b, lam, e)
                # active set: a joint at a limit that the step pushes further out is frozen
                # (its column zeroed) and the step solved again, so LM does not crawl along
                # a clamped direction
                if _freeze_blocked(q, topo, qlim, J, b, y) > 0:
                    y = _dls(J, b, lam, e)
                # bound the joint-space step (trust region) so a far target cannot fling q
                nrm = 0.0
                for c in range(J.shape[3]):
                    d = 0.0
                    for r in ti.static(range(6)):
                        d += J[b, 0, r, c] * y[r]
                    nrm += d * d
                scale = ti.min(1.0, max_step / ti.max(ti.sqrt(nrm), 1e-300))
                _step(q, qt, topo, qlim, J, b, y, scale)
                frame_poses(qt, topo, geo, pose, b)
                et = _ik_error(topo, pose, target, b, f, use_rot)
                ct = et.dot(et)
                if ct < cost:
                    for k in range(q.shape[1]):
                        q[b, k] = qt[b, k]
                    e, cost = et, ct
                    lam = ti.max(lam * 0.25, 1e-12)
                else:
                    lam *= 8.0
                    frame_poses(q, topo, geo, pose, b)
                    if lam > 1e8:
                        done = 2  # stuck: a local minimum or the limits
        out[b, 0] = ti.Vector([e[0], e[1], e[2]]).norm()
        out[b, 1] = ti.Vector([e[3], e[4], e[5]]).norm()
        out[b, 2] = it
        out[b, 3] = 1.0 if done == 1 else 0.0


def _defaults(dtype):
    return (1e-9, 1e-9) if dtype == np.float64 else (2e-5, 2e-4)


def inverse_kinematics(
    model: Model,
    frame,
    target_pos,
    target_rot=None,
    q_init=None,
    *,
    tol_pos: float | None = None,
    tol_rot: float | None = None,
    max_iters: int = 200,
    restarts: int = 20,
    damping: float = 1e-3,
    max_step: float = 0.5,
    seed: int = 0,
) -> IKResult:
    """Solves for configurations that put ``frame`` at the targets, one per env.

    Args:
        frame: frame name or index.
        target_pos: (B, 3) m, world frame.
        target_rot: (B, 3, 3) rotation matrices, or None for position-only IK.
        q_init: (B, nq) starting configurations (default: the model's qpos0, clipped to limits).
        tol_pos, tol_rot: success tolerances in m and rad (default 1e-9 in f64, 2e-5 / 2e-4 in f32).
        max_iters: iterations per attempt. restarts: extra attempts from random configurations
            for envs that failed (seeded by ``seed``: results are reproducible).
        damping: initial Levenberg-Marquardt damping. max_step: joint-space step bound (rad or m).

    Returns:
        IKResult; ``success`` is False (with the residual) when no attempt reached the target.
    """
    tp = np.asarray(target_pos)
    if tp.ndim != 2 or tp.shape[1:] != (3,):
        raise InputError("target_pos", f"expected shape (B, 3), got {tp.shape}")
    B = tp.shape[0]
    tp = as_array(tp, (B, 3), "target_pos")
    sel, one = check_frames(model, frame)
    if not one:
        raise InputError("frame", "inverse_kinematics takes one frame")
    use_rot = target_rot is not None
    target = np.zeros((B, 1, 12), tp.dtype)
    target[:, 0, POS : POS + 3] = tp
    if use_rot:
        tr = as_array(target_rot, (B, 3, 3), "target_rot")
        err = np.abs(np.einsum("bij,bkj->bik", tr, tr) - np.eye(3)).max(axis=(1, 2))
        if np.any(err > 1e-6 if tr.dtype == np.float64 else 1e-3) or np.any(np.linalg.det(tr) < 0):
            raise InputError("target_rot", f"env {int(np.argmax(err))} is not a rotation matrix")
        target[:, 0, ROT : ROT + 9] = tr.reshape(B, 9)
    for name, v, lo in (("max_iters", max_iters, 1), ("restarts", restarts, 0)):
        if int(v) != v or not lo <= v <= 100_000:
            raise InputError(name, f"expected an integer in [{lo}, 100000], got {v}")
    for name, v in (("damping", damping), ("max_step", max_step)):
        if not np.isfinite(v) or v <= 0:
            raise InputError(name, f"must be positive and finite, got {v}")
    d = device(model)
    dtol_p, dtol_r = _defaults(tp.dtype)
    tol_p = dtol_p if tol_pos is None else float(tol_pos)
    tol_r = dtol_r if tol_rot is None else float(tol_rot)
    if not (tol_p > 0 and tol_r > 0):
        raise InputError("tol_pos" if not tol_p > 0 else "tol_rot", "must be positive")
    if q_init is None:
        q = np.tile(np.clip(model.qpos0, d["qlim"][:, 0], d["qlim"][:, 1]), (B, 1)).astype(tp.dtype)
    else:
        q, _ = as_batch(model, q_init, "q_init")
        if q.shape[0] != B:
            raise InputError("q_init", f"expected {B} rows (one per target), got {q.shape[0]}")
        q = np.clip(q, d["qlim"][:, 0], d["qlim"][:, 1]).astype(tp.dtype)
    opts = np.array([tol_p, tol_r, damping, max_step], tp.dtype)
    iopts = np.array([sel[0], max_iters, int(use_rot)], np.int32)
    out = _solve(model, d, q, target, opts, iopts)
    iters = out[:, 2].astype(np.int64)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError("seed", f"expected an integer >= 0, got {seed!r}")
    rng = np.random.default_rng(seed)
    for _ in range(restarts):
        bad = np.flatnonzero(out[:, 3] < 0.5)
        if bad.size == 0:
            break
        qr = random_configuration(model, bad.size, rng).astype(tp.dtype)
        outr = _solve(model, d, qr, target[bad], opts, iopts)
        iters[bad] += outr[:, 2].astype(np.int64)
        better = (outr[:, 3] > 0.5) | (outr[:, 0] + outr[:, 1] < out[bad, 0] + out[bad, 1])
        q[bad[better]] = qr[better]
        out[bad[better]] = outr[better]
    return IKResult(q=q, success=out[:, 3] > 0.5, pos_residual=out[:, 0], rot_residual=out[:, 1], iterations=iters)


def _solve(model, d, q, target, opts, iopts):
    """One LM attempt for every env of the batch (q is updated in place)."""
    B = q.shape[0]
    qt = np.empty_like(q)
    pose = np.empty((B, model.nframe, 12), q.dtype)
    J = np.zeros((B, 1, 6, max(model.nv, 1)), q.dtype)
    out = np.zeros((B, 4), q.dtype)
    _ik_kernel(q, qt, d["topo"], d["geo"], d["qlim"], np.ascontiguousarray(target), pose, J, opts, iopts, out, *batch_mode(B))
    return out
