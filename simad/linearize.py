"""Discrete-time linearizations of the step map and the forward-mode JVP of a rollout.

For x = (q, qd) and the step x' = f(x, u) of ``rollout`` (same integrator, actuators and soft
limits): A = dx'/dx (2 nv x 2 nv) and B = dx'/du (2 nv x nu), in the tangent space, so a free
joint's six rows and columns are the body-frame (linear, angular) directions of
``configuration.integrate``: x (+) dx with dx = (dq_tangent, dqd).

Each point runs in one thread of one kernel launch. Semi-implicit Euler (v' = v + dt a,
q' = q (+) dt v') uses the analytic derivatives of the dynamics (``derivatives.py``: one RNEA
derivative pass, one Cholesky of M, then a = ABA's Jacobians dRNEA/dx solved against M) and the
integrator's closed-form Jacobians on the manifold. RK4 recomputes the step once, then each of
the 2 nv rows of [A | B] is one exact reverse pass of the step (``diff.step_vjp``) seeded with
a unit cotangent of x'. Both are exact; they agree to rounding (tested). The clip of u to the
control range passes derivatives inside the range (and on its bounds) and blocks them outside.
"""

import numpy as np
import taichi as ti

from .adjoint import NDOFBAR, NG, NPB, conj, integrate_env, q4
from .derivatives import _scratch, cholesky_solve_env, rnea_derivatives_env
from .diff import step_vjp
from .dynamics import _dof
from .dynamics import device as dyn_device
from .errors import InputError
from .kinematics import _FREE, _PRI, _REV, batch_mode, scratch
from .kinematics import device as kin_device
from .launch import fast_kernel
from .model.model import Model
from .rollout import (
    INTEGRATORS,
    LIMIT_DAMPING,
    LIMIT_STIFFNESS,
    _check_model,
    _positive,
    _Work,
    device,
    raise_status,
    rollout,
    stage_accel,
)
from .tmath import quat_exp, quat_mul, quat_to_mat, skew
from .validate import MAX_BATCH, as_array

A2, A3 = ti.types.ndarray(ndim=2), ti.types.ndarray(ndim=3)


