"""Batched rollouts: many envs, whole horizons, one fused kernel launch.

One step (zero-order hold on the control over the step):

    u     = k_t + K_t (x_t (-) xref_t)            closed loop (open loop: u = k_t = controls[t])
    u     = k_t + pi_theta(x_t)                   with an MLP policy (``policy.py``)
    tau   = gear * clip(u, ctrlrange) + tau_limit(q, qd)
    a     = ABA(q, qd, tau)                      (damping and armature inside, see dynamics.py)
    semi-implicit Euler:  qd' = qd + dt a,  q' = q (+) dt qd'
    RK4:  four stages of (qd, a) on the tangent space at q, combined with weights 1, 2, 2, 1 / 6

``(+)`` is ``configuration.integrate`` (free joints on the manifold) and ``x (-) xref`` is
(``difference(qref, q)``, ``qd - qdref``), 2 nv numbers. Soft joint limits: outside its range a
limited one-dof joint feels tau_limit = -limit_stiffness (q - bound) - limit_damping qd (a
spring-damper; zero inside the range).

The kernel is a parallel loop over envs with the time loop inside, so a whole (B, T) rollout
is one launch; states are stored every ``every`` steps (1 for a full trajectory, more for the
checkpoints of ``rollout_vjp``). A non-finite state or control stops its env and is reported
with the env, step and field.
"""

import threading
from dataclasses import dataclass

import numpy as np
import taichi as ti

from . import contact_forces, runtime
from .adjoint import conj, integrate_env, q4
from .dynamics import _A, _DI, _NS, _U, _V, _dof, aba_env, require_invertible
from .dynamics import device as dyn_device
from .errors import InputError, ModelError, NonFiniteError
from .kinematics import _FREE, _PRI, _REV, batch_mode
from .kinematics import device as kin_device
from .launch import fast_kernel
from .model.model import JointType, Model
from .policy import MLPPolicy, policy_env
from .tmath import quat_log, quat_mul, quat_to_mat
from .validate import as_array, as_batch

INTEGRATORS = {"semi_implicit_euler": 0, "rk4": 1}
LIMIT_STIFFNESS = 1e4  # N m / rad (N / m): default soft-limit spring
LIMIT_DAMPING = 1e2  # N m s / rad (N s / m): default soft-limit damper
MAX_STEPS = 10_000_000
# A velocity above this (rad/s or m/s) means the integration blew up (e.g. a stiff soft limit
# on a very light link with too large a dt): reported like NaN rather than returned as numbers.
MAX_SPEED = 1e6
MAX_BYTES = 4 << 30  # largest trajectory a call may allocate
FIELDS = {1: "qd", 2: "q", 3: "u", 4: "gradient"}  # status codes of the kernels


def pack_control(model: Model, dtype) -> dict:
    """``act`` (max(nu, 1), 10): dof, gear, ctrllimited, lo, hi, gain, bias (3), q index (a
    zero-gear row when nu == 0). ``lim`` (max(nv, 1), 4): limited, lo, hi, q index of each dof
    (one-dof joints only)."""
    act = np.zeros((max(model.nu, 1), 10), dtype)
    for a in range(model.nu):
        lo, hi = model.actuator_ctrlrange[a]
        qa = model.jnt_qadr[model.dof_jnt[model.actuator_dof[a]]]
        act[a] = (model.actuator_dof[a], model.actuator_gear[a], bool(model.actuator_ctrllimited[a]), lo, hi,
                  model.actuator_gain[a], *model.actuator_bias[a], qa)
    lim = np.zeros((max(model.nv, 1), 4), dtype)
    for j in range(model.njnt):
        if model.jnt_type[j] in (JointType.REVOLUTE, JointType.PRISMATIC) and model.jnt_limited[j]:
            lim[model.jnt_vadr[j]] = (1.0, *model.jnt_range[j], model.jnt_qadr[j])
    return {"act": act, "lim": lim}


def device(model: Model) -> dict:
    return runtime.device_data(model, pack_control, "control")


