"""Batched rigid-body dynamics of articulated trees: RNEA, CRBA and ABA (Featherstone).

Formulation: every spatial quantity is in world coordinates about the world origin, ordered
(angular; linear). A body's joint-motion columns are then S = (w, o x w) for a revolute joint
with world axis w through the point o, (0, d) for a prismatic joint, and for a free joint the
six body-frame directions. Working in one frame removes every frame-to-frame transform from
the recursions: composite and articulated inertias accumulate by plain addition.

Cross products (Featherstone): motion (w, v) xm (w2, v2) = (w x w2, w x v2 + v x w2);
force (w, v) x* (n, f) = (w x n + v x f, w x f). Gravity enters as a base acceleration
a_0 = (0, -g). Joint damping, springs and armature are part of the dynamics:
M(q) qdd + h(q, qd) + damping * qd + stiffness * (q - springref) = tau, with armature added to
M's diagonal (the spring on 1-dof joints).

Every call is one kernel launch for the whole batch (a parallel loop over envs, serial passes
over the bodies inside), and the topology is data, so one compile serves every model.
"""

import numpy as np
import taichi as ti

from . import runtime
from .contact_forces import SFC, SV, contact_wrenches
from .kinematics import _FREE, _PRI, _REV, batch_mode, frame_poses, scratch
from .kinematics import device as kin_device
from .launch import fast_kernel
from .model.model import JointType, Model
from .tmath import POS, ROT, mat3, row_mat3, row_vec3, vec3
from .validate import as_batch

# offsets in the per-body scratch row (B, nbody, _NS)
_V, _C, _A, _P, _U1, _IA, _U, _DI, _DW, _FC = 0, 6, 12, 18, 24, 30, 66, 102, 138, SFC
_PS, _AS = SFC + 6, SFC + 12  # M^-1 solves' own force and acceleration sweeps (adjoint.aba_solve)
_NS = SFC + 18
assert _V == SV
NDOF = 4  # columns of the dof table: damping, armature, spring stiffness, spring rest position


def pack_dynamics(model: Model, dtype) -> dict:
    """``dyn`` (nbody, 13): mass, COM in the body frame (3), inertia about the COM (9);
    row 0 (the world, massless) holds gravity in columns 1-3. ``dof`` (nv, NDOF): damping,
    armature, spring stiffness, spring rest position."""
    nb = model.nbody
    dyn = np.zeros((nb, 13), dtype)
    dyn[:, 0] = model.body_mass
    dyn[:, 1:4] = model.body_com
    dyn[:, 4:13] = model.body_inertia.reshape(nb, 9)
    dyn[0, :] = 0.0
    dyn[0, 1:4] = model.gravity
    one_dof = np.array([model.jnt_type[j] != JointType.FREE for j in model.dof_jnt], dtype=bool).reshape(-1)
    stiff = np.where(one_dof, model.dof_stiffness, 0.0)  # springs act on 1-dof joints only
    dof = np.stack([model.dof_damping, model.dof_armature, stiff, model.dof_springref],
                   1).astype(dtype).reshape(model.nv, NDOF)
    return {"dyn": dyn, "dof": dof}


def device(model: Model) -> dict:
    return runtime.device_data(model, pack_dynamics, "dynamics")


# ---------------------------------------------------------------------------------------------
# spatial algebra
# ---------------------------------------------------------------------------------------------
@ti.func
def _v6(a: ti.template(), b, i, off):
    return ti.Vector([a[b, i, off + k] for k in ti.static(range(6))])


@ti.func
def _st6(a: ti.template(), b, i, off, v):
    for k in ti.static(range(6)):
        a[b, i, off + k] = v[k]


@ti.func
def _m6(a: ti.template(), b, i, off):
    return ti.Matrix([[a[b, i, off + 6 * r + c] for c in ti.static(range(6))] for r in ti.static(range(6))])


