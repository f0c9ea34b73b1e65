"""Model-predictive control on top of the engine: iterative LQR (iLQR) with a feedback plan.

One iteration (Li and Todorov 2004; Tassa et al. 2012 for the regularisation):
  1. the nominal trajectory x_t, u_t (a rollout from the measured state);
  2. the exact step linearizations A_t, B_t along it (``simad.linearize``, tangent space);
  3. a Gauss-Newton quadratic model of the ``QuadraticCost`` (residuals r, Jacobians J:
     l_x = J^T W r, l_xx = J^T W J; frame positions through their Jacobians, free-joint
     coordinates through d coords / d tangent);
  4. the Riccati backward pass with Levenberg-Marquardt damping mu on Q_uu, giving
     k_t = -Q_uu^-1 Q_u and K_t = -Q_uu^-1 Q_ux;
  5. a line search over step sizes run as ONE batched closed-loop rollout (one env per step
     size): u_t = u_t + alpha k_t + K_t (x_t (-) x_t^nominal). The best decrease is kept; with
     none, mu grows tenfold and the plan stays.
The result is what a controller applies between replans: u = k_t + K_t (x (-) xref_t).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .configuration import _euclid_maps, _free_joints
from .costs import QuadraticCost, _Bound
from .errors import InputError, NonFiniteError
from .kinematics import frame_jacobian
from .linearize import linearize
from .model import rotations as rot
from .model.model import Model
from .rollout import LIMIT_DAMPING, LIMIT_STIFFNESS, rollout

ALPHAS = (1.0, 0.5, 0.25, 0.1, 0.03)
MU_MAX = 1e10


@dataclass
class Plan:
    """A feedback plan over T steps (single env).

    Attributes:
        k: (T, nu) feedforward controls. gains: (T, nu, 2 nv) K_t on (q (-) q_ref, qd - qd_ref).
        q_ref: (T+1, nq), qd_ref: (T+1, nv): the planned trajectory. cost: its cost.
        mu: the regularisation to start the next iteration from. improved: whether the last
        iteration lowered the cost.
    """

    k: np.ndarray
    gains: np.ndarray
    q_ref: np.ndarray
    qd_ref: np.ndarray
    cost: float
    mu: float
    improved: bool


def coords_jacobian(model: Model, q: np.ndarray) -> np.ndarray:
    """d q / d tangent at each row of q (N, nq): (N, nq, nv). One-dof joints: identity; a free
    joint: R(quat) for the position (integrate moves it by R v), 1/2 quat * (0, e_k) for the
    quaternion (the body-frame exponential map)."""
    N = q.shape[0]
    J = np.zeros((N, model.nq, model.nv))
    qi, vi = _euclid_maps(model)
    J[:, qi, vi] = 1.0
    for qa, va in _free_joints(model):
        quat = q[:, qa + 3 : qa + 7] / np.linalg.norm(q[:, qa + 3 : qa + 7], axis=1, keepdims=True)
        J[:, qa : qa + 3, va : va + 3] = rot.quat_to_mat(quat)
        for k in range(3):
            e = np.zeros((N, 4))
            e[:, 1 + k] = 1.0
            J[:, qa + 3 : qa + 7, va + 3 + k] = 0.5 * rot.quat_mul(quat, e)
    return J


def _value(b: _Bound, qs, vs, us) -> np.ndarray:
    """Cost per env of trajectories (B, T+1, .) under a bound cost."""
    return b.segment(0, qs, vs, us, max(us.shape[2], 1))[3]


def _quadratic(b: _Bound, model: Model, q, qd, u):
    """Gauss-Newton l_x (T+1, 2nv), l_xx (T+1, 2nv, 2nv), l_u (T, nu), l_uu (T, nu, nu) of one env."""
    T1, nv = q.shape[0], model.nv
    term = (np.arange(T1) == T1 - 1)[:, None]
    wq = np.where(term, b.wqT, b.wq)
    wv = np.where(term, b.wvT, b.wv)
    Jq = coords_jacobian(model, q)
    rq = q - b.qref[0] if b.qref.shape[1] == 1 else q - b.qref[0, :T1]
    rv = qd - (b.vref[0] if b.vref.shape[1] == 1 else b.vref[0, :T1])
    lx = np.zeros((T1, 2 * nv))
    lxx = np.zeros((T1, 2 * nv, 2 * nv))
    lx[:, :nv] = np.einsum("tqv,tq->tv", Jq, wq * rq)
    lxx[:, :nv, :nv] = np.einsum("tqv,tq,tqw->tvw", Jq, wq, Jq)
    lx[:, nv:] = wv * rv
    lxx[:, nv:, nv:] = wv[:, :, None] * np.eye(nv)
    if b.sel.size and (np.any(b.wf) or np.any(b.wfT)):
        wf = np.where(term, b.wfT, b.wf)  # (T1, nsel)
        J, pos, _ = frame_jacobian(model, q, list(b.sel), return_pose=True)  # (T1, nsel, 6, nv)
        Jp = J[:, :, :3, :]
        ref = b.fref[0] if b.fref.shape[1] == 1 else b.fref[0, :T1]
        r = pos - ref
        lx[:, :nv] += np.einsum("tfkv,tf,tfk->tv", Jp, wf, r)
        lxx[:, :nv, :nv] += np.einsum("tfkv,tf,tfkw->tvw", Jp, wf, Jp)
    if b.osel.size and b.obs.shape[0] and np.any(b.wo):
        J, pos, _ = frame_jacobian(model, q, list(b.osel), return_pose=True)
        Jp = J[:, :, :3, :]  # (T1, nf, 3, nv)
        d = pos[:, :, None, :] - b.obs[:, :3]  # (T1, nf, K, 3)
        dist = np.linalg.norm(d, axis=-1)
        pen = np.maximum(b.obs[:, 3] - dist, 0.0)
        n = np.where(dist[..., None] > 0, d / np.where(dist > 0, dist, 1.0)[..., None], 0.0)
        w = b.wo * (pen > 0)  # Gauss-Newton on r = r_k - |p - c_k| where active
        g = np.einsum("tfkv,tfok,tfo->tv", Jp, n, -w * pen)
        Jn = np.einsum("tfkv,tfok->tfov", Jp, n)
        lx[:, :nv] += g
        lxx[:, :nv, :nv] += np.einsum("tfov,tfo,tfow->tvw", Jn, w, Jn)
    ru = u - (b.uref[0] if b.uref.shape[1] == 1 else b.uref[0])
    return lx, lxx, b.wu * ru, np.broadcast_to(np.diag(b.wu), (u.shape[0],) + (model.nu,) * 2)


def _backward(A, Bm, lx, lxx, lu, luu, mu):
    """Riccati recursion; returns (k, K) or None when Q_uu is not positive definite."""
    T, nu = lu.shape
    k = np.zeros((T, nu))
    K = np.zeros((T, nu, A.shape[1]))
    Vx, Vxx = lx[T], lxx[T]
    for t in range(T - 1, -1, -1):
        At, Bt = A[t], Bm[t]
        Qx = lx[t] + At.T @ Vx
        Qu = lu[t] + Bt.T @ Vx
        VB = Vxx @ Bt
        Qxx = lxx[t] + At.T @ Vxx @ At
        Quu = luu[t] + Bt.T @ VB + mu * np.eye(nu)
        Qux = VB.T @ At
        try:
            L = np.linalg.cholesky(Quu)
        except np.linalg.LinAlgError:
            return None
        sol = np.linalg.solve(L.T, np.linalg.solve(L, np.column_stack([Qu, Qux])))
        k[t], K[t] = -sol[:, 0], -sol[:, 1:]
        Vx = Qx + K[t].T @ Quu @ k[t] + K[t].T @ Qu + Qux.T @ k[t]
        Vxx = Qxx + K[t].T @ Quu @ K[t] + K[t].T @ Qux + Qux.T @ K[t]
        Vxx = 0.5 * (Vxx + Vxx.T)
    return k, K


def _line_search(model, q, qd, ff, dt, K, bl, b1, kw):
    """Closed-loop rollouts of every step size in one batched call; a step size whose rollout
    diverges costs +inf (then each is retried alone, so one bad alpha does not sink the rest)."""
    T = ff.shape[1]
    fb = dict(gains=K, q_ref=q[:T], qd_ref=qd[:T], **kw)
    n = ff.shape[0]
    try:
        tr = rollout(model, np.tile(q[0], (n, 1)), np.tile(qd[0], (n, 1)), ff, dt, **fb)
        return [(tr.q[i], tr.qd[i], tr.u[i]) for i in range(n)], _value(bl, tr.q, tr.qd, tr.u)
    except NonFiniteError:
        trs, vals = [], np.full(n, np.inf)
        for i in range(n):
            try:
                tr = rollout(model, q[0], qd[0], ff[i : i + 1], dt, **fb)
                vals[i] = _value(b1, tr.q, tr.qd, tr.u)[0]
                trs.append((tr.q[0], tr.qd[0], tr.u[0]))
            except NonFiniteError:
                trs.append(None)
        return trs, vals


def ilqr(model: Model, q0, qd0, controls, dt: float, cost: QuadraticCost, *, iterations: int = 1,
         integrator: str = "semi_implicit_euler", mu: float = 1e-6, limit_stiffness: float = LIMIT_STIFFNESS,
         limit_damping: float = LIMIT_DAMPING) -> Plan:
    """Runs ``iterations`` iLQR iterations from the nominal ``controls`` (T, nu) at (q0, qd0).

    Args:
        q0: (nq,), qd0: (nv,) the measured state. controls: (T, nu) warm start.
        cost: a ``QuadraticCost`` (references broadcast over T or given per step).
        mu: initial Levenberg-Marquardt damping (>= 0) on Q_uu.

    Returns:
        ``Plan`` (the nominal one, feedback included, when no iteration improved the cost).
    """
    if model.nu == 0:
        raise InputError("model", "iLQR needs actuators (nu > 0)")
    if not isinstance(iterations, int | np.integer) or not 1 <= int(iterations) <= 1000:
        raise InputError("iterations", f"expected an integer in [1, 1000], got {iterations!r}")
    if not np.isfinite(mu) or mu < 0:
        raise InputError("regularization", f"expected a finite number >= 0, got {mu}")
    u = np.array(controls, dtype=np.float64)
    if u.ndim != 2 or u.shape[1] != model.nu:
        raise InputError("controls", f"expected shape (T, {model.nu}), got {u.shape}")
    T = u.shape[0]
    kw = dict(integrator=integrator, limit_stiffness=limit_stiffness, limit_damping=limit_damping)
    b1 = cost.bind(model, 1, T)
    bl = cost.bind(model, len(ALPHAS), T)
    tr = rollout(model, q0, qd0, u[None], dt, **kw)
    q, qd, u = tr.q[0], tr.qd[0], tr.u[0]
    J = float(_value(b1, tr.q, tr.qd, tr.u)[0])
    mu = max(float(mu), 1e-9)
    K = np.zeros((T, model.nu, 2 * model.nv))
    improved = False
    for _ in range(int(iterations)):
        A, Bm = linearize(model, q[:T], qd[:T], u, dt, **kw)
        lx, lxx, lu, luu = _quadratic(b1, model, q, qd, u)
        step = _backward(A, Bm, lx, lxx, lu, luu, mu)
        while step is None and mu < MU_MAX:
            mu *= 10.0
            step = _backward(A, Bm, lx, lxx, lu, luu, mu)
        if step is None:
            break
        k, Knew = step
        ff = u[None] + np.asarray(ALPHAS)[:, None, None] * k[None]
        trs, vals = _line_search(model, q, qd, ff, dt, Knew, bl, b1, kw)
        best = int(np.argmin(vals))
        if np.isfinite(vals[best]) and vals[best] < J:
            q, qd, u, J, K = trs[best][0], trs[best][1], trs[best][2], float(vals[best]), Knew
            mu = max(mu / 10.0, 1e-9)
            improved = True
        else:
            mu *= 10.0
            K = Knew
    return Plan(u.copy(), K, q.copy(), qd.copy(), J, mu, improved)


def shift(controls: np.ndarray) -> np.ndarray:
    """The receding-horizon warm start: drop u_0, repeat u_{T-1}."""
    return np.concatenate([controls[1:], controls[-1:]], axis=0)
