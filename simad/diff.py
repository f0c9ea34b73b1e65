"""Reverse mode through whole rollouts: ``rollout_vjp``, ``value_and_grad`` and checkpointing.

The reverse kernel walks a segment of the trajectory backwards, one env per thread. For each
step it reads the step's forward quantities (the ABA factorisation, the RK4 stages) from the
segment's stage tape (``_stage_tape``; without contact and within the memory budget) or
recomputes them from the stored start state, then pulls the cotangent of x_{t+1} back through the
integrator, the forward dynamics (``adjoint.aba_solve`` + ``adjoint.rnea_adjoint``), the
actuators and soft limits, and the feedback law, accumulating the gradients of the controls,
gains and physical parameters on the way. Nothing here uses Taichi's autodiff.

Memory: the forward pass keeps a state every K steps (checkpoints); the reverse pass
recomputes one segment of K steps at a time. Recomputation repeats the very same floating-
point operations, so a checkpointed gradient equals the full-tape gradient bit for bit (the
tape holds the forward kernel's values; a recomputation, inlined elsewhere, agrees to ~1e-13).
K is chosen from the caller's ``memory_budget`` (or given as ``checkpoint_every``).
"""

from dataclasses import dataclass, field

import numpy as np
import taichi as ti

from .adjoint import NDOFBAR, NG, NPB, aba_solve, conj, integrate_vjp, normalize_vjp, q4, quat_log_vjp, rnea_adjoint
from .contact_forces import NGB, param_grads
from .dynamics import _dof, rnea_forces
from .dynamics import device as dyn_device
from .errors import InputError
from .kinematics import _FREE, _PRI, _REV, batch_mode, scratch
from .kinematics import device as kin_device
from .launch import fast_kernel
from .model.model import Model
from .policy import MLPPolicy, policy_vjp
from .rollout import (
    LIMIT_DAMPING,
    LIMIT_STIFFNESS,
    _Work,
    controls_env,
    device,
    no_tape,
    prepare,
    raise_status,
    rk4_stage_state,
    run_forward,
    stage_accel,
    stage_accel_rf,
    tape_load,
    tape_width,
)
from .tmath import quat_mul, quat_to_mat

A2, A3 = ti.types.ndarray(ndim=2), ti.types.ndarray(ndim=3)
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of trajectory storage a gradient call may keep


@ti.func
def accel_vjp(qw: ti.template(), vw: ti.template(), uw: ti.template(), aw: ti.template(), y: ti.template(),
              lam: ti.template(), qsb: ti.template(), vsb: ti.template(), ub: ti.template(), topo: ti.template(),
              geo: ti.template(), dyn: ti.template(), dof: ti.template(), act: ti.template(), lim: ti.template(),
              pose: ti.template(), S: ti.template(), G: ti.template(), pbar: ti.template(), dofbar: ti.template(),
              gearbar: ti.template(), b, kl, dl, cg: ti.template(), cgb: ti.template()):
    """Pulls y (the cotangent of a = ABA(q, qd, tau(u, q, qd))) back into qsb, vsb, ub and the
    parameter cotangents. Needs what ``stage_accel`` at (qw, vw) left in pose and S (the poses,
    V, C, A and the ABA factorisation): nothing of the forward pass is recomputed.

    The clip of u to the control range passes the gradient inside the closed range and
    blocks it outside (the derivative of the clip; at the bound itself it passes)."""
    nv = topo[0, 3]
    aba_solve(topo, geo, pose, S, y, lam, b)
    rnea_forces(topo, dyn, pose, S, b, cg)  # the poses, V, C, A are the ABA's at (q, qd, a)
    rnea_adjoint(qw, vw, aw, lam, topo, geo, dyn, dof, pose, S, G, qsb, vsb, pbar, dofbar, b, -1.0, cg, cgb)
    for a in range(uw.shape[1]):
        d = ti.cast(act[a, 0], ti.i32)
        u = uw[b, a]
        uc = u
        pas = 1.0
        if act[a, 2] > 0.5:
            uc = ti.min(ti.max(u, act[a, 3]), act[a, 4])
            if u < act[a, 3] or u > act[a, 4]:
                pas = 0.0
        g, qa = act[a, 1], ti.cast(act[a, 9], ti.i32)
        x, xd = qw[b, qa], vw[b, d]
        # tau_d += g (gain uc + b0 + b1 g x + b2 g xd)
        gearbar[b, a] += (act[a, 5] * uc + act[a, 6] + 2.0 * g * (act[a, 7] * x + act[a, 8] * xd)) * lam[b, d]
        ub[b, a] += pas * g * act[a, 5] * lam[b, d]
        qsb[b, qa] += g * g * act[a, 7] * lam[b, d]
        vsb[b, d] += g * g * act[a, 8] * lam[b, d]
    for d in range(nv):
        if lim[d, 0] > 0.5:
            qa = ti.cast(lim[d, 3], ti.i32)
            x = qw[b, qa]
            if x > lim[d, 2] or x < lim[d, 1]:
                qsb[b, qa] += -kl * lam[b, d]
                vsb[b, d] += -dl * lam[b, d]