@ti.func
def _stm6(a: ti.template(), b, i, off, M):
    for r, c in ti.static(ti.ndrange(6, 6)):
        a[b, i, off + 6 * r + c] = M[r, c]


@ti.func
def _top(v):
    return ti.Vector([v[0], v[1], v[2]])


@ti.func
def _bot(v):
    return ti.Vector([v[3], v[4], v[5]])


@ti.func
def _join(a, b):
    return ti.Vector([a[0], a[1], a[2], b[0], b[1], b[2]])


@ti.func
def cross_motion(v, m):
    w, u = _top(v), _bot(v)
    return _join(w.cross(_top(m)), w.cross(_bot(m)) + u.cross(_top(m)))


@ti.func
def cross_force(v, f):
    w, u = _top(v), _bot(v)
    return _join(w.cross(_top(f)) + u.cross(_bot(f)), w.cross(_bot(f)))


@ti.func
def body_inertia(dyn: ti.template(), pose: ti.template(), b, i):
    """Spatial inertia (6x6) of body i about the world origin, world axes."""
    m = dyn[i, 0]
    R = mat3(pose, b, i, ROT)
    c = vec3(pose, b, i, POS) + R @ row_vec3(dyn, i, 1)
    Ic = R @ row_mat3(dyn, i, 4) @ R.transpose()
    C = ti.Matrix([[0.0, -c[2], c[1]], [c[2], 0.0, -c[0]], [-c[1], c[0], 0.0]])
    TL = Ic - m * (C @ C)
    M = ti.Matrix.zero(float, 6, 6)
    for r, k in ti.static(ti.ndrange(3, 3)):
        M[r, k] = TL[r, k]
        M[r, 3 + k] = m * C[r, k]
        M[3 + r, k] = -m * C[r, k]
    for r in ti.static(range(3)):
        M[3 + r, 3 + r] = m
    return M


@ti.func
def free_col(R, p, k):
    """Motion column k of a free joint: body-frame linear (k < 3) or angular (k >= 3) unit motion."""
    e = ti.Vector([R[0, k % 3], R[1, k % 3], R[2, k % 3]])
    s = _join(ti.Vector([0.0, 0.0, 0.0]), e)
    if k >= 3:
        s = _join(e, p.cross(e))
    return s


@ti.func
def motion_col(topo: ti.template(), geo: ti.template(), pose: ti.template(), b, i, k):
    """Column k of body i's joint-motion subspace (world, about the origin)."""
    jt = topo[i, 1]
    R = mat3(pose, b, i, ROT)
    s = ti.Vector.zero(float, 6)
    if jt == _REV:
        w = R @ row_vec3(geo, i, 12)
        o = vec3(pose, b, i, POS) + R @ row_vec3(geo, i, 15)
        s = _join(w, o.cross(w))
    elif jt == _PRI:
        s = _join(ti.Vector([0.0, 0.0, 0.0]), R @ row_vec3(geo, i, 12))
    elif jt == _FREE:
        s = free_col(R, vec3(pose, b, i, POS), k)
    return s


@ti.func
def ndof(jt):
    n = 0
    if jt == _REV or jt == _PRI:
        n = 1
    elif jt == _FREE:
        n = 6
    return n


@ti.func
def velocities(qd: ti.template(), topo: ti.template(), geo: ti.template(), pose: ti.template(), S: ti.template(), b):
    """Body spatial velocities V_i and bias accelerations c_i = V_i xm (S_i qd_i) into S[b]."""
    nbody = topo[0, 2]
    _st6(S, b, 0, _V, ti.Vector.zero(float, 6))
    for i in range(1, nbody):
        jt, va = topo[i, 1], topo[i, 3]
        vj = ti.Vector.zero(float, 6)
        for k in range(ndof(jt)):
            vj += motion_col(topo, geo, pose, b, i, k) * qd[b, va + k]
        V = _v6(S, b, topo[i, 0], _V) + vj
        _st6(S, b, i, _V, V)
        _st6(S, b, i, _C, cross_motion(V, vj))


