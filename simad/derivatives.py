"""Analytic derivatives of the rigid-body dynamics: dRNEA/dq, dRNEA/dqd, the mass matrix, and
from them dABA/dq, dABA/dqd, M^-1 (the partial derivatives of forward dynamics), in O(n d)
pair terms plus one dense Cholesky per point.

Derivation (our own, in the world-frame formulation of ``dynamics.py``: every spatial
quantity in world axes about the origin; in the spirit of Carpentier and Mansard, RSS 2018):
moving dof j (motion column S_j of body b_j; for a free joint, one of its six tangent
directions) by dq_j moves the whole subtree of b_j rigidly, so every motion vector m, force f
and inertia I attached to that subtree changes by S_j xm m, S_j x* f and S_j x* I - I S_j xm.
What does not move is the parent's velocity V_p and acceleration A_p (gravity included), and
the bias terms V_l xm S_l of the subtree see V_p fixed. Summing f_k = I_k A_k + V_k x* I_k V_k
over a subtree x (composite inertia Ic_x, force F_x, momentum H_x = sum I_k V_k and
Bd_x = sum (V_k x* I_k - I_k V_k xm) = d Ic_x / dt) gives, with w_j = S_j xm V_p,
g_j = S_j xm A_p - w_j xm V_p and b_j = V_{b_j} xm S_j - w_j:

    dF_x/dq_j  = S_j x* F_x - Ic_x g_j - w_j x* H_x - Bd_x w_j
    dF_x/dqd_j = Ic_x b_j + Bd_x S_j + S_j x* H_x                  (x in the subtree of b_j)

and tau_i = S_i . F_{b_i} (+ damping qd_i + armature qdd_i). For j on the path from the root
to i (j an ancestor of i, or i itself; S_i then moves too, which cancels the S_j x* F term):

    dtau_i/dq_j  = -P_i . g_j + R_i . w_j,   dtau_i/dqd_j = P_i . b_j - R_i . S_j,
    M_ij = P_i . S_j,   with P_i = Ic_{b_i} S_i, R_i = S_i x* H_{b_i} - Bd_{b_i}^T S_i,

and for i a strict ancestor of j: dtau_i/dq_j = S_i . Y_j, dtau_i/dqd_j = S_i . X_j, with Y_j
and X_j the two lines above at x = b_j. Pairs on different branches are zero. Forward
dynamics then follows from RNEA(q, qd, ABA(q, qd, tau)) = tau: dqdd/dx = M^-1 (dtau_applied/dx
- dRNEA/dx), dqdd/dtau = M^-1.

Each point (env) runs in one thread. ``rnea_derivatives_env`` (composites, per-dof vectors,
pair loops) is one real function, compiled once and shared by every kernel here and by
``linearize``; its pieces and the Cholesky are inlined. No callable here (nor in ``diff`` or
``linearize``, without contact) calls more than one distinct real function, directly: in Taichi
1.7 the offline-cache key of a kernel or real function that calls two or more distinct real
functions is not the same from process to process (measured on a kernel calling two trivial
real functions: two keys in 8 fresh processes; three: four keys; one function called twice, or
a chain k -> f -> g: one key), so such a kernel compiled again in about half of all
processes (the Euler linearize kernel 10 s instead of 2.5 s in a warm-cache process). The contact variants of the
reverse and linearization kernels still call two (``stage_accel_rf``, ``accel_vjp_rf``): their
key was the same in 8 of 8 processes, and merging them with the contact wrenches and their
reverse (one real function for both directions) made cold contact compiles slower (one A/B
of the quadruped: rollout 8 -> 13 s, value_and_grad 12 -> 30 s), so they stay.
"""

import numpy as np
import taichi as ti

from .dynamics import (
    _A,
    _C,
    _NS,
    _V,
    _dof,
    _join,
    _m6,
    _st6,
    _stm6,
    _v6,
    aba_env,
    body_inertia,
    cross_force,
    cross_motion,
    motion_col,
    ndof,
    velocities,
)
from .dynamics import device as dyn_device
from .errors import ModelError
from .kinematics import batch_mode, frame_poses, scratch
from .kinematics import device as kin_device
from .launch import fast_kernel
from .model.model import Model
from .tmath import row_vec3

A2, A3 = ti.types.ndarray(ndim=2), ti.types.ndarray(ndim=3)

# per-body composite scratch D (B, nbody, ND): Ic (6x6), Bd (6x6), F (6), H (6)
_DIC, _DBD, _DF, _DH = 0, 36, 72, 78
ND = 84
# per-dof vectors E (B, nv, NE): S, w, g, b, P, R, Y, X (6 each)
_ES, _EW, _EG, _EB, _EP, _ER, _EY, _EX = 0, 6, 12, 18, 24, 30, 36, 42
NE = 48