# ---------------------------------------------------------------------------------------------
# Taichi functions of one step
# ---------------------------------------------------------------------------------------------
@ti.func
def controls_env(topo: ti.template(), ff: ti.template(), K: ti.template(), xq: ti.template(), xv: ti.template(),
                 pol: ti.template(), th: ti.template(), hw: ti.template(), qw: ti.template(), vw: ti.template(),
                 uw: ti.template(), dx: ti.template(), b, tt, closed):
    """uw[b] = ff[b, tt] (+ K[b, tt] (x (-) xref[b, tt]) when closed == 1, dx[b] keeps x (-) xref;
    + the MLP policy of ``policy.py`` when closed == 2, hw[b] keeps its activations)."""
    nu = uw.shape[1]
    for a in range(nu):
        uw[b, a] = ff[b, tt, a]
    if closed == 2:
        policy_env(topo, pol, th, qw, vw, uw, hw, b)
    if closed == 1:
        nbody, nv = topo[0, 2], topo[0, 3]
        for i in range(1, nbody):
            jt, qa, va = topo[i, 1], topo[i, 2], topo[i, 3]
            if jt == _REV or jt == _PRI:
                dx[b, va] = qw[b, qa] - xq[b, tt, qa]
            elif jt == _FREE:
                ur = ti.Vector([xq[b, tt, qa + 3 + k] for k in ti.static(range(4))])
                urn = ur / ur.norm()
                Rr = quat_to_mat(ur[0], ur[1], ur[2], ur[3])
                dp = Rr.transpose() @ ti.Vector([qw[b, qa + k] - xq[b, tt, qa + k] for k in ti.static(range(3))])
                u = q4(qw, b, qa + 3)
                w = quat_log(quat_mul(conj(urn), u / u.norm()))
                for k in ti.static(range(3)):
                    dx[b, va + k] = dp[k]
                    dx[b, va + 3 + k] = w[k]
        for d in range(nv):
            dx[b, nv + d] = vw[b, d] - xv[b, tt, d]
        for a in range(nu):
            acc = uw[b, a]
            for k in range(2 * nv):
                acc += K[b, tt, a, k] * dx[b, k]
            uw[b, a] = acc


@ti.func
def generalized_forces(qw: ti.template(), vw: ti.template(), uw: ti.template(), act: ti.template(),
                       lim: ti.template(), tw: ti.template(), b, nv, kl, dl):
    """tw[b] = the actuators' gear * (gain clip(u) + bias . (1, gear q, gear qd)) + soft-limit forces."""
    for d in range(nv):
        tw[b, d] = 0.0
    for a in range(uw.shape[1]):
        u = uw[b, a]
        if act[a, 2] > 0.5:
            u = ti.min(ti.max(u, act[a, 3]), act[a, 4])
        d = ti.cast(act[a, 0], ti.i32)
        g = act[a, 1]
        x = qw[b, ti.cast(act[a, 9], ti.i32)]
        tw[b, d] += g * (act[a, 5] * u + act[a, 6] + act[a, 7] * g * x + act[a, 8] * g * vw[b, d])
    for d in range(nv):
        if lim[d, 0] > 0.5:
            x = qw[b, ti.cast(lim[d, 3], ti.i32)]
            if x > lim[d, 2]:
                tw[b, d] += -kl * (x - lim[d, 2]) - dl * vw[b, d]
            elif x < lim[d, 1]:
                tw[b, d] += -kl * (x - lim[d, 1]) - dl * vw[b, d]


@ti.func
def stage_accel(qw: ti.template(), vw: ti.template(), uw: ti.template(), tw: ti.template(), aw: ti.template(),
                topo: ti.template(), geo: ti.template(), dyn: ti.template(), dof: ti.template(), act: ti.template(),
                lim: ti.template(), pose: ti.template(), S: ti.template(), b, kl, dl, cg: ti.template()):
    generalized_forces(qw, vw, uw, act, lim, tw, b, topo[0, 3], kl, dl)
    aba_env(qw, vw, tw, topo, geo, dyn, dof, pose, S, aw, b, cg)


A2, A3 = ti.types.ndarray(ndim=2), ti.types.ndarray(ndim=3)


@ti.real_func
def stage_accel_rf(qw: A2, vw: A2, uw: A2, tw: A2, aw: A2, topo: A2, geo: A2, dyn: A2, dof: A2, act: A2, lim: A2,
                   pose: A3, S: A3, b: ti.i32, kl: float, dl: float, cg: A2):
    """``stage_accel`` with contact (cg a contact table), compiled once as a separate function
    and shared by every kernel that calls it (the reverse, linearization and contact rollout
    kernels): inlined into each, it made their compiles minutes long. The contact-free forward
    rollout inlines ``stage_accel`` instead (measured: a real-function call per step costs the
    small rollouts ~25 %). Without contact, the gradient and linearization kernels call
    ``diff.accel_free_rf`` and ``linearize._euler_point_rf`` instead, which also hold the
    derivative code: Taichi 1.7's offline-cache key of a callable that calls two or more
    distinct real functions differs from process to process (see ``derivatives``)."""
    stage_accel(qw, vw, uw, tw, aw, topo, geo, dyn, dof, act, lim, pose, S, b, kl, dl, cg)