# ---------------------------------------------------------------------------------------------
# RNEA: tau = M qdd + h + damping qd + stiffness (q - springref) (armature included)
# ---------------------------------------------------------------------------------------------
@ti.func
def spring(q: ti.template(), dof: ti.template(), b, qa, d):
    """The joint spring's force on dof d (coordinate qa) of a 1-dof joint: stiffness (q - springref)."""
    return dof[d, 2] * (q[b, qa] - dof[d, 3])


@ti.func
def rnea_env(q: ti.template(), qd: ti.template(), qdd: ti.template(), topo: ti.template(), geo: ti.template(),
             dyn: ti.template(), dof: ti.template(), pose: ti.template(), S: ti.template(), tau: ti.template(), b,
             cg: ti.template()):
    """tau = RNEA(q, qd, qdd). With a contact table cg (else the int 0), minus J^T F_ext of the
    contact wrenches that ``aba_env`` left in S at the same (q, qd)."""
    nbody = topo[0, 2]
    frame_poses(q, topo, geo, pose, b)
    velocities(qd, topo, geo, pose, S, b)
    g = row_vec3(dyn, 0, 1)
    _st6(S, b, 0, _A, _join(ti.Vector([0.0, 0.0, 0.0]), -g))
    for i in range(1, nbody):
        jt, va = topo[i, 1], topo[i, 3]
        A = _v6(S, b, topo[i, 0], _A) + _v6(S, b, i, _C)
        for k in range(ndof(jt)):
            A += motion_col(topo, geo, pose, b, i, k) * qdd[b, va + k]
        _st6(S, b, i, _A, A)
    rnea_forces(topo, dyn, pose, S, b, cg)
    for i in range(1, nbody):
        jt, va = topo[i, 1], topo[i, 3]
        f = _v6(S, b, i, _P)
        for k in range(ndof(jt)):
            d = va + k
            tau[b, d] = motion_col(topo, geo, pose, b, i, k).dot(f) + dof[d, 0] * qd[b, d] + dof[d, 1] * qdd[b, d]
        if jt == _REV or jt == _PRI:
            tau[b, va] += spring(q, dof, b, topo[i, 2], va)


@ti.func
def rnea_forces(topo: ti.template(), dyn: ti.template(), pose: ti.template(), S: ti.template(), b, cg: ti.template()):
    """RNEA's backward half: the subtree force sums P_i = sum over the subtree of
    I_k A_k + V_k x* I_k V_k (minus the contact wrenches when cg has pairs), from the poses and
    the V, A in S (``rnea_env``'s forward half, or ``aba_env`` at the same q, qd: its outward
    pass leaves the same A)."""
    nbody = topo[0, 2]
    for i in range(1, nbody):
        Ib = body_inertia(dyn, pose, b, i)
        V = _v6(S, b, i, _V)
        P = Ib @ _v6(S, b, i, _A) + cross_force(V, Ib @ V)
        if ti.static(not isinstance(cg, int)):
            if cg[0, 0] > 0:
                P -= _v6(S, b, i, _FC)
        _st6(S, b, i, _P, P)
    for kk in range(nbody - 1):
        i = nbody - 1 - kk
        par = topo[i, 0]
        if par > 0:
            _st6(S, b, par, _P, _v6(S, b, par, _P) + _v6(S, b, i, _P))


@fast_kernel
@ti.kernel
def _rnea_kernel(q: ti.types.ndarray(ndim=2), qd: ti.types.ndarray(ndim=2), qdd: ti.types.ndarray(ndim=2),
                 topo: ti.types.ndarray(ndim=2), geo: ti.types.ndarray(ndim=2), dyn: ti.types.ndarray(ndim=2),
                 dof: ti.types.ndarray(ndim=2), pose: ti.types.ndarray(ndim=3), S: ti.types.ndarray(ndim=3),
                 tau: ti.types.ndarray(ndim=2), spread: ti.i32, serial: ti.template()):
    ti.loop_config(serialize=serial)
    for jb in range(q.shape[0] * spread):  # see runtime.spread
        if jb % spread != 0:
            continue
        b = jb // spread
        rnea_env(q, qd, qdd, topo, geo, dyn, dof, pose, S, tau, b, 0)