@ti.func
def _inertia_rate(V, Ib):
    """V x* I - I V xm (6x6): the rate of change of a world-frame inertia moving with V."""
    out = ti.Matrix.zero(float, 6, 6)
    for c in ti.static(range(6)):
        e = ti.Vector([1.0 if k == c else 0.0 for k in ti.static(range(6))])
        col = cross_force(V, ti.Vector([Ib[k, c] for k in ti.static(range(6))])) - Ib @ cross_motion(V, e)
        for r in ti.static(range(6)):
            out[r, c] = col[r]
    return out


@ti.func
def _composites(a: ti.template(), topo: ti.template(), geo: ti.template(), dyn: ti.template(),
                pose: ti.template(), S: ti.template(), D: ti.template(), b):
    """Accelerations A_k (into S, gravity included) from V, C in S and the joint accelerations
    a; then the subtree sums Ic, Bd, F, H into D (leaves to root)."""
    nbody = topo[0, 2]
    g = row_vec3(dyn, 0, 1)
    _st6(S, b, 0, _A, _join(ti.Vector([0.0, 0.0, 0.0]), -g))
    for i in range(1, nbody):
        jt, va = topo[i, 1], topo[i, 3]
        A = _v6(S, b, topo[i, 0], _A) + _v6(S, b, i, _C)
        for k in range(ndof(jt)):
            A += motion_col(topo, geo, pose, b, i, k) * a[b, va + k]
        _st6(S, b, i, _A, A)
        Ib = body_inertia(dyn, pose, b, i)
        V = _v6(S, b, i, _V)
        h = Ib @ V
        _stm6(D, b, i, _DIC, Ib)
        _stm6(D, b, i, _DBD, _inertia_rate(V, Ib))
        _st6(D, b, i, _DF, Ib @ A + cross_force(V, h))
        _st6(D, b, i, _DH, h)
    for kk in range(nbody - 1):
        i = nbody - 1 - kk
        par = topo[i, 0]
        if par > 0:
            for c in range(ND):
                D[b, par, c] += D[b, i, c]


@ti.func
def _dof_vectors(topo: ti.template(), geo: ti.template(), pose: ti.template(), S: ti.template(), D: ti.template(),
                 E: ti.template(), b):
    """Per dof j: S_j, w_j, g_j, b_j, P_j, R_j, Y_j, X_j (see the module docstring) into E."""
    nbody = topo[0, 2]
    for i in range(1, nbody):
        jt, va, par = topo[i, 1], topo[i, 3], topo[i, 0]
        Vp, Ap, Vi = _v6(S, b, par, _V), _v6(S, b, par, _A), _v6(S, b, i, _V)
        Ic, Bd = _m6(D, b, i, _DIC), _m6(D, b, i, _DBD)
        F, H = _v6(D, b, i, _DF), _v6(D, b, i, _DH)
        for k in range(ndof(jt)):
            s = motion_col(topo, geo, pose, b, i, k)
            w = cross_motion(s, Vp)
            gm = cross_motion(s, Ap) - cross_motion(w, Vp)
            bt = cross_motion(Vi, s) - w
            j = va + k
            _st6(E, b, j, _ES, s)
            _st6(E, b, j, _EW, w)
            _st6(E, b, j, _EG, gm)
            _st6(E, b, j, _EB, bt)
            _st6(E, b, j, _EP, Ic @ s)
            _st6(E, b, j, _ER, cross_force(s, H) - Bd.transpose() @ s)
            _st6(E, b, j, _EY, cross_force(s, F) - Ic @ gm - cross_force(w, H) - Bd @ w)
            _st6(E, b, j, _EX, Ic @ bt + Bd @ s + cross_force(s, H))


@ti.func
def _pairs(topo: ti.template(), dof: ti.template(), E: ti.template(), Tq: ti.template(), Tv: ti.template(),
           M: ti.template(), b):
    """dtau/dq (Tq), dtau/dqd (Tv, damping included) and M (armature included), nv x nv."""
    nbody, nv = topo[0, 2], topo[0, 3]
    for r, c in ti.ndrange(nv, nv):
        Tq[b, r, c] = 0.0
        Tv[b, r, c] = 0.0
        M[b, r, c] = 0.0
    for bi in range(1, nbody):
        ji, vi = topo[bi, 1], topo[bi, 3]
        for ci in range(ndof(ji)):
            i = vi + ci
            P, R = _v6(E, b, i, _EP), _v6(E, b, i, _ER)
            Y, X = _v6(E, b, i, _EY), _v6(E, b, i, _EX)
            ba = bi
            while ba > 0:
                ja, vaa = topo[ba, 1], topo[ba, 3]
                for cj in range(ndof(ja)):
                    j = vaa + cj
                    Sj = _v6(E, b, j, _ES)
                    Tq[b, i, j] = -P.dot(_v6(E, b, j, _EG)) + R.dot(_v6(E, b, j, _EW))
                    Tv[b, i, j] = P.dot(_v6(E, b, j, _EB)) - R.dot(Sj)
                    m = P.dot(Sj)
                    M[b, i, j] = m
                    M[b, j, i] = m
                    if ba != bi:  # j strictly above i: tau_j sees i's subtree
                        Tq[b, j, i] = Sj.dot(Y)
                        Tv[b, j, i] = Sj.dot(X)
                ba = topo[ba, 0]
    for d in range(nv):
        Tv[b, d, d] += dof[d, 0]
        Tq[b, d, d] += dof[d, 2]  # the spring (pack_dynamics zeroes it on free dofs)
        M[b, d, d] += dof[d, 1]