@ti.func
def rk4_stage_state(topo: ti.template(), q0w: ti.template(), v0w: ti.template(), ks: ti.template(),
                    qw: ti.template(), vw: ti.template(), b, s, dt):
    """State of RK4 stage s (1..3): x0 (+) c_s dt k_{s-1}, c = 1/2, 1/2, 1."""
    c = 0.5
    if s == 3:
        c = 1.0
    integrate_env(topo, q0w, ks, s - 1, c * dt, qw, b)
    for d in range(topo[0, 3]):
        vw[b, d] = v0w[b, d] + c * dt * ks[b, 4 + s - 1, d]


# The stage tape of a gradient segment (see ``diff``): per stage, per body, what the reverse of
# the stage acceleration reads from the forward pass, so the reverse need not recompute it:
# V (6), A (6), U (6: the one-dof joint's column), D^-1 (1) and the body's world pose (12);
# with free joints (a tape of width TAPE_FREE) also the rest of their 6x6 U and D^-1.
TAPE_BASE, TAPE_FREE = 31, 96


def tape_width(model: Model) -> int:
    return TAPE_FREE if model.has_free_joint else TAPE_BASE


@ti.func
def tape_store(S: ti.template(), pose: ti.template(), aw: ti.template(), St: ti.template(), At: ti.template(), b,
               row, nbody, nv):
    """The stage just computed (S, pose, aw of env b) into tape row ``row``."""
    for i in range(nbody):
        for k in ti.static(range(6)):
            St[b, row, i, k] = S[b, i, _V + k]
            St[b, row, i, 6 + k] = S[b, i, _A + k]
            St[b, row, i, 12 + k] = S[b, i, _U + k]
        St[b, row, i, 18] = S[b, i, _DI]
        for k in ti.static(range(12)):
            St[b, row, i, 19 + k] = pose[b, i, k]
        if St.shape[3] > TAPE_BASE:
            for k in range(30):
                St[b, row, i, TAPE_BASE + k] = S[b, i, _U + 6 + k]
            for k in range(35):
                St[b, row, i, TAPE_BASE + 30 + k] = S[b, i, _DI + 1 + k]
    for d in range(nv):
        At[b, row, d] = aw[b, d]


@ti.func
def tape_load(S: ti.template(), pose: ti.template(), aw: ti.template(), St: ti.template(), At: ti.template(), b,
              row, nbody, nv, full):
    """Tape row ``row`` back into aw (and, when ``full``, S and pose) of env b: bit for bit what
    ``stage_accel`` left there in the forward pass."""
    if full:
        for i in range(nbody):
            for k in ti.static(range(6)):
                S[b, i, _V + k] = St[b, row, i, k]
                S[b, i, _A + k] = St[b, row, i, 6 + k]
                S[b, i, _U + k] = St[b, row, i, 12 + k]
            S[b, i, _DI] = St[b, row, i, 18]
            for k in ti.static(range(12)):
                pose[b, i, k] = St[b, row, i, 19 + k]
            if St.shape[3] > TAPE_BASE:
                for k in range(30):
                    S[b, i, _U + 6 + k] = St[b, row, i, TAPE_BASE + k]
                for k in range(35):
                    S[b, i, _DI + 1 + k] = St[b, row, i, TAPE_BASE + 30 + k]
    for d in range(nv):
        aw[b, d] = At[b, row, d]