# ---------------------------------------------------------------------------------------------
# CRBA: the joint-space mass matrix (armature on the diagonal)
# ---------------------------------------------------------------------------------------------
@fast_kernel
@ti.kernel
def _crba_kernel(q: ti.types.ndarray(ndim=2), topo: ti.types.ndarray(ndim=2), geo: ti.types.ndarray(ndim=2),
                 dyn: ti.types.ndarray(ndim=2), dof: ti.types.ndarray(ndim=2), pose: ti.types.ndarray(ndim=3),
                 S: ti.types.ndarray(ndim=3), M: ti.types.ndarray(ndim=3), spread: ti.i32, serial: ti.template()):
    ti.loop_config(serialize=serial)
    for jb in range(q.shape[0] * spread):  # see runtime.spread
        if jb % spread != 0:
            continue
        b = jb // spread
        nbody = topo[0, 2]
        frame_poses(q, topo, geo, pose, b)
        for r, c in ti.ndrange(M.shape[1], M.shape[2]):
            M[b, r, c] = 0.0
        for i in range(1, nbody):
            _stm6(S, b, i, _IA, body_inertia(dyn, pose, b, i))
        for kk in range(nbody - 1):
            i = nbody - 1 - kk
            Ic = _m6(S, b, i, _IA)
            jt, va = topo[i, 1], topo[i, 3]
            for k in range(ndof(jt)):
                F = Ic @ motion_col(topo, geo, pose, b, i, k)
                j = i
                while j > 0:
                    jj, vj = topo[j, 1], topo[j, 3]
                    for kj in range(ndof(jj)):
                        x = F.dot(motion_col(topo, geo, pose, b, j, kj))
                        M[b, va + k, vj + kj] = x
                        M[b, vj + kj, va + k] = x
                    j = topo[j, 0]
                M[b, va + k, va + k] += dof[va + k, 1]
            par = topo[i, 0]
            if par > 0:
                _stm6(S, b, par, _IA, _m6(S, b, par, _IA) + Ic)


# ---------------------------------------------------------------------------------------------
# ABA: qdd = M^-1 (tau - h - damping qd - stiffness (q - springref))
# ---------------------------------------------------------------------------------------------
@ti.func
def _aba_free_inward(qd: ti.template(), tau: ti.template(), dof: ti.template(), pose: ti.template(), S: ti.template(),
                     b, i, va, par, IA, pA):
    """ABA inward step of a 6-dof free joint, in loops (not unrolled: keeps the compile small).
    Scratch: U (6x6, column k at _U + 6k), D^-1 at _DI, D's work copy at _DW, u at _U1."""
    R = mat3(pose, b, i, ROT)
    p = vec3(pose, b, i, POS)
    for k in range(6):
        s = free_col(R, p, k)
        Uk = IA @ s
        _st6(S, b, i, _U + 6 * k, Uk)
        S[b, i, _U1 + k] = tau[b, va + k] - dof[va + k, 0] * qd[b, va + k] - s.dot(pA)
    for k1, k2 in ti.ndrange(6, 6):
        d = free_col(R, p, k1).dot(_v6(S, b, i, _U + 6 * k2))
        if k1 == k2:
            d += dof[va + k1, 1]
        S[b, i, _DW + 6 * k1 + k2] = d
        S[b, i, _DI + 6 * k1 + k2] = 1.0 if k1 == k2 else 0.0
    for c in range(6):  # Gauss-Jordan on the SPD D: no pivoting needed
        piv = 1.0 / S[b, i, _DW + 7 * c]
        for k in range(6):
            S[b, i, _DW + 6 * c + k] *= piv
            S[b, i, _DI + 6 * c + k] *= piv
        for r in range(6):
            if r != c:
                f = S[b, i, _DW + 6 * r + c]
                for k in range(6):
                    S[b, i, _DW + 6 * r + k] -= f * S[b, i, _DW + 6 * c + k]
                    S[b, i, _DI + 6 * r + k] -= f * S[b, i, _DI + 6 * c + k]
    if par > 0:
        # Ia = IA - U D^-1 U^T ; pa = pA + Ia c + U D^-1 u, added to the parent
        for r, c in ti.ndrange(6, 6):
            acc = IA[r, c]
            for k1, k2 in ti.ndrange(6, 6):
                acc -= S[b, i, _U + 6 * k1 + r] * S[b, i, _DI + 6 * k1 + k2] * S[b, i, _U + 6 * k2 + c]
            S[b, i, _DW + 6 * r + c] = acc
        cb = _v6(S, b, i, _C)
        for r in range(6):
            acc = pA[r]
            for c in range(6):
                acc += S[b, i, _DW + 6 * r + c] * cb[c]
            for k1, k2 in ti.ndrange(6, 6):
                acc += S[b, i, _U + 6 * k1 + r] * S[b, i, _DI + 6 * k1 + k2] * S[b, i, _U1 + k2]
            S[b, par, _P + r] += acc
        for r, c in ti.ndrange(6, 6):
            S[b, par, _IA + 6 * r + c] += S[b, i, _DW + 6 * r + c]