@fast_kernel
@ti.kernel
def _linearize_kernel(q: ti.types.ndarray(ndim=2), v: ti.types.ndarray(ndim=2), u: ti.types.ndarray(ndim=2),
                      topo: ti.types.ndarray(ndim=2), geo: ti.types.ndarray(ndim=2), dyn: ti.types.ndarray(ndim=2),
                      dof: ti.types.ndarray(ndim=2), act: ti.types.ndarray(ndim=2), lim: ti.types.ndarray(ndim=2),
                      pose: ti.types.ndarray(ndim=3), S: ti.types.ndarray(ndim=3), G: ti.types.ndarray(ndim=3),
                      qw: ti.types.ndarray(ndim=2), vw: ti.types.ndarray(ndim=2), tw: ti.types.ndarray(ndim=2),
                      aw: ti.types.ndarray(ndim=2), q0w: ti.types.ndarray(ndim=2), v0w: ti.types.ndarray(ndim=2),
                      ks: ti.types.ndarray(ndim=3), lam: ti.types.ndarray(ndim=2), qsb: ti.types.ndarray(ndim=2),
                      vsb: ti.types.ndarray(ndim=2), qbt: ti.types.ndarray(ndim=2), vbt: ti.types.ndarray(ndim=2),
                      ub: ti.types.ndarray(ndim=2), kb: ti.types.ndarray(ndim=3), qb: ti.types.ndarray(ndim=2),
                      vb: ti.types.ndarray(ndim=2), qn: ti.types.ndarray(ndim=2), pbar: ti.types.ndarray(ndim=3),
                      dofbar: ti.types.ndarray(ndim=3), gearbar: ti.types.ndarray(ndim=2),
                      A: ti.types.ndarray(ndim=3), Bm: ti.types.ndarray(ndim=3), status: ti.types.ndarray(ndim=2),
                      dt: float, rk4: ti.i32, kl: float, dl: float, spread: ti.i32, serial: ti.template()):
    ti.loop_config(serialize=serial)
    for jb in range(q.shape[0] * spread):  # see runtime.spread
        if jb % spread != 0:
            continue
        b = jb // spread
        nq, nv, nu, nbody = q.shape[1], v.shape[1], u.shape[1], topo[0, 2]
        for k in range(nq):
            q0w[b, k] = q[b, k]
        for d in range(nv):
            v0w[b, d] = v[b, d]
        for it in range(2 * nv + 1):  # it 0 computes the next state; it = r + 1 gives row r
            r = it - 1
            for k in range(nq):
                qb[b, k] = 0.0
            for d in range(nv):
                vb[b, d] = 0.0
            if r >= nv:
                vb[b, r - nv] = 1.0
            elif r >= 0:  # the unit cotangent of tangent direction r of x', in coordinates
                for i in range(1, nbody):
                    jt, qa, va = topo[i, 1], topo[i, 2], topo[i, 3]
                    if (jt == _REV or jt == _PRI) and va == r:
                        qb[b, qa] = 1.0
                    elif jt == _FREE and va <= r and r < va + 6:
                        e = ti.Vector([0.0, 0.0, 0.0])
                        for c in ti.static(range(3)):
                            if r - va == c or r - va == 3 + c:
                                e[c] = 1.0
                        un = q4(qn, b, qa + 3)
                        if r - va < 3:  # position moves by R(quat) dv
                            p = quat_to_mat(un[0], un[1], un[2], un[3]) @ e
                            for c in ti.static(range(3)):
                                qb[b, qa + c] = p[c]
                        else:  # quat * exp(dw): d quat = quat (0, dw) / 2, pseudo-inverse 2 quat (0, e)
                            g = 2.0 * quat_mul(un / un.norm(), ti.Vector([0.0, e[0], e[1], e[2]]))
                            for c in ti.static(range(4)):
                                qb[b, qa + 3 + c] = g[c]
            for a in range(nu):
                ub[b, a] = 0.0
            step_vjp(topo, geo, dyn, dof, act, lim, pose, S, G, qw, vw, u, tw, aw, q0w, v0w, ks, lam, qsb, vsb, qbt,
                     vbt, ub, kb, qb, vb, pbar, dofbar, gearbar, b, dt, rk4, kl, dl, 0, 0, 0, 0, -1)
            if r < 0:
                row = 8
                if rk4 == 0:
                    row = 0
                integrate_env(topo, q0w, ks, row, dt, qn, b)
                continue
            # coordinates -> tangent at x: J^T q_bar
            for i in range(1, nbody):
                jt, qa, va = topo[i, 1], topo[i, 2], topo[i, 3]
                if jt == _REV or jt == _PRI:
                    A[b, r, va] = qbt[b, qa]
                elif jt == _FREE:
                    uq = q4(q0w, b, qa + 3)
                    uq = uq / uq.norm()
                    pl = quat_to_mat(uq[0], uq[1], uq[2], uq[3]).transpose() @ ti.Vector(
                        [qbt[b, qa], qbt[b, qa + 1], qbt[b, qa + 2]])
                    w = 0.5 * quat_mul(conj(uq), q4(qbt, b, qa + 3)) * q4(q0w, b, qa + 3).norm()
                    for c in ti.static(range(3)):
                        A[b, r, va + c] = pl[c]
                        A[b, r, va + 3 + c] = w[1 + c]
            bad = 0
            for d in range(nv):
                A[b, r, nv + d] = vbt[b, d]
                if ti.math.isnan(vbt[b, d]) or ti.math.isinf(vbt[b, d]):
                    bad = 1
            for a in range(nu):
                Bm[b, r, a] = ub[b, a]
            if bad:
                status[b, 0] = 1
                status[b, 1] = 4