@ti.func
def step_env(topo: ti.template(), geo: ti.template(), dyn: ti.template(), dof: ti.template(), act: ti.template(),
             lim: ti.template(), pose: ti.template(), S: ti.template(), qw: ti.template(), vw: ti.template(),
             uw: ti.template(), tw: ti.template(), aw: ti.template(), q0w: ti.template(), v0w: ti.template(),
             ks: ti.template(), b, dt, rk4, kl, dl, cg: ti.template(), St: ti.template(), At: ti.template(),
             tape_row):
    """(qw, vw) <- one step from (qw, vw) under the control uw. ks (B, 9, nv) keeps the stage
    slopes: rows 0-3 velocities, 4-7 accelerations, 8 the combined velocity (Euler: row 0 = qd').
    With tape_row >= 0 (contact-free only), stage s is also written to tape row tape_row + s."""
    nv = topo[0, 3]
    if rk4:
        for k in range(qw.shape[1]):
            q0w[b, k] = qw[b, k]
        for d in range(nv):
            v0w[b, d] = vw[b, d]
    nst = 1 + 3 * rk4
    for s in range(nst):  # one call site of the ABA keeps the compiled kernel small
        if s > 0:
            rk4_stage_state(topo, q0w, v0w, ks, qw, vw, b, s, dt)
        if ti.static(isinstance(cg, int)):
            stage_accel(qw, vw, uw, tw, aw, topo, geo, dyn, dof, act, lim, pose, S, b, kl, dl, 0)
        else:
            stage_accel_rf(qw, vw, uw, tw, aw, topo, geo, dyn, dof, act, lim, pose, S, b, kl, dl, cg)
        if ti.static(isinstance(cg, int)):
            if tape_row >= 0:
                tape_store(S, pose, aw, St, At, b, tape_row + s, topo[0, 2], nv)
        for d in range(nv):
            ks[b, s, d] = vw[b, d]
            ks[b, 4 + s, d] = aw[b, d]
    if rk4 == 0:
        for d in range(nv):
            vw[b, d] += dt * aw[b, d]
            ks[b, 0, d] = vw[b, d]
        integrate_env(topo, qw, ks, 0, dt, qw, b)
    else:
        for d in range(nv):
            ks[b, 8, d] = (ks[b, 0, d] + 2.0 * ks[b, 1, d] + 2.0 * ks[b, 2, d] + ks[b, 3, d]) / 6.0
            vw[b, d] = v0w[b, d] + dt * (ks[b, 4, d] + 2.0 * ks[b, 5, d] + 2.0 * ks[b, 6, d] + ks[b, 7, d]) / 6.0
        integrate_env(topo, q0w, ks, 8, dt, qw, b)


@fast_kernel
@ti.kernel
def _rollout_kernel(q0: ti.types.ndarray(ndim=2), v0: ti.types.ndarray(ndim=2), ff: ti.types.ndarray(ndim=3),
                    K: ti.types.ndarray(ndim=4), xq: ti.types.ndarray(ndim=3), xv: ti.types.ndarray(ndim=3),
                    pol: ti.types.ndarray(ndim=2), th: ti.types.ndarray(ndim=1), hw: ti.types.ndarray(ndim=2),
                    topo: ti.types.ndarray(ndim=2), geo: ti.types.ndarray(ndim=2), dyn: ti.types.ndarray(ndim=2),
                    dof: ti.types.ndarray(ndim=2), act: ti.types.ndarray(ndim=2), lim: ti.types.ndarray(ndim=2),
                    pose: ti.types.ndarray(ndim=3), S: ti.types.ndarray(ndim=3), qw: ti.types.ndarray(ndim=2),
                    vw: ti.types.ndarray(ndim=2), uw: ti.types.ndarray(ndim=2), tw: ti.types.ndarray(ndim=2),
                    aw: ti.types.ndarray(ndim=2), q0w: ti.types.ndarray(ndim=2), v0w: ti.types.ndarray(ndim=2),
                    dx: ti.types.ndarray(ndim=2), ks: ti.types.ndarray(ndim=3), qs: ti.types.ndarray(ndim=3),
                    vs: ti.types.ndarray(ndim=3), us: ti.types.ndarray(ndim=3), status: ti.types.ndarray(ndim=2),
                    t0: ti.i32, T: ti.i32, every: ti.i32, dt: float, rk4: ti.i32, closed: ti.i32,
                    store_u: ti.i32, kl: float, dl: float, cg: ti.types.ndarray(ndim=2),
                    St: ti.types.ndarray(ndim=4), At: ti.types.ndarray(ndim=3), taped: ti.i32, contact: ti.template(),
                    spread: ti.i32, serial: ti.template()):
    """States at steps 0, every, 2 every, ... and T into qs, vs (row t // every, the last row T).
    With ``taped`` (contact-free), every stage of step t also goes to tape rows t (1 + 3 rk4) + s."""
    ti.loop_config(serialize=serial)
    for jb in range(q0.shape[0] * spread):  # see runtime.spread
        if jb % spread != 0:
            continue
        b = jb // spread
        nq, nv, nu = q0.shape[1], v0.shape[1], uw.shape[1]
        for k in range(nq):
            qw[b, k] = q0[b, k]
            qs[b, 0, k] = q0[b, k]
        for d in range(nv):
            vw[b, d] = v0[b, d]
            vs[b, 0, d] = v0[b, d]
        status[b, 0] = 0
        status[b, 1] = 0
        for t in range(T):
            if status[b, 0] == 0:
                controls_env(topo, ff, K, xq, xv, pol, th, hw, qw, vw, uw, dx, b, t0 + t, closed)
                bad = 0
                for a in range(nu):
                    if store_u:
                        us[b, t, a] = uw[b, a]
                    if ti.math.isinf(uw[b, a]) or ti.math.isnan(uw[b, a]):
                        bad = 3
                if bad == 0:
                    trow = -1
                    if taped:
                        trow = t * (1 + 3 * rk4)
                    step_env(topo, geo, dyn, dof, act, lim, pose, S, qw, vw, uw, tw, aw, q0w, v0w, ks, b, dt, rk4,
                             kl, dl, ti.static(cg if contact else 0), St, At, trow)
                    for d in range(nv):
                        if not ti.abs(vw[b, d]) <= MAX_SPEED:  # NaN, inf, or a blown-up integration
                            bad = 1
                    for k in range(nq):
                        if ti.math.isinf(qw[b, k]) or ti.math.isnan(qw[b, k]):
                            bad = 2
                if bad != 0:
                    status[b, 0] = t0 + t + 1
                    status[b, 1] = bad
                elif (t + 1) % every == 0 or t + 1 == T:
                    row = (t + every) // every
                    for k in range(nq):
                        qs[b, row, k] = qw[b, k]
                    for d in range(nv):
                        vs[b, row, d] = vw[b, d]