@ti.real_func
def accel_vjp_rf(qw: A2, vw: A2, uw: A2, aw: A2, y: A2, lam: A2, qsb: A2, vsb: A2, ub: A2, topo: A2, geo: A2, dyn: A2,
                 dof: A2, act: A2, lim: A2, pose: A3, S: A3, G: A3, pbar: A3, dofbar: A3, gearbar: A2, b: ti.i32,
                 kl: float, dl: float, cg: A2, cgb: A3):
    """``accel_vjp`` with contact (cg a contact table, possibly without pairs), compiled once as
    a separate function shared by the reverse and linearization kernels (see
    ``rollout.stage_accel_rf``)."""
    accel_vjp(qw, vw, uw, aw, y, lam, qsb, vsb, ub, topo, geo, dyn, dof, act, lim, pose, S, G, pbar, dofbar, gearbar,
              b, kl, dl, cg, cgb)


@ti.real_func
def accel_free_rf(mode: ti.i32, qw: A2, vw: A2, uw: A2, tw: A2, aw: A2, lam: A2, qsb: A2, vsb: A2, ub: A2,
                  topo: A2, geo: A2, dyn: A2, dof: A2, act: A2, lim: A2, pose: A3, S: A3, G: A3, pbar: A3,
                  dofbar: A3, gearbar: A2, b: ti.i32, kl: float, dl: float):
    """Without contact, one real function for both directions of a stage: mode 0 is
    ``rollout.stage_accel`` (tw the torque work row, aw <- a), mode 1 is ``accel_vjp`` with
    tw as the cotangent y of a. One function, not two: in Taichi 1.7 the offline-cache key of a
    callable that calls two or more distinct real functions differs from process to process,
    so the reverse and RK4 linearization kernels compiled again in about half of all
    processes (see ``derivatives``); calling the same one twice keeps the key stable
    (measured)."""
    if mode == 0:
        stage_accel(qw, vw, uw, tw, aw, topo, geo, dyn, dof, act, lim, pose, S, b, kl, dl, 0)
    else:
        accel_vjp(qw, vw, uw, aw, tw, lam, qsb, vsb, ub, topo, geo, dyn, dof, act, lim, pose, S, G, pbar, dofbar,
                  gearbar, b, kl, dl, 0, 0)


@ti.func
def feedback_vjp(topo: ti.template(), K: ti.template(), xq: ti.template(), qw: ti.template(), dx: ti.template(),
                 ub: ti.template(), Kb: ti.template(), dxb: ti.template(), qb: ti.template(), vb: ti.template(), b,
                 tt):
    """Reverse of u = k + K (x (-) xref): K_bar, and the state cotangents into qb, vb."""
    nbody, nv, nu = topo[0, 2], topo[0, 3], ub.shape[1]
    for k in range(2 * nv):
        acc = 0.0
        for a in range(nu):
            acc += K[b, tt, a, k] * ub[b, a]
            Kb[b, tt, a, k] = ub[b, a] * dx[b, k]
        dxb[b, k] = acc
    for d in range(nv):
        vb[b, d] += dxb[b, nv + d]
    for i in range(1, nbody):
        jt, qa, va = topo[i, 1], topo[i, 2], topo[i, 3]
        if jt == _REV or jt == _PRI:
            qb[b, qa] += dxb[b, va]
        elif jt == _FREE:
            ur = ti.Vector([xq[b, tt, qa + 3 + k] for k in ti.static(range(4))])
            urn = ur / ur.norm()
            Rr = quat_to_mat(ur[0], ur[1], ur[2], ur[3])
            pb = Rr @ ti.Vector([dxb[b, va], dxb[b, va + 1], dxb[b, va + 2]])
            u = q4(qw, b, qa + 3)
            r = quat_mul(conj(urn), u / u.norm())
            rb = quat_log_vjp(r, ti.Vector([dxb[b, va + 3], dxb[b, va + 4], dxb[b, va + 5]]))
            gb = normalize_vjp(u, quat_mul(urn, rb))
            for k in ti.static(range(3)):
                qb[b, qa + k] += pb[k]
            for k in ti.static(range(4)):
                qb[b, qa + 3 + k] += gb[k]