@ti.func
def _right_jacobian(phi):
    """Jr of SO(3): exp(phi + d) = exp(phi) exp(Jr(phi) d) to first order."""
    th = phi.norm()
    K = skew(phi)
    c1, c2 = 0.5 - th * th / 24.0, 1.0 / 6.0 - th * th / 120.0  # series below 1e-4 rad
    if th > 1e-4:
        c1 = (1.0 - ti.cos(th)) / (th * th)
        c2 = (th - ti.sin(th)) / (th * th * th)
    return ti.Matrix.identity(float, 3) - c1 * K + c2 * (K @ K)


@ti.func
def _force_jacobians(qw: ti.template(), uw: ti.template(), act: ti.template(), lim: ti.template(),
                     X: ti.template(), b, nv, kl, dl):
    """Adds d tau_applied / d(q, qd, u) to X = [. | . | .] (nv x (2 nv + nu)): the actuators'
    gear * gain times the clip's derivative (1 inside the range and on its bounds, 0 outside, as
    the reverse pass), the servos' bias slopes gear^2 bias[1], gear^2 bias[2], and the soft
    limits' -kl, -dl outside the range (``rollout.generalized_forces``)."""
    for a in range(uw.shape[1]):
        u = uw[b, a]
        pas = 1.0
        if act[a, 2] > 0.5 and (u < act[a, 3] or u > act[a, 4]):
            pas = 0.0
        d, g = ti.cast(act[a, 0], ti.i32), act[a, 1]
        X[b, d, 2 * nv + a] += pas * g * act[a, 5]
        X[b, d, d] += g * g * act[a, 7]  # a 1-dof joint: its q tangent is its dof
        X[b, d, nv + d] += g * g * act[a, 8]
    for d in range(nv):
        if lim[d, 0] > 0.5:
            x = qw[b, ti.cast(lim[d, 3], ti.i32)]
            if x > lim[d, 2] or x < lim[d, 1]:
                X[b, d, d] += -kl
                X[b, d, nv + d] += -dl


@ti.func
def _euler_assemble(topo: ti.template(), vw: ti.template(), aw: ti.template(), X: ti.template(), A: ti.template(),
                    Bm: ti.template(), b, dt, nu):
    """A, B of v' = v + dt a, q' = q (+) dt v' from X = [da/dq | da/dqd | da/du]; returns 1 on a
    non-finite entry. Free joints: with d = dt v' = (dp, dw) and Rd = exp(dw), the tangent of
    q' = (p + R dp, R exp(dw)) moves by Rd^T (eta_p - dp x eta_w + d(dp)) and
    Rd^T eta_w + Jr(dw) d(dw) when q moves by eta and d by d(d)."""
    nbody, nv = topo[0, 2], topo[0, 3]
    nc = 2 * nv + nu
    bad = 0
    for r in range(nv):  # rows of qd' = qd + dt a
        for c in range(nc):
            x = dt * X[b, r, c]
            if c == nv + r:
                x += 1.0
            if c < 2 * nv:
                A[b, nv + r, c] = x
            else:
                Bm[b, nv + r, c - 2 * nv] = x
            if ti.math.isnan(x) or ti.math.isinf(x):
                bad = 1
    for i in range(1, nbody):  # rows of q'
        jt, va = topo[i, 1], topo[i, 3]
        if jt == _REV or jt == _PRI:
            for c in range(nc):
                x = dt * (dt * X[b, va, c])
                if c == va or c == nv + va:
                    x += 1.0 if c == va else dt
                if c < 2 * nv:
                    A[b, va, c] = x
                else:
                    Bm[b, va, c - 2 * nv] = x
        elif jt == _FREE:
            dp = ti.Vector([vw[b, va + k] + dt * aw[b, va + k] for k in ti.static(range(3))]) * dt
            dw = ti.Vector([vw[b, va + 3 + k] + dt * aw[b, va + 3 + k] for k in ti.static(range(3))]) * dt
            e = quat_exp(dw)
            RdT = quat_to_mat(e[0], e[1], e[2], e[3]).transpose()
            Jr = _right_jacobian(dw)
            P = skew(dp)
            for c in range(nc):
                # d(dp), d(dw) along column c: dt times the rows of qd'
                ddp = ti.Vector([dt * (dt * X[b, va + k, c] + (1.0 if c == nv + va + k else 0.0))
                                 for k in ti.static(range(3))])
                ddw = ti.Vector([dt * (dt * X[b, va + 3 + k, c] + (1.0 if c == nv + va + 3 + k else 0.0))
                                 for k in ti.static(range(3))])
                ep = ti.Vector([1.0 if c == va + k else 0.0 for k in ti.static(range(3))])
                ew = ti.Vector([1.0 if c == va + 3 + k else 0.0 for k in ti.static(range(3))])
                rp = RdT @ (ep - P @ ew + ddp)
                rw = RdT @ ew + Jr @ ddw
                for k in ti.static(range(3)):
                    if c < 2 * nv:
                        A[b, va + k, c] = rp[k]
                        A[b, va + 3 + k, c] = rw[k]
                    else:
                        Bm[b, va + k, c - 2 * nv] = rp[k]
                        Bm[b, va + 3 + k, c - 2 * nv] = rw[k]
    return bad