# ---------------------------------------------------------------------------------------------
# Python side
# ---------------------------------------------------------------------------------------------
@dataclass
class Trajectory:
    """A batched rollout.

    Attributes:
        q: (B, T+1, nq) configurations (free joints: position m, quaternion w-first).
        qd: (B, T+1, nv) velocities (free joints: body frame, linear then angular).
        u: (B, T, nu) the controls applied at each step, before clipping to the control range
            (open loop: the given controls; closed loop: k_t + K_t (x_t (-) xref_t); with a
            policy: k_t + pi(x_t)).
        dt: the step, s. integrator: its name.
    """

    q: np.ndarray
    qd: np.ndarray
    u: np.ndarray
    dt: float
    integrator: str


@dataclass
class _Inputs:
    """Validated rollout inputs, shared by rollout, rollout_vjp and linearize."""

    model: Model
    q0: np.ndarray
    v0: np.ndarray
    ff: np.ndarray
    K: np.ndarray
    xq: np.ndarray
    xv: np.ndarray
    closed: bool
    dt: float
    rk4: int
    integrator: str
    kl: float
    dl: float
    B: int
    T: int
    policy: MLPPolicy | None = None
    pol: np.ndarray | None = None  # the policy's kernel arrays (see MLPPolicy.pack), or 1-element dummies
    theta: np.ndarray | None = None
    hsize: int = 0
    contact: object = None  # a simad.Contact (smooth), or None
    cg: np.ndarray | None = None  # its packed table (contact_forces.pack), or a dummy

    @property
    def mode(self) -> int:
        """The kernels' control law: 0 open loop, 1 affine feedback, 2 MLP policy."""
        return 1 if self.closed else (2 if self.policy is not None else 0)


def _check_model(model: Model):
    if not isinstance(model, Model):
        raise InputError("model", f"expected a simad.Model, got {type(model).__name__}")
    if model.nv == 0:
        raise ModelError("the model has no degrees of freedom to simulate", element=f"model '{model.name}'", field="nv")
    require_invertible(model)


def _positive(x, name):
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise InputError(name, f"expected a number, got {type(x).__name__}") from None
    if not np.isfinite(v) or v <= 0:
        raise InputError(name, f"expected a finite number > 0, got {x!r}")
    return v


def _per_env(x, B, T, width, name, dims=1):
    """(B, T, *width) from (B, T, *width) or (T, *width) (broadcast over envs)."""
    a = np.asarray(x) if not isinstance(x, np.ndarray) else x
    tail = tuple(width) if isinstance(width, tuple) else (width,)
    if a.ndim == 1 + len(tail):
        a = as_array(a, (T,) + tail, name)
        return np.ascontiguousarray(np.broadcast_to(a, (B, T) + tail))
    return as_array(a, (B, T) + tail, name)