@ti.func
def step_vjp(topo: ti.template(), geo: ti.template(), dyn: ti.template(), dof: ti.template(), act: ti.template(),
             lim: ti.template(), pose: ti.template(), S: ti.template(), G: ti.template(), qw: ti.template(),
             vw: ti.template(), uw: ti.template(), tw: ti.template(), aw: ti.template(), q0w: ti.template(),
             v0w: ti.template(), ks: ti.template(), lam: ti.template(), qsb: ti.template(), vsb: ti.template(),
             qbt: ti.template(), vbt: ti.template(), ub: ti.template(), kb: ti.template(), qb: ti.template(),
             vb: ti.template(), pbar: ti.template(), dofbar: ti.template(), gearbar: ti.template(), b, dt, rk4, kl,
             dl, cg: ti.template(), cgb: ti.template(), St: ti.template(), At: ti.template(), tape_row):
    """Reverse of one step from the state (q0w, v0w) under the control uw: the cotangent (qb, vb)
    of the next state -> qbt, vbt (of the state, overwritten) and ub (of u, added to), plus the
    parameter cotangents. Leaves the step's stage slopes in ks (row 0 = qd' for Euler, row 8 the
    RK4 combination), so the next state is integrate(q0w, ks[row], dt).

    With tape_row >= 0 (St, At: the forward pass's stage tape, ``rollout.tape_store``; contact-free
    only; else St = At = 0), the stages are read from the tape instead of being recomputed."""
    nq, nv = q0w.shape[1], topo[0, 3]
    nst = 1 + 3 * rk4
    # iterations 0 .. nst-1 recompute the stages forward, nst .. 2 nst - 1 reverse them, last
    # first (one call site of the ABA and of its adjoint; they are real functions anyway)
    for it in range(2 * nst):
        s = it
        if it >= nst:
            s = 2 * nst - 1 - it
        if it == nst:
            _final_vjp(topo, q0w, v0w, ks, kb, qb, vb, qbt, vbt, b, dt, rk4)
        if it != nst:  # the first reverse iteration is the last stage, still in pose and S
            if s > 0:
                rk4_stage_state(topo, q0w, v0w, ks, qw, vw, b, s, dt)
            else:
                for k in range(nq):
                    qw[b, k] = q0w[b, k]
                for d in range(nv):
                    vw[b, d] = v0w[b, d]
            if ti.static(isinstance(cg, int)):
                if tape_row < 0:
                    accel_free_rf(0, qw, vw, uw, tw, aw, lam, qsb, vsb, ub, topo, geo, dyn, dof, act, lim, pose, S, G,
                                  pbar, dofbar, gearbar, b, kl, dl)
            else:
                stage_accel_rf(qw, vw, uw, tw, aw, topo, geo, dyn, dof, act, lim, pose, S, b, kl, dl, cg)
        if ti.static(not isinstance(St, int)):
            if tape_row >= 0:  # the forward iterations need only a; the reverse ones the whole stage
                tape_load(S, pose, aw, St, At, b, tape_row + s, topo[0, 2], nv, it >= nst)
        if it < nst:
            for d in range(nv):
                ks[b, s, d] = vw[b, d]
                ks[b, 4 + s, d] = aw[b, d]
        else:
            for k in range(nq):
                qsb[b, k] = 0.0
            for d in range(nv):
                tw[b, d] = kb[b, 4 + s, d]
                vsb[b, d] = kb[b, s, d]
            if ti.static(isinstance(cg, int)):
                accel_free_rf(1, qw, vw, uw, tw, aw, lam, qsb, vsb, ub, topo, geo, dyn, dof, act, lim, pose, S, G,
                              pbar, dofbar, gearbar, b, kl, dl)
            else:
                accel_vjp_rf(qw, vw, uw, aw, tw, lam, qsb, vsb, ub, topo, geo, dyn, dof, act, lim, pose, S, G, pbar,
                             dofbar, gearbar, b, kl, dl, cg, cgb)
            for d in range(nv):
                vbt[b, d] += vsb[b, d]
            if s == 0:
                for k in range(nq):
                    qbt[b, k] += qsb[b, k]
            else:
                c = 0.5
                if s == 3:
                    c = 1.0
                for d in range(nv):
                    kb[b, 4 + s - 1, d] += c * dt * vsb[b, d]
                integrate_vjp(topo, q0w, ks, s - 1, c * dt, qsb, qbt, kb, b)