@ti.real_func
def _euler_point_rf(q: A2, v: A2, u: A2, tw: A2, aw: A2, topo: A2, geo: A2, dyn: A2, dof: A2, act: A2, lim: A2,
                    pose: A3, S: A3, D: A3, E: A3, Tq: A3, Tv: A3, M: A3, b: ti.i32, kl: float, dl: float):
    """aw <- qdd at point b (no contact), then dRNEA/dq, dRNEA/dqd and M there. The acceleration
    is inlined here and the derivatives chained, so that the Euler kernel calls one real
    function: Taichi 1.7 keys the offline cache of a callable calling two or more distinct real
    functions differently in every process (see ``derivatives``)."""
    stage_accel(q, v, u, tw, aw, topo, geo, dyn, dof, act, lim, pose, S, b, kl, dl, 0)
    rnea_derivatives_env(q, v, aw, topo, geo, dyn, dof, pose, S, D, E, Tq, Tv, M, b, 1)


@fast_kernel
@ti.kernel
def _linearize_euler_kernel(q: A2, v: A2, u: A2, topo: A2, geo: A2, dyn: A2, dof: A2, act: A2, lim: A2, pose: A3,
                            S: A3, D: A3, E: A3, Tq: A3, Tv: A3, M: A3, X: A3, tw: A2, aw: A2, A: A3, Bm: A3,
                            status: A2, dt: float, kl: float, dl: float, spread: ti.i32, serial: ti.template()):
    """A, B of one semi-implicit Euler step at every point b (one thread each)."""
    ti.loop_config(serialize=serial)
    for jb in range(q.shape[0] * spread):  # see runtime.spread
        if jb % spread != 0:
            continue
        b = jb // spread
        nv, nu = topo[0, 3], u.shape[1]
        _euler_point_rf(q, v, u, tw, aw, topo, geo, dyn, dof, act, lim, pose, S, D, E, Tq, Tv, M, b, kl, dl)
        for r in range(nv):
            for c in range(nv):
                X[b, r, c] = -Tq[b, r, c]
                X[b, r, nv + c] = -Tv[b, r, c]
            for a in range(nu):
                X[b, r, 2 * nv + a] = 0.0
        _force_jacobians(q, u, act, lim, X, b, nv, kl, dl)
        bad = cholesky_solve_env(M, X, b, nv, 2 * nv + nu)
        bad += _euler_assemble(topo, v, aw, X, A, Bm, b, dt, nu)
        if bad:
            status[b, 0] = 1
            status[b, 1] = 4