def prepare(model, q0, qd0, controls, dt, integrator, gains, q_ref, qd_ref, limit_stiffness, limit_damping,
            horizon=None, policy=None, contact=None) -> _Inputs:
    _check_model(model)
    q0b, _ = as_batch(model, q0, "q0")
    v0b, _ = as_batch(model, qd0, "qd0", model.nv)
    c = np.asarray(controls) if controls is not None else None
    B = max(q0b.shape[0], v0b.shape[0], c.shape[0] if c is not None and c.ndim == 3 else 1)
    if q0b.shape[0] == 1 and B > 1:  # one initial state shared by every env
        q0b = np.ascontiguousarray(np.repeat(q0b, B, 0))
    if v0b.shape[0] == 1 and B > 1:
        v0b = np.ascontiguousarray(np.repeat(v0b, B, 0))
    if v0b.shape[0] != B:
        raise InputError("qd0", f"expected {B} rows like q0 (or one row), got {v0b.shape[0]}")
    if q0b.shape[0] != B:
        raise InputError("q0", f"expected {B} rows like qd0 and controls (or one row), got {q0b.shape[0]}")
    dt = _positive(dt, "dt")
    if integrator not in INTEGRATORS:
        raise InputError("integrator", f"expected one of {sorted(INTEGRATORS)}, got {integrator!r}")
    kl = float(limit_stiffness)
    dl = float(limit_damping)
    for v, nm in ((kl, "limit_stiffness"), (dl, "limit_damping")):
        if not np.isfinite(v) or v < 0:
            raise InputError(nm, f"expected a finite number >= 0, got {v}")
    nu = model.nu
    if c is None:
        if horizon is None:
            raise InputError("controls", "expected an array (B, T, nu) or (T, nu); got None (or give steps=T)")
        try:
            T = int(horizon)
        except (TypeError, ValueError):
            raise InputError("steps", f"expected an integer horizon, got {horizon!r}") from None
    else:
        if c.ndim not in (2, 3):
            raise InputError("controls", f"expected shape (B, T, {nu}) or (T, {nu}), got {c.shape}")
        T = c.shape[-2]
    if T < 1 or T > MAX_STEPS:
        raise InputError("controls" if c is not None else "steps", f"horizon T must be in [1, {MAX_STEPS}], got {T}")
    nbytes = B * (T + 1) * (model.nq + model.nv + model.nu) * np.dtype(runtime.real_dtype()).itemsize
    if nbytes > MAX_BYTES:
        raise InputError("controls", f"B={B} x T={T} needs {nbytes / 2**30:.1f} GiB of trajectory, over the "
                                     f"{MAX_BYTES / 2**30:.0f} GiB limit per call; split the batch or the horizon")
    dtype = runtime.real_dtype()
    nup = max(nu, 1)
    if c is None:
        ff = np.zeros((B, T, nup), dtype)
    elif nu == 0:
        if c.shape[-1] != 0:
            raise InputError("controls", f"the model has no actuators: expected last dimension 0, got {c.shape}")
        ff = np.zeros((B, T, 1), dtype)
    else:
        ff = _per_env(c, B, T, nu, "controls")
    closed = gains is not None
    if closed:
        nv = model.nv
        K = _per_env(gains, B, T, (nu, 2 * nv), "gains") if nu else np.zeros((B, T, 1, 2 * nv), dtype)
        if q_ref is None:
            raise InputError("q_ref", "closed-loop rollouts need q_ref (B, T, nq) or (T, nq) with the gains")
        xq = _per_env(q_ref, B, T, model.nq, "q_ref")
        xv = _per_env(qd_ref, B, T, nv, "qd_ref") if qd_ref is not None else np.zeros((B, T, nv), dtype)
    else:
        if q_ref is not None or qd_ref is not None:
            raise InputError("q_ref", "references are only used with gains (closed loop)")
        K, xq, xv = _stand_ins(dtype)["open"]
    inp = _Inputs(model, q0b, v0b, ff, K, xq, xv, closed, dt, INTEGRATORS[integrator], integrator, kl, dl, B, T)
    if policy is not None:
        if not isinstance(policy, MLPPolicy):
            raise InputError("policy", f"expected a simad.MLPPolicy, got {type(policy).__name__}")
        if closed:
            raise InputError("policy", "a rollout takes either a policy or affine feedback gains, not both")
        policy.check(model)
        inp.policy = policy
        inp.pol, inp.theta, inp.hsize = policy.pack(dtype)
    else:
        inp.pol, inp.theta = _stand_ins(dtype)["policy"]
    if contact is not None:
        inp.contact = contact
        inp.cg = contact_forces.pack(model, contact, dt, dtype)
    else:
        inp.cg = _stand_ins(dtype)["contact"]
    return inp