@ti.func
def _aba_free_outward(pose: ti.template(), S: ti.template(), qdd: ti.template(), b, i, va, A):
    """qdd = D^-1 (u - U^T A) of a free joint; returns A + S qdd."""
    R = mat3(pose, b, i, ROT)
    p = vec3(pose, b, i, POS)
    for k in range(6):
        S[b, i, _DW + k] = S[b, i, _U1 + k] - _v6(S, b, i, _U + 6 * k).dot(A)
    Anew = A
    for k1 in range(6):
        x = 0.0
        for k2 in range(6):
            x += S[b, i, _DI + 6 * k1 + k2] * S[b, i, _DW + k2]
        qdd[b, va + k1] = x
        Anew += free_col(R, p, k1) * x
    return Anew


@ti.func
def aba_env(q: ti.template(), qd: ti.template(), tau: ti.template(), topo: ti.template(), geo: ti.template(),
            dyn: ti.template(), dof: ti.template(), pose: ti.template(), S: ti.template(), qdd: ti.template(), b,
            cg: ti.template()):
    """qdd = ABA(q, qd, tau). With a contact table cg (else the int 0), the contact wrenches of
    ``contact_forces`` (stored in S) act on the bodies as external forces."""
    nbody = topo[0, 2]
    frame_poses(q, topo, geo, pose, b)
    velocities(qd, topo, geo, pose, S, b)
    if ti.static(not isinstance(cg, int)):
        if cg[0, 0] > 0:  # a table with pairs (see contact_forces.pack)
            contact_wrenches(cg, pose, S, b, nbody)
    for i in range(1, nbody):
        Ib = body_inertia(dyn, pose, b, i)
        V = _v6(S, b, i, _V)
        _stm6(S, b, i, _IA, Ib)
        pA = cross_force(V, Ib @ V)
        if ti.static(not isinstance(cg, int)):
            if cg[0, 0] > 0:
                pA -= _v6(S, b, i, _FC)
        _st6(S, b, i, _P, pA)
    for kk in range(nbody - 1):
        i = nbody - 1 - kk
        jt, va, par = topo[i, 1], topo[i, 3], topo[i, 0]
        IA = _m6(S, b, i, _IA)
        pA = _v6(S, b, i, _P)
        if jt == _FREE:
            _aba_free_inward(qd, tau, dof, pose, S, b, i, va, par, IA, pA)
        elif jt == _REV or jt == _PRI:
            s = motion_col(topo, geo, pose, b, i, 0)
            U = IA @ s
            D = s.dot(U) + dof[va, 1]
            u = tau[b, va] - dof[va, 0] * qd[b, va] - spring(q, dof, b, topo[i, 2], va) - s.dot(pA)
            _st6(S, b, i, _U, U)
            S[b, i, _DI] = 1.0 / D
            S[b, i, _U1] = u
            if par > 0:
                Ia = IA - U.outer_product(U) / D
                pa = pA + Ia @ _v6(S, b, i, _C) + U * (u / D)
                _stm6(S, b, par, _IA, _m6(S, b, par, _IA) + Ia)
                _st6(S, b, par, _P, _v6(S, b, par, _P) + pa)
        elif par > 0:  # a fixed joint passes everything to its parent
            _stm6(S, b, par, _IA, _m6(S, b, par, _IA) + IA)
            _st6(S, b, par, _P, _v6(S, b, par, _P) + pA)
    g = row_vec3(dyn, 0, 1)
    _st6(S, b, 0, _A, _join(ti.Vector([0.0, 0.0, 0.0]), -g))
    for i in range(1, nbody):
        jt, va = topo[i, 1], topo[i, 3]
        A = _v6(S, b, topo[i, 0], _A) + _v6(S, b, i, _C)
        if jt == _FREE:
            A = _aba_free_outward(pose, S, qdd, b, i, va, A)
        elif jt == _REV or jt == _PRI:
            x = S[b, i, _DI] * (S[b, i, _U1] - _v6(S, b, i, _U).dot(A))
            qdd[b, va] = x
            A += motion_col(topo, geo, pose, b, i, 0) * x
        _st6(S, b, i, _A, A)