@ti.real_func
def rnea_derivatives_env(q: A2, qd: A2, a: A2, topo: A2, geo: A2, dyn: A2, dof: A2, pose: A3, S: A3, D: A3, E: A3,
                         Tq: A3, Tv: A3, M: A3, b: ti.i32, have_kinematics: ti.i32):
    """dRNEA/dq, dRNEA/dqd at (q, qd, a) and M(q) for env b. With have_kinematics the poses and
    the velocities V, C are already in pose and S (e.g. left by ``aba_env`` at (q, qd))."""
    if have_kinematics == 0:
        frame_poses(q, topo, geo, pose, b)
        velocities(qd, topo, geo, pose, S, b)
    _composites(a, topo, geo, dyn, pose, S, D, b)
    _dof_vectors(topo, geo, pose, S, D, E, b)
    _pairs(topo, dof, E, Tq, Tv, M, b)


@ti.func
def cholesky_solve_env(M: ti.template(), X: ti.template(), b, n, ncol):
    """X[b, :n, :ncol] <- M^-1 X for the symmetric positive definite M[b, :n, :n] (factored in
    place: its lower triangle becomes L, M = L L^T). Returns 0, or 1 if M is not positive
    definite (a massless chain)."""
    bad = 0
    for j in range(n):
        d = M[b, j, j]
        for k in range(j):
            d -= M[b, j, k] * M[b, j, k]
        if not d > 0.0:
            bad = 1
            d = 1.0
        ljj = ti.sqrt(d)
        M[b, j, j] = ljj
        for i in range(j + 1, n):
            s = M[b, i, j]
            for k in range(j):
                s -= M[b, i, k] * M[b, j, k]
            M[b, i, j] = s / ljj
    for c in range(ncol):
        for i in range(n):  # L y = x
            s = X[b, i, c]
            for k in range(i):
                s -= M[b, i, k] * X[b, k, c]
            X[b, i, c] = s / M[b, i, i]
        for kk in range(n):  # L^T z = y
            i = n - 1 - kk
            s = X[b, i, c]
            for k in range(i + 1, n):
                s -= M[b, k, i] * X[b, k, c]
            X[b, i, c] = s / M[b, i, i]
    return bad


@fast_kernel
@ti.kernel
def _rnea_derivatives_kernel(q: A2, qd: A2, a: A2, topo: A2, geo: A2, dyn: A2, dof: A2, pose: A3, S: A3, D: A3,
                             E: A3, Tq: A3, Tv: A3, M: A3, spread: ti.i32, serial: ti.template()):
    ti.loop_config(serialize=serial)
    for jb in range(q.shape[0] * spread):  # see runtime.spread
        if jb % spread != 0:
            continue
        b = jb // spread
        rnea_derivatives_env(q, qd, a, topo, geo, dyn, dof, pose, S, D, E, Tq, Tv, M, b, 0)


@ti.real_func
def _aba_derivatives_env(q: A2, qd: A2, tau: A2, topo: A2, geo: A2, dyn: A2, dof: A2, pose: A3, S: A3, D: A3,
                         E: A3, Tq: A3, Tv: A3, M: A3, qdd: A2, b: ti.i32):
    """qdd <- ABA(q, qd, tau) for env b, then the RNEA derivatives and M at (q, qd, qdd) on the
    kinematics the ABA left (one real function calling one: see the module docstring)."""
    aba_env(q, qd, tau, topo, geo, dyn, dof, pose, S, qdd, b, 0)
    rnea_derivatives_env(q, qd, qdd, topo, geo, dyn, dof, pose, S, D, E, Tq, Tv, M, b, 1)