_STAND_INS: dict = {}


def _stand_ins(dtype) -> dict:
    """The kernels' inputs of a feature a call does not use, one set per dtype (reused, so the
    launch sees the same arrays every call, see ``launch``): gains and references of an
    open-loop rollout, the policy's arrays, the empty contact table, the unstored controls.
    Kernels only read them."""
    key = np.dtype(dtype).str
    hit = _STAND_INS.get(key)
    if hit is None:
        hit = _STAND_INS[key] = {
            "open": (np.zeros((1, 1, 1, 1), dtype), np.zeros((1, 1, 1), dtype), np.zeros((1, 1, 1), dtype)),
            "policy": (np.zeros((1, 6), dtype), np.zeros(1, dtype)),
            "contact": contact_forces.no_contact(dtype),
            "us": np.zeros((1, 1, 1), dtype),
        }
    return hit


class _Work:
    """Per-env work buffers of the step kernels, zeroed (reused within a call).

    ``_Work.get`` hands out the same buffers to successive calls of the same sizes on a thread
    (zeroed again), up to ``_WORK_BYTES`` in all: small calls would otherwise allocate eleven
    arrays each time, and the launch re-set them (see ``launch``)."""

    def __init__(self, model: Model, B: int, dtype, hsize: int = 0):
        nq, nv, nu = model.nq, model.nv, max(model.nu, 1)
        self.pose = np.zeros((B, model.nframe, 12), dtype)
        self.S = np.zeros((B, model.nbody, _NS), dtype)
        self.qw, self.q0w = np.zeros((B, nq), dtype), np.zeros((B, nq), dtype)
        self.vw, self.tw, self.aw, self.v0w = (np.zeros((B, nv), dtype) for _ in range(4))
        self.uw = np.zeros((B, nu), dtype)
        self.dx = np.zeros((B, 2 * nv), dtype)
        self.ks = np.zeros((B, 9, nv), dtype)
        self.hw = np.zeros((B, 2 * hsize) if hsize else (1, 1), dtype)  # policy activations, cotangents
        self.nbytes = sum(a.nbytes for a in self.__dict__.values())

    @classmethod
    def get(cls, model: Model, B: int, dtype, hsize: int = 0) -> "_Work":
        key = (model.nq, model.nv, model.nu, model.nframe, model.nbody, B, np.dtype(dtype).str, hsize)
        pool = _work_pool.__dict__.setdefault("pool", {})
        w = pool.pop(key, None)
        if w is None:
            w = cls(model, B, dtype, hsize)
            if w.nbytes > _WORK_BYTES:
                return w
        else:
            for a in (w.pose, w.S, w.qw, w.q0w, w.vw, w.tw, w.aw, w.v0w, w.uw, w.dx, w.ks, w.hw):
                a.fill(0)
        pool[key] = w  # most recently used last
        while sum(x.nbytes for x in pool.values()) > _WORK_BYTES or len(pool) > 8:
            pool.pop(next(iter(pool)))
        return w


_work_pool = threading.local()
_WORK_BYTES = 64 << 20


_NO_TAPE: dict = {}


def no_tape(dtype):
    """The 1-element stand-ins for the tape arguments of an untaped launch."""
    key = np.dtype(dtype).str
    if key not in _NO_TAPE:
        _NO_TAPE[key] = (np.zeros((1, 1, 1, 1), dtype), np.zeros((1, 1, 1), dtype))
    return _NO_TAPE[key]