@ti.func
def _final_vjp(topo: ti.template(), q0w: ti.template(), v0w: ti.template(), ks: ti.template(), kb: ti.template(),
               qb: ti.template(), vb: ti.template(), qbt: ti.template(), vbt: ti.template(), b, dt, rk4):
    """Reverse of the step's last line (Euler: qd' = qd + dt a, q' = q (+) dt qd'; RK4: the
    weighted sum of the stages): (qb, vb) -> qbt, vbt and the stage-slope cotangents kb."""
    nq, nv = q0w.shape[1], topo[0, 3]
    for k in range(nq):
        qbt[b, k] = 0.0
    for d in range(nv):
        vbt[b, d] = 0.0
        for r in range(9):
            kb[b, r, d] = 0.0
    row = 8
    if rk4 == 0:
        row = 0
        for d in range(nv):
            ks[b, 0, d] = v0w[b, d] + dt * ks[b, 4, d]
    else:
        for d in range(nv):
            ks[b, 8, d] = (ks[b, 0, d] + 2.0 * ks[b, 1, d] + 2.0 * ks[b, 2, d] + ks[b, 3, d]) / 6.0
    integrate_vjp(topo, q0w, ks, row, dt, qb, qbt, kb, b)
    for d in range(nv):
        vbt[b, d] += vb[b, d]
        if rk4 == 0:
            vn = kb[b, 0, d] + vb[b, d]  # total cotangent of qd'
            vbt[b, d] += kb[b, 0, d]
            kb[b, 4, d] = dt * vn
            kb[b, 0, d] = 0.0
        else:
            for s in ti.static(range(4)):
                wgt = 1.0 if s == 0 or s == 3 else 2.0
                kb[b, s, d] += wgt / 6.0 * kb[b, 8, d]
                kb[b, 4 + s, d] += dt * wgt / 6.0 * vb[b, d]


@ti.func
def _carry(src: ti.template(), cot: ti.template(), dst: ti.template(), b, t, own):
    """dst[b] = src[b] (+ cot[b, t] when own); returns 1 if any entry is NaN or inf."""
    bad = 0
    for k in range(src.shape[1]):
        x = src[b, k]
        if own:
            x += cot[b, t, k]
        dst[b, k] = x
        if ti.math.isnan(x) or ti.math.isinf(x):
            bad = 1
    return bad


@fast_kernel
@ti.kernel
def _reverse_kernel(qs: ti.types.ndarray(ndim=3), vs: ti.types.ndarray(ndim=3), ff: ti.types.ndarray(ndim=3),
                    K: ti.types.ndarray(ndim=4), xq: ti.types.ndarray(ndim=3), xv: ti.types.ndarray(ndim=3),
                    pol: ti.types.ndarray(ndim=2), th: ti.types.ndarray(ndim=1), hw: ti.types.ndarray(ndim=2),
                    thb: ti.types.ndarray(ndim=2), cq: ti.types.ndarray(ndim=3), cv: ti.types.ndarray(ndim=3),
                    cu: ti.types.ndarray(ndim=3),
                    topo: ti.types.ndarray(ndim=2), geo: ti.types.ndarray(ndim=2), dyn: ti.types.ndarray(ndim=2),
                    dof: ti.types.ndarray(ndim=2), act: ti.types.ndarray(ndim=2), lim: ti.types.ndarray(ndim=2),
                    pose: ti.types.ndarray(ndim=3), S: ti.types.ndarray(ndim=3), G: ti.types.ndarray(ndim=3),
                    qw: ti.types.ndarray(ndim=2), vw: ti.types.ndarray(ndim=2), uw: ti.types.ndarray(ndim=2),
                    tw: ti.types.ndarray(ndim=2), aw: ti.types.ndarray(ndim=2), q0w: ti.types.ndarray(ndim=2),
                    v0w: ti.types.ndarray(ndim=2), dx: ti.types.ndarray(ndim=2), ks: ti.types.ndarray(ndim=3),
                    lam: ti.types.ndarray(ndim=2), qsb: ti.types.ndarray(ndim=2), vsb: ti.types.ndarray(ndim=2),
                    qbt: ti.types.ndarray(ndim=2), vbt: ti.types.ndarray(ndim=2), ub: ti.types.ndarray(ndim=2),
                    dxb: ti.types.ndarray(ndim=2), kb: ti.types.ndarray(ndim=3), qb: ti.types.ndarray(ndim=2),
                    vb: ti.types.ndarray(ndim=2), ffb: ti.types.ndarray(ndim=3), Kb: ti.types.ndarray(ndim=4),
                    pbar: ti.types.ndarray(ndim=3), dofbar: ti.types.ndarray(ndim=3),
                    gearbar: ti.types.ndarray(ndim=2), status: ti.types.ndarray(ndim=2), t0: ti.i32, n: ti.i32,
                    dt: float, rk4: ti.i32, closed: ti.i32, add_first: ti.i32, kl: float, dl: float,
                    cg: ti.types.ndarray(ndim=2), cgb: ti.types.ndarray(ndim=3), St: ti.types.ndarray(ndim=4),
                    At: ti.types.ndarray(ndim=3), taped: ti.i32, contact: ti.template(), spread: ti.i32, serial: ti.template()):
    """Steps t0 + n - 1 ... t0 of a segment whose states are qs, vs[:, 0..n]. (qb, vb) carry the
    cotangent of the segment's last state in (without cq, cv[:, n], added here) and of its first
    state out (with cq, cv[:, 0] only when add_first). With ``taped``, the stages come from the
    segment's forward tape St, At instead of being recomputed."""
    ti.loop_config(serialize=serial)
    for jb in range(qs.shape[0] * spread):  # see runtime.spread
        if jb % spread != 0:
            continue
        b = jb // spread
        nq, nv, nu = qs.shape[2], vs.shape[2], ub.shape[1]
        for k in range(nq):
            qb[b, k] += cq[b, n, k]
        for d in range(nv):
            vb[b, d] += cv[b, n, d]
        for tr in range(n):
            t = n - 1 - tr
            tt = t0 + t
            if status[b, 0] == 0:
                for k in range(nq):
                    q0w[b, k] = qs[b, t, k]
                for d in range(nv):
                    v0w[b, d] = vs[b, t, d]
                controls_env(topo, ff, K, xq, xv, pol, th, hw, q0w, v0w, uw, dx, b, tt, closed)
                for a in range(nu):
                    ub[b, a] = cu[b, t, a]
                trow = -1
                if taped:
                    trow = t * (1 + 3 * rk4)
                step_vjp(topo, geo, dyn, dof, act, lim, pose, S, G, qw, vw, uw, tw, aw, q0w, v0w, ks, lam, qsb, vsb,
                         qbt, vbt, ub, kb, qb, vb, pbar, dofbar, gearbar, b, dt, rk4, kl, dl,
                         ti.static(cg if contact else 0), ti.static(cgb if contact else 0), St, At, trow)
                # the controls
                for a in range(nu):
                    ffb[b, tt, a] = ub[b, a]
                if closed == 1:
                    feedback_vjp(topo, K, xq, q0w, dx, ub, Kb, dxb, qbt, vbt, b, tt)
                elif closed == 2:
                    policy_vjp(topo, pol, th, q0w, hw, ub, thb, qbt, vbt, b)
                own = t > 0 or add_first  # a segment's first state belongs to the previous one
                bad = _carry(qbt, cq, qb, b, t, own) + _carry(vbt, cv, vb, b, t, own)
                if bad:
                    status[b, 0] = tt + 1
                    status[b, 1] = 4