@fast_kernel
@ti.kernel
def _aba_derivatives_kernel(q: A2, qd: A2, tau: A2, topo: A2, geo: A2, dyn: A2, dof: A2, pose: A3, S: A3, D: A3,
                            E: A3, Tq: A3, Tv: A3, M: A3, X: A3, qdd: A2, status: ti.types.ndarray(ndim=1),
                            spread: ti.i32, serial: ti.template()):
    """X[b] = [dqdd/dq | dqdd/dqd | M^-1] (nv x 3 nv) at (q, qd, tau)."""
    ti.loop_config(serialize=serial)
    for jb in range(q.shape[0] * spread):  # see runtime.spread
        if jb % spread != 0:
            continue
        b = jb // spread
        nv = topo[0, 3]
        _aba_derivatives_env(q, qd, tau, topo, geo, dyn, dof, pose, S, D, E, Tq, Tv, M, qdd, b)
        for r, c in ti.ndrange(nv, nv):
            X[b, r, c] = -Tq[b, r, c]
            X[b, r, nv + c] = -Tv[b, r, c]
            X[b, r, 2 * nv + c] = 1.0 if r == c else 0.0
        status[b] = cholesky_solve_env(M, X, b, nv, 3 * nv)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def _scratch(model: Model, B: int, dtype):
    """pose, S, D, E, Tq, Tv, M work buffers (reused: every kernel here writes before reading)."""
    nv = max(model.nv, 1)
    shapes = {"pose": (B, model.nframe, 12), "S": (B, model.nbody, _NS), "D": (B, model.nbody, ND), "E": (B, nv, NE),
              "Tq": (B, nv, nv), "Tv": (B, nv, nv), "M": (B, nv, nv)}
    return tuple(scratch(shape, dtype, "derivatives." + k) for k, shape in shapes.items())


def rnea_derivatives(model: Model, q, qd, qdd):
    """Partial derivatives of inverse dynamics tau = RNEA(q, qd, qdd), analytically.

    Args:
        q: (B, nq) or (nq,); qd, qdd: (B, nv) or (nv,).

    Returns:
        (dtau_dq, dtau_dqd, M): each (B, nv, nv) (or (nv, nv) for one point); columns of
        dtau_dq are tangent directions (a free joint's: body-frame linear then angular, as in
        ``configuration.integrate``); dtau_dqd includes joint damping; M = dtau/dqdd is the mass
        matrix, armature on the diagonal.
    """
    from .dynamics import _batch3

    qb, vb, ab, single = _batch3(model, q, qd, qdd, ("q", "qd", "qdd"))
    k, d = kin_device(model), dyn_device(model)
    pose, S, D, E, _, _, _ = _scratch(model, qb.shape[0], qb.dtype)
    nv = max(model.nv, 1)
    Tq, Tv, M = (np.empty((qb.shape[0], nv, nv), qb.dtype) for _ in range(3))  # returned: not scratch
    _rnea_derivatives_kernel(qb, vb, ab, k["topo"], k["geo"], d["dyn"], _dof(d), pose, S, D, E, Tq, Tv, M,
                             *batch_mode(qb.shape[0]))
    nv = model.nv
    out = tuple(x[:, :nv, :nv] for x in (Tq, Tv, M))
    return tuple(x[0] for x in out) if single else out


def aba_derivatives(model: Model, q, qd, tau):
    """Partial derivatives of forward dynamics qdd = ABA(q, qd, tau), analytically
    (dqdd/dx = -M^-1 dRNEA/dx at qdd, dqdd/dtau = M^-1).

    Args:
        q: (B, nq) or (nq,); qd, tau: (B, nv) or (nv,) (as ``forward_dynamics``).

    Returns:
        (dqdd_dq, dqdd_dqd, Minv): each (B, nv, nv) (or (nv, nv)); dqdd_dq columns in the
        tangent space (free joints: body-frame linear then angular).

    Raises:
        ModelError: the mass matrix is singular at some point (massless bodies).
    """
    from .dynamics import _batch3, require_invertible

    qb, vb, tb, single = _batch3(model, q, qd, tau, ("q", "qd", "tau"))
    require_invertible(model)
    B, nv, dtype = qb.shape[0], max(model.nv, 1), qb.dtype
    k, d = kin_device(model), dyn_device(model)
    pose, S, D, E, Tq, Tv, M = _scratch(model, B, dtype)
    X = np.empty((B, nv, 3 * nv), dtype)  # returned; every entry is written
    qdd = scratch((B, nv), dtype, "derivatives.qdd")
    status = np.zeros(B, np.int32)
    _aba_derivatives_kernel(qb, vb, tb, k["topo"], k["geo"], d["dyn"], _dof(d), pose, S, D, E, Tq, Tv, M, X, qdd, status,
                            *batch_mode(B))
    if status.any():
        raise ModelError(f"the mass matrix is not positive definite at point {int(np.argmax(status))} (massless "
                         "bodies on a moving chain?)", element=f"model '{model.name}'", field="body_mass")
    n = model.nv
    out = (X[:, :n, :n], X[:, :n, nv : nv + n], X[:, :n, 2 * nv : 2 * nv + n])
    return tuple(x[0] for x in out) if single else out