def linearize_euler(model: Model, qp, vp, up, dt: float, kl: float, dl: float):
    """A (N, 2 nv, 2 nv), B (N, 2 nv, nu_pad) and the status of the semi-implicit Euler step at
    N validated points (``linearize``'s fast path)."""
    N, nv, dtype = qp.shape[0], max(model.nv, 1), qp.dtype
    nu = up.shape[1]
    k, d, c = kin_device(model), dyn_device(model), device(model)
    pose, S, D, E, Tq, Tv, M = _scratch(model, N, dtype)
    X = scratch((N, nv, 2 * nv + nu), dtype, "linearize.X")
    tw, aw = scratch((N, nv), dtype, "linearize.tw"), scratch((N, nv), dtype, "linearize.aw")
    A = np.empty((N, 2 * nv, 2 * nv), dtype)  # every entry is written
    Bm = np.empty((N, 2 * nv, nu), dtype)
    status = np.zeros((N, 2), np.int32)
    _linearize_euler_kernel(qp, vp, up, k["topo"], k["geo"], d["dyn"], _dof(d), c["act"], c["lim"], pose, S, D, E, Tq,
                            Tv, M, X, tw, aw, A, Bm, status, dt, kl, dl, *batch_mode(N))
    return A, Bm, status


def _points(model, x, width, name):
    a = np.asarray(x)
    if a.ndim < 1 or a.shape[-1] != width:
        raise InputError(name, f"expected shape (..., {width}), got {a.shape}")
    lead = a.shape[:-1]
    N = int(np.prod(lead)) if lead else 1
    if N < 1 or N > MAX_BATCH:
        raise InputError(name, f"expected 1 to {MAX_BATCH} points, got {N}")
    return as_array(a.reshape(N, width), (N, width), name), lead


def linearize(model: Model, q, qd, u, dt: float, integrator: str = "semi_implicit_euler", *,
              limit_stiffness: float = LIMIT_STIFFNESS, limit_damping: float = LIMIT_DAMPING):
    """A = dx'/dx and B = dx'/du of one step at every given point, exactly (no finite differences).

    Args:
        q: (..., nq) configurations; qd: (..., nv); u: (..., nu) controls. The leading
            dimensions (e.g. (B, T) for B trajectories of T steps) are the same for all three.
        dt, integrator, limit_*: as ``rollout``.

    Returns:
        A: (..., 2 nv, 2 nv) and B: (..., 2 nv, nu), rows the tangent of x' = (q', qd'), columns
        the tangent of x = (q, qd) (free joints: body-frame linear then angular) and u.
    """
    _check_model(model)
    dt = _positive(dt, "dt")
    if integrator not in INTEGRATORS:
        raise InputError("integrator", f"expected one of {sorted(INTEGRATORS)}, got {integrator!r}")
    qp, lead = _points(model, q, model.nq, "q")
    vp, lead_v = _points(model, qd, model.nv, "qd")
    if model.nu:
        up, lead_u = _points(model, u, model.nu, "u")
    else:
        lead_u = np.asarray(u).shape[:-1]
        up = np.zeros((qp.shape[0], 1), qp.dtype)
    for lv, nm in ((lead_v, "qd"), (lead_u, "u")):
        if lv != lead:
            raise InputError(nm, f"expected leading dimensions {lead} like q, got {lv}")
    for j in (np.flatnonzero(model.jnt_type == 3) if model.has_free_joint else ()):
        qa = model.jnt_qadr[j]
        if np.any(np.linalg.norm(qp[:, qa + 3 : qa + 7], axis=1) < 1e-9):
            raise InputError("q", f"quaternion of joint '{model.jnt_names[j]}' has zero norm")
    kl, dl = float(limit_stiffness), float(limit_damping)
    if INTEGRATORS[integrator] == 0:  # semi-implicit Euler: analytic derivatives
        A, Bm, status = linearize_euler(model, qp, vp, up, dt, kl, dl)
    else:
        A, Bm, status = _reverse_passes(model, qp, vp, up, dt, INTEGRATORS[integrator], kl, dl)
    raise_status(status, "linearization")
    Bm = Bm[:, :, : model.nu]
    return A.reshape(lead + A.shape[1:]), Bm.reshape(lead + Bm.shape[1:])