# ---------------------------------------------------------------------------------------------
# Python side
# ---------------------------------------------------------------------------------------------
@dataclass
class Gradients:
    """Gradients of a scalar (the loss, or <cotangents, trajectory>) with respect to the inputs.

    Attributes:
        q0: (B, nq) w.r.t. the initial configurations (coordinates; a free joint's quaternion
            gradient is orthogonal to the quaternion, i.e. taken through its normalisation).
        qd0: (B, nv) w.r.t. the initial velocities.
        controls: (B, T, nu) w.r.t. the controls (the feedforward k_t in closed loop).
        gains: (B, T, nu, 2 nv) w.r.t. the feedback gains, or None in open loop.
        params: {name: array shaped like the Model field}, summed over the batch (the batch
            shares one model). Parameters that play no part (e.g. friction without contacts)
            get zeros.
        loss: (B,) the loss per env (``value_and_grad``), else None.
        norm: global L2 norm of all gradients before clipping. clipped: whether they were scaled
            down to ``clip_norm``.
        checkpoint_every: K, the segment length used (T when the full trajectory fit).
        quality: contact gradients only: a ``simad.GradientQuality`` report, else None.
        policy: (P,) w.r.t. the ``MLPPolicy`` weights, summed over the envs, or None.
    """

    q0: np.ndarray
    qd0: np.ndarray
    controls: np.ndarray
    gains: np.ndarray | None
    params: dict = field(default_factory=dict)
    loss: np.ndarray | None = None
    norm: float = 0.0
    clipped: bool = False
    checkpoint_every: int = 0
    quality: object | None = None
    policy: np.ndarray | None = None


def _segment_bytes(B, nq, nv, nu, isz):
    per_state = B * (nq + nv) * isz
    per_step = B * (2 * (nq + nv) + 2 * nu) * isz
    return per_state, per_step