@fast_kernel
@ti.kernel
def _aba_kernel(q: ti.types.ndarray(ndim=2), qd: ti.types.ndarray(ndim=2), tau: ti.types.ndarray(ndim=2),
                topo: ti.types.ndarray(ndim=2), geo: ti.types.ndarray(ndim=2), dyn: ti.types.ndarray(ndim=2),
                dof: ti.types.ndarray(ndim=2), pose: ti.types.ndarray(ndim=3), S: ti.types.ndarray(ndim=3),
                qdd: ti.types.ndarray(ndim=2), spread: ti.i32, serial: ti.template()):
    ti.loop_config(serialize=serial)
    for jb in range(q.shape[0] * spread):  # see runtime.spread
        if jb % spread != 0:
            continue
        b = jb // spread
        aba_env(q, qd, tau, topo, geo, dyn, dof, pose, S, qdd, b, 0)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def _batch3(model, q, a, b, names):
    qb, single = as_batch(model, q, names[0])
    ab, s1 = as_batch(model, a, names[1], model.nv)
    bb, s2 = as_batch(model, b, names[2], model.nv)
    B = qb.shape[0]
    for arr, nm in ((ab, names[1]), (bb, names[2])):
        if arr.shape[0] != B:
            from .errors import InputError

            raise InputError(nm, f"expected {B} rows like {names[0]}, got {arr.shape[0]}")
    return qb, ab, bb, single


def _buffers(model, B, dtype):
    return scratch((B, model.nframe, 12), dtype), scratch((B, model.nbody, _NS), dtype, "dynamics.S")


def require_invertible(model: Model) -> None:
    """Raises ModelError when forward dynamics is undefined for the model at every
    configuration: every body massless, or a joint that moves no mass (``Model.massless_joints``:
    its row of M(q) is zero, and the ABA would divide by zero)."""
    from .errors import ModelError

    if model.__dict__.get("_invertible"):  # checked before (a model's masses are fixed: replace() copies)
        return
    if model.nv and model.body_mass.sum() + model.dof_armature.sum() <= 0:
        raise ModelError("every body is massless: forward dynamics is undefined", element=f"model '{model.name}'",
                         field="body_mass")
    dead = model.massless_joints
    if dead:
        more = f" (and {len(dead) - 1} more: {', '.join(dead[1:6])}{', ...' if len(dead) > 6 else ''})" if len(dead) > 1 else ""
        raise ModelError(f"moves no mass or inertia{more}: the mass matrix is singular and forward dynamics is "
                         "undefined; give the links below it mass and inertia, or the joint armature",
                         element=f"joint '{dead[0]}'", field="body_mass")
    object.__setattr__(model, "_invertible", True)