def _reverse_passes(model: Model, qp, vp, up, dt: float, rk4: int, kl: float, dl: float):
    """A, B (nu padded) and the status at N validated points by 2 nv exact reverse passes of the
    step each (any integrator; RK4's path, and the reference the analytic path is tested on)."""
    N, nv, dtype = qp.shape[0], model.nv, qp.dtype
    w = _Work(model, N, dtype)
    kd, dd, cd = kin_device(model), dyn_device(model), device(model)
    G = np.zeros((N, model.nbody, NG), dtype)
    lam, vsb, vbt, vb = (np.zeros((N, nv), dtype) for _ in range(4))
    qsb, qbt, qb, qn = (np.zeros((N, model.nq), dtype) for _ in range(4))
    ub = np.zeros((N, up.shape[1]), dtype)
    kb = np.zeros((N, 9, nv), dtype)
    pbar = np.zeros((N, model.nbody, NPB), dtype)
    dofbar = np.zeros((N, nv, NDOFBAR), dtype)
    gearbar = np.zeros((N, up.shape[1]), dtype)
    A = np.zeros((N, 2 * nv, 2 * nv), dtype)
    Bm = np.zeros((N, 2 * nv, up.shape[1]), dtype)
    status = np.zeros((N, 2), np.int32)
    _linearize_kernel(qp, vp, up, kd["topo"], kd["geo"], dd["dyn"], _dof(dd), cd["act"], cd["lim"], w.pose, w.S, G,
                      w.qw, w.vw, w.tw, w.aw, w.q0w, w.v0w, w.ks, lam, qsb, vsb, qbt, vbt, ub, kb, qb, vb, qn, pbar,
                      dofbar, gearbar, A, Bm, status, dt, rk4, kl, dl, *batch_mode(N))
    return A, Bm, status


def rollout_jvp(model: Model, q0, qd0, controls, dt: float, dq0=None, dqd0=None, dcontrols=None,
                integrator: str = "semi_implicit_euler", *, limit_stiffness: float = LIMIT_STIFFNESS,
                limit_damping: float = LIMIT_DAMPING):
    """Forward-mode product of an open-loop rollout: how the trajectory moves when the initial
    state and the controls move along (dq0, dqd0, dcontrols).

    Args:
        model, q0, qd0, controls, dt, integrator, limit_*: as ``rollout``.
        dq0: (B, nv) tangent of q0 (free joints: body-frame linear, angular); None: zero.
        dqd0: (B, nv); dcontrols: (B, T, nu); None: zero.

    Returns:
        (trajectory, dq (B, T+1, nv) tangents of the configurations, dqd (B, T+1, nv)), exact:
        dx_{t+1} = A_t dx_t + B_t du_t with the step linearizations along the trajectory.
    """
    tr = rollout(model, q0, qd0, controls, dt, integrator, limit_stiffness=limit_stiffness, limit_damping=limit_damping)
    Bn, T1, _ = tr.q.shape
    T, nv = T1 - 1, model.nv
    dx = np.zeros((Bn, 2 * nv))
    for x, cols, name in ((dq0, slice(0, nv), "dq0"), (dqd0, slice(nv, 2 * nv), "dqd0")):
        if x is not None:  # (B, nv), or (nv,) when B == 1
            a = np.asarray(x)
            dx[:, cols] = as_array(a.reshape(Bn, nv) if a.size == Bn * nv else a, (Bn, nv), name)
    du = np.zeros((Bn, T, model.nu))
    if dcontrols is not None:
        du = as_array(dcontrols, (Bn, T, model.nu), "dcontrols")
    A, Bm = linearize(model, tr.q[:, :T], tr.qd[:, :T], tr.u, dt, integrator, limit_stiffness=limit_stiffness,
                      limit_damping=limit_damping)
    out = np.zeros((Bn, T1, 2 * nv))
    out[:, 0] = dx
    for t in range(T):
        dx = np.einsum("bij,bj->bi", A[:, t], dx) + np.einsum("bij,bj->bi", Bm[:, t], du[:, t])
        out[:, t + 1] = dx
    return tr, out[:, :, :nv], out[:, :, nv:]