def run_forward(inp: _Inputs, q0, v0, t0: int, T: int, every: int, store_u: bool, work: _Work | None = None,
                tape=None):
    """Runs T steps from (q0, v0) starting at global step t0; returns qs, vs (rows every
    ``every`` steps and the last), us (B, T, nu) or None, and the status (B, 2). ``tape``:
    optional (St (B, T (1 + 3 rk4), nbody, tape_width), At (B, same, nv)) to fill with every
    stage (contact-free rollouts only), for ``diff``'s reverse pass."""
    m = inp.model
    dtype = q0.dtype
    B = q0.shape[0]
    rows = (T + every - 1) // every + 1
    qs = np.empty((B, rows, m.nq), dtype)
    vs = np.empty((B, rows, m.nv), dtype)
    us = np.empty((B, T, inp.ff.shape[2]), dtype) if store_u else _stand_ins(dtype)["us"]
    status = np.zeros((B, 2), np.int32)
    w = work or _Work.get(m, B, dtype, inp.hsize)
    k, d, c = kin_device(m), dyn_device(m), device(m)
    _rollout_kernel(q0, v0, inp.ff, inp.K, inp.xq, inp.xv, inp.pol, inp.theta, w.hw, k["topo"], k["geo"], d["dyn"],
                    _dof(d), c["act"], c["lim"], w.pose, w.S, w.qw, w.vw, w.uw, w.tw, w.aw, w.q0w, w.v0w, w.dx, w.ks, qs, vs, us,
                    status, t0, T, every, inp.dt, inp.rk4, inp.mode, int(store_u), inp.kl, inp.dl, inp.cg,
                    *(tape if tape is not None else no_tape(dtype)), int(tape is not None),
                    inp.contact is not None, *batch_mode(B))
    return qs, vs, (us if store_u else None), status


def raise_status(status: np.ndarray, what: str = "rollout"):
    bad = np.flatnonzero(status[:, 0])
    if bad.size:
        steps = status[bad, 0]
        env = int(bad[np.argmin(steps)])
        step, code = int(status[env, 0]), int(status[env, 1])
        raise NonFiniteError(FIELDS.get(code, "state"), env, step,
                             f"{what} diverged (NaN, inf or |qd| > {MAX_SPEED:g}; {bad.size} env(s) affected); "
                             "check dt, gains, limits and inputs")


def rollout(model: Model, q0, qd0, controls, dt: float, integrator: str = "semi_implicit_euler", *, gains=None,
            q_ref=None, qd_ref=None, limit_stiffness: float = LIMIT_STIFFNESS,
            limit_damping: float = LIMIT_DAMPING, policy: MLPPolicy | None = None,
            steps: int | None = None, contact=None) -> Trajectory:
    """Simulates B envs for T steps in one kernel launch.

    Args:
        model: the robot.
        q0: (B, nq) or (nq,) initial configurations. qd0: (B, nv) or (nv,) initial velocities.
            B is the largest leading size of q0, qd0 and controls; a single row is shared by
            every env.
        controls: (B, T, nu) or (T, nu) motor commands held over each step (units of the
            actuator: tau = gear * clip(u, ctrlrange)). With ``gains``, the feedforward k_t.
        dt: step, s. integrator: "semi_implicit_euler" (qd' = qd + dt a, q' = q (+) dt qd',
            like MuJoCo's Euler without damping) or "rk4".
        gains: optional (B, T, nu, 2 nv) or (T, nu, 2 nv) feedback K_t on x (-) xref = (difference
            (q_ref, q), qd - qd_ref): u_t = controls_t + K_t (x_t (-) xref_t).
        q_ref: (B, T, nq) or (T, nq) reference configurations (required with gains).
        qd_ref: (B, T, nv) or (T, nv) reference velocities (zero if omitted).
        limit_stiffness, limit_damping: soft joint-limit spring (N m/rad) and damper (N m s/rad).
        policy: optional ``simad.MLPPolicy``: u_t = controls_t + pi(x_t), evaluated inside the
            fused kernel (not together with gains).
        steps: the horizon T when ``controls`` is None (zero feedforward, e.g. a pure policy).
        contact: optional ``simad.Contact(mode="smooth", ...)``: the model's collision geoms
            touch the static geometry and the geoms of other kinematic trees, with smooth
            spring-damper contact and regularised Coulomb friction (``contact_forces.py``).
            None (the default) ignores the geoms.

    Returns:
        A ``Trajectory`` with q (B, T+1, nq), qd (B, T+1, nv) and the applied u (B, T, nu).

    Raises:
        InputError: a malformed argument (the field is named). NonFiniteError: the simulation
        produced NaN or inf (first env, step and field).
    """
    inp = prepare(model, q0, qd0, controls, dt, integrator, gains, q_ref, qd_ref, limit_stiffness, limit_damping,
                  steps, policy, contact)
    qs, vs, us, status = run_forward(inp, inp.q0, inp.v0, 0, inp.T, 1, True)
    raise_status(status)
    return Trajectory(qs, vs, us[:, :, : model.nu], inp.dt, inp.integrator)