def forward_dynamics(model: Model, q, qd, tau) -> np.ndarray:
    """Joint accelerations by the articulated-body algorithm.

    Args:
        q: (B, nq) or (nq,) configurations. qd: (B, nv) velocities (free joints: body frame).
        tau: (B, nv) generalised forces (N m for revolute, N for prismatic dofs; a free joint's
            six entries are a body-frame force then torque about the body origin).

    Returns:
        qdd: (B, nv) with M(q) qdd + h(q, qd) + damping * qd + stiffness * (q - springref) = tau
            (armature in M).

    Raises:
        InputError: a malformed or non-finite argument (named). ModelError: a joint that moves
        no mass (``Model.massless_joints``). NonFiniteError ("qdd", first env): M(q) singular at
        that configuration (e.g. a point mass on a hinge's axis).
    """
    qb, qdb, tb, single = _batch3(model, q, qd, tau, ("q", "qd", "tau"))
    require_invertible(model)
    k, d = kin_device(model), device(model)
    pose, S = _buffers(model, qb.shape[0], qb.dtype)
    qdd = np.zeros((qb.shape[0], max(model.nv, 1)), qb.dtype)
    _aba_kernel(qb, qdb, tb, k["topo"], k["geo"], d["dyn"], _dof(d), pose, S, qdd, *batch_mode(qb.shape[0]))
    qdd = qdd[:, : model.nv]
    if not np.isfinite(qdd).all():  # finite inputs (validated): M(q) is singular at this q
        from .errors import NonFiniteError

        raise NonFiniteError("qdd", int(np.argwhere(~np.isfinite(qdd))[0][0]), None,
                             "the mass matrix is singular at this configuration (mass on a joint axis only?)")
    return qdd[0] if single else qdd


def inverse_dynamics(model: Model, q, qd, qdd) -> np.ndarray:
    """Generalised forces tau (B, nv) = M(q) qdd + h(q, qd) + damping * qd + stiffness * (q - springref)
    (RNEA)."""
    qb, qdb, ab, single = _batch3(model, q, qd, qdd, ("q", "qd", "qdd"))
    k, d = kin_device(model), device(model)
    pose, S = _buffers(model, qb.shape[0], qb.dtype)
    tau = np.zeros((qb.shape[0], max(model.nv, 1)), qb.dtype)
    _rnea_kernel(qb, qdb, ab, k["topo"], k["geo"], d["dyn"], _dof(d), pose, S, tau, *batch_mode(qb.shape[0]))
    tau = tau[:, : model.nv]
    return tau[0] if single else tau


def mass_matrix(model: Model, q) -> np.ndarray:
    """The joint-space inertia matrix M(q) (B, nv, nv), symmetric, armature on the diagonal (CRBA)."""
    qb, single = as_batch(model, q, "q")
    k, d = kin_device(model), device(model)
    pose, S = _buffers(model, qb.shape[0], qb.dtype)
    nv = max(model.nv, 1)
    M = np.zeros((qb.shape[0], nv, nv), qb.dtype)
    _crba_kernel(qb, k["topo"], k["geo"], d["dyn"], _dof(d), pose, S, M, *batch_mode(qb.shape[0]))
    M = M[:, : model.nv, : model.nv]
    return M[0] if single else M


def _dof(d):
    """The dof table, padded to one row when nv == 0 (Taichi rejects 0-size arrays)."""
    return d["dof"] if d["dof"].shape[0] else np.zeros((1, NDOF), d["dyn"].dtype)