def choose_segment(T, B, nq, nv, nu, isz, memory_budget=None, checkpoint_every=None) -> int:
    """The segment length K: T when the whole trajectory fits ``memory_budget``, else the longest
    K whose checkpoints ((T / K + 1) states) plus one segment (K steps) fit."""
    if checkpoint_every is not None:
        K = int(checkpoint_every)
        if K < 1:
            raise InputError("checkpoint_every", f"expected an integer >= 1, got {checkpoint_every}")
        return min(K, T)
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
    if not np.isfinite(budget) or budget <= 0:
        raise InputError("memory_budget", f"expected a positive number of bytes, got {memory_budget}")
    ps, pt = _segment_bytes(B, nq, nv, nu, isz)

    def mem(K):
        return (-(-T // K) + 1) * ps + (K + 1) * pt

    if mem(T) <= budget:
        return T
    kopt = max(1, int(np.sqrt(T * ps / pt)))
    if mem(kopt) > budget:
        raise InputError("memory_budget", f"{int(budget)} bytes cannot hold the checkpoints of B={B} x T={T}: "
                                          f"at least {mem(kopt)} bytes are needed")
    lo, hi = kopt, T  # mem grows with K above kopt: the largest K that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if mem(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


TAPE_STAGES = True  # False: the reverse pass always recomputes the stages (tests compare both)


def tape_bytes(model: Model, B: int, K: int, rk4: int, isz: int) -> int:
    """Bytes of the stage tape of a K-step segment (see ``_stage_tape``)."""
    return B * K * (1 + 3 * rk4) * (model.nbody * tape_width(model) + max(model.nv, 1)) * isz


def _stage_tape(model: Model, inp, B: int, T: int, K: int, dtype, memory_budget):
    """The stage tape of one segment, (St, At), or None. The forward pass of a segment writes
    what the reverse of each stage's dynamics reads (velocities, accelerations, the ABA's U and
    D^-1, the body poses; ``rollout.tape_store``), so the reverse pass reads it back instead of
    running the ABA again (measured on the 7-link chain, T = 1000, B = 1: the reverse kernel
    8.5 -> 4.7 ms without the recomputation). Taken only without contact, and only when the
    tape fits in the memory budget beside the checkpoints and the segment's states; otherwise
    the stages are recomputed, which gives the same gradient to rounding."""
    if not TAPE_STAGES or inp.contact is not None:
        return None
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
    isz = dtype.itemsize
    ps, pt = _segment_bytes(B, model.nq, model.nv, inp.ff.shape[2], isz)
    base = ((-(-T // K) + 1) * ps if K < T else 0) + (K + 1) * pt
    if base + tape_bytes(model, B, K, inp.rk4, isz) > budget:
        return None
    rows = K * (1 + 3 * inp.rk4)  # reused buffers: a fresh one page-faults on every call
    return (scratch((B, rows, model.nbody, tape_width(model)), dtype, "diff.St"),
            scratch((B, rows, max(model.nv, 1)), dtype, "diff.At"))


def _params_dict(model: Model, pbar, dofbar, gearbar, names) -> dict:
    pb = pbar.sum(0, dtype=np.float64)
    db = dofbar.sum(0, dtype=np.float64)
    gb = gearbar.sum(0, dtype=np.float64)
    nb = model.nbody
    out = {}
    for name in names:
        if name == "body_mass":
            v = pb[:, 0].copy()
        elif name == "body_com":
            v = pb[:, 1:4].copy()
        elif name == "body_inertia":
            v = pb[:, 4:13].reshape(nb, 3, 3)
            v = 0.5 * (v + v.transpose(0, 2, 1))  # symmetric: <g, E> for a symmetric change E
        elif name == "body_pos":
            v = pb[:, 13:16].copy()
        elif name == "gravity":
            out[name] = pb[0, 1:4].copy()
            continue
        elif name == "dof_damping":
            out[name] = db[: model.nv, 0].copy()
            continue
        elif name == "dof_armature":
            out[name] = db[: model.nv, 1].copy()
            continue
        elif name == "dof_stiffness":
            out[name] = db[: model.nv, 2].copy()
            continue
        elif name == "actuator_gear":
            out[name] = gb[: model.nu].copy()
            continue
        else:  # parameters the contact-free pipeline does not use
            out[name] = np.zeros_like(getattr(model, name), dtype=np.float64)
            continue
        v[0] = 0.0  # the world row holds gravity, not a body
        out[name] = v
    return out


def _param_names(model: Model, params) -> tuple:
    if params is None or params == "all":
        return model.param_names
    if isinstance(params, str):
        params = (params,)
    names = tuple(params)
    for n in names:
        if n not in model.param_names:
            raise InputError("params", f"unknown parameter '{n}' (one of {', '.join(model.param_names)})")
    return names


def _reverse(inp, cotangents, params, memory_budget, checkpoint_every, clip_norm):
    """The shared driver: checkpointed forward, then segments in reverse.

    ``cotangents(t0, qs, vs, us)`` returns (cq (B, n+1, nq), cv (B, n+1, nv), cu (B, n, nu),
    value (B,) or None) for the states t0 .. t0 + n and the applied controls of those steps."""
    m = inp.model
    B, T = inp.B, inp.T
    dtype = inp.q0.dtype
    names = _param_names(m, params)
    nup = inp.ff.shape[2]
    K = choose_segment(T, B, m.nq, m.nv, nup, np.dtype(dtype).itemsize, memory_budget, checkpoint_every)
    work = _Work(m, B, dtype, inp.hsize)
    kd, dd, cd = kin_device(m), dyn_device(m), device(m)
    G = np.zeros((B, m.nbody, NG), dtype)
    nv = m.nv
    lam, vsb, vbt, dxb = (np.zeros((B, n), dtype) for n in (nv, nv, nv, 2 * nv))
    qsb, qbt = np.zeros((B, m.nq), dtype), np.zeros((B, m.nq), dtype)
    ub = np.zeros((B, nup), dtype)
    kb = np.zeros((B, 9, nv), dtype)
    qb, vb = np.zeros((B, m.nq), dtype), np.zeros((B, nv), dtype)
    ffb = np.zeros((B, T, nup), dtype)
    Kb = np.zeros(inp.K.shape, dtype) if inp.closed else np.zeros((1, 1, 1, 1), dtype)
    pbar = np.zeros((B, m.nbody, NPB), dtype)
    dofbar = np.zeros((B, max(nv, 1), NDOFBAR), dtype)
    gearbar = np.zeros((B, nup), dtype)
    thb = np.zeros((B, inp.theta.size) if inp.policy is not None else (1, 1), dtype)
    cgb = np.zeros((B, m.ngeom, NGB) if inp.contact is not None else (1, 1, 1), dtype)
    status = np.zeros((B, 2), np.int32)
    value = np.zeros(B, np.float64)
    have_value = False
    tape = _stage_tape(m, inp, B, T, K, np.dtype(dtype), memory_budget)
    if K >= T:
        starts = [0]
        ckq, ckv = None, None
    else:
        ckq, ckv, _, st = run_forward(inp, inp.q0, inp.v0, 0, T, K, False, work)
        raise_status(st)
        starts = list(range(0, T, K))
    for j in reversed(range(len(starts))):
        t0 = starts[j]
        n = min(K, T - t0)
        q_start = inp.q0 if ckq is None else np.ascontiguousarray(ckq[:, j])
        v_start = inp.v0 if ckv is None else np.ascontiguousarray(ckv[:, j])
        qs, vs, us, st = run_forward(inp, q_start, v_start, t0, n, 1, True, work, tape)
        raise_status(st)
        cq, cv, cu, val = cotangents(t0, qs, vs, us)
        if val is not None:
            value += val
            have_value = True
        _reverse_kernel(qs, vs, inp.ff, inp.K, inp.xq, inp.xv, inp.pol, inp.theta, work.hw, thb, cq, cv, cu,
                        kd["topo"], kd["geo"], dd["dyn"],
                        _dof(dd), cd["act"], cd["lim"], work.pose, work.S, G, work.qw, work.vw, work.uw, work.tw,
                        work.aw, work.q0w, work.v0w, work.dx, work.ks, lam, qsb, vsb, qbt, vbt, ub, dxb, kb, qb, vb,
                        ffb, Kb, pbar, dofbar, gearbar, status, t0, n, inp.dt, inp.rk4, inp.mode,
                        int(t0 == 0), inp.kl, inp.dl, inp.cg, cgb, *(tape or no_tape(dtype)), int(tape is not None),
                        inp.contact is not None, *batch_mode(B))
        raise_status(status, "gradient")
    f64 = dict(dtype=np.float64, copy=False)
    g = Gradients(qb.astype(**f64), vb.astype(**f64), ffb[:, :, : m.nu].astype(**f64),
                  Kb[:, :, : m.nu].astype(**f64) if inp.closed else None,
                  _params_dict(m, pbar, dofbar, gearbar, names), value if have_value else None,
                  checkpoint_every=K)
    if inp.policy is not None:
        g.policy = thb.sum(0, dtype=np.float64)
    if inp.contact is not None:
        g.params.update({k: v for k, v in param_grads(m, cgb).items() if k in names})
    parts = [g.q0, g.qd0, g.controls] + [p for p in (g.gains, g.policy) if p is not None] + list(g.params.values())
    g.norm = float(np.sqrt(sum(float(np.dot(p.ravel(), p.ravel())) for p in parts)))  # no (B, T, nu) temporary
    if clip_norm is not None:
        c = float(clip_norm)
        if not np.isfinite(c) or c <= 0:
            raise InputError("clip_norm", f"expected a positive number, got {clip_norm}")
        if g.norm > c:
            f = c / g.norm
            g.q0, g.qd0, g.controls = g.q0 * f, g.qd0 * f, g.controls * f
            g.gains = g.gains * f if g.gains is not None else None
            g.policy = g.policy * f if g.policy is not None else None
            g.params = {k: v * f for k, v in g.params.items()}
            g.clipped = True
    return g


def rollout_vjp(model: Model, q0, qd0, controls, dt: float, q_bar=None, qd_bar=None, *,
                integrator: str = "semi_implicit_euler", gains=None, q_ref=None, qd_ref=None, params=None,
                memory_budget: float | None = None, checkpoint_every: int | None = None,
                clip_norm: float | None = None, limit_stiffness: float = LIMIT_STIFFNESS,
                limit_damping: float = LIMIT_DAMPING, policy: MLPPolicy | None = None,
                steps: int | None = None, contact=None) -> Gradients:
    """Reverse-mode product of a rollout: the gradient of sum <q_bar, q> + <qd_bar, qd> over the
    trajectory ``rollout(model, q0, qd0, controls, dt, ...)`` would return.

    Args:
        model, q0, qd0, controls, dt, integrator, gains, q_ref, qd_ref, limit_*: as ``rollout``.
        q_bar: (B, T+1, nq) cotangent of the configurations (None: zero).
        qd_bar: (B, T+1, nv) cotangent of the velocities (None: zero).
        params: names from ``model.param_names`` to return (default: all).
        memory_budget: bytes the stored trajectory may take (default 1 GiB); over it the
            rollout is checkpointed and recomputed segment by segment (same result).
        checkpoint_every: force a segment length K instead.
        clip_norm: if given, scale every gradient down so their global L2 norm is at most this
            (``Gradients.clipped`` and ``Gradients.norm`` report it).
        policy, steps: as ``rollout``; with a policy, ``Gradients.policy`` holds the gradient
            w.r.t. its weights.
        contact: as ``rollout`` (smooth contact); ``geom_size``, ``geom_friction`` and
            ``geom_restitution`` then get their gradients.

    Returns:
        ``Gradients``.
    """
    inp = prepare(model, q0, qd0, controls, dt, integrator, gains, q_ref, qd_ref, limit_stiffness, limit_damping,
                  steps, policy, contact)
    B, T, dtype = inp.B, inp.T, inp.q0.dtype
    from .validate import as_array

    qbar = as_array(q_bar, (B, T + 1, model.nq), "q_bar") if q_bar is not None else None
    vbar = as_array(qd_bar, (B, T + 1, model.nv), "qd_bar") if qd_bar is not None else None
    nup = inp.ff.shape[2]

    def cot(t0, qs, vs, us):
        n = us.shape[1]
        cq = qbar[:, t0 : t0 + n + 1] if qbar is not None else np.zeros((B, n + 1, model.nq), dtype)
        cv = vbar[:, t0 : t0 + n + 1] if vbar is not None else np.zeros((B, n + 1, model.nv), dtype)
        return np.ascontiguousarray(cq), np.ascontiguousarray(cv), np.zeros((B, n, nup), dtype), None

    return _reverse(inp, cot, params, memory_budget, checkpoint_every, clip_norm)


def value_and_grad(model: Model, q0, qd0, controls, dt: float, cost, *, integrator: str = "semi_implicit_euler",
                   gains=None, q_ref=None, qd_ref=None, params=None, memory_budget: float | None = None,
                   checkpoint_every: int | None = None, clip_norm: float | None = None,
                   limit_stiffness: float = LIMIT_STIFFNESS, limit_damping: float = LIMIT_DAMPING,
                   policy: MLPPolicy | None = None, steps: int | None = None, contact=None) -> Gradients:
    """The loss of a rollout under a built-in ``QuadraticCost`` and its gradient, without
    shipping the trajectory. Arguments as ``rollout_vjp``; ``Gradients.loss`` holds the loss
    per env (B,); the gradient is of the sum over envs (each env's inputs only affect its own
    loss, so per-env input gradients are that env's)."""
    from .costs import QuadraticCost

    if not isinstance(cost, QuadraticCost):
        raise InputError("cost", f"expected a simad.QuadraticCost, got {type(cost).__name__}")
    inp = prepare(model, q0, qd0, controls, dt, integrator, gains, q_ref, qd_ref, limit_stiffness, limit_damping,
                  steps, policy, contact)
    bound = cost.bind(model, inp.B, inp.T)

    def cot(t0, qs, vs, us):
        return bound.segment(t0, qs, vs, us, inp.ff.shape[2])

    return _reverse(inp, cot, params, memory_budget, checkpoint_every, clip_norm)


