"""Batched forward kinematics, frame Jacobians and the reverse-mode VJP of forward kinematics.

Every public function takes a batch ``q`` of shape (B, nq) and runs one kernel launch for the
whole batch: a parallel loop over environments, a serial pass over the bodies inside. The
topology is data (packed arrays), so one compile serves every model.

The VJP is a hand-written adjoint (Taichi's autodiff gives wrong gradients for the
two-pass shape FK needs; DESIGN.md section 1): for a joint j with world axis w_j through the
point o_j, d(p_f)/d(q_j) = w_j x (p_f - o_j) and d(R_f)/d(q_j) = [w_j]x R_f for every frame f
below j, so the cotangents of all frames below j reduce to a force F = sum p_bar_f and a
moment about the world origin N = sum p_f x p_bar_f + t_f (t_f from R_f R_bar_f^T), and
q_bar_j = w_j . (N - o_j x F). F and N accumulate leaf to root in one backward pass.
"""


import threading

import numpy as np
import taichi as ti

from . import runtime
from .launch import fast_kernel
from .model.model import JointType, Model
from .tmath import POS, ROT, axis_angle, mat3, quat_to_mat, row_mat3, row_vec3, store_pose, vec3
from .validate import as_batch, check_frames

_REV, _PRI, _FREE = int(JointType.REVOLUTE), int(JointType.PRISMATIC), int(JointType.FREE)
SERIAL_BELOW = 16  # batches smaller than this run on one thread (a parallel launch costs ~70 us)


def batch_mode(B: int) -> tuple:
    """(spread, serial): the last two arguments of every batch kernel (see ``runtime.spread``)."""
    serial = B < SERIAL_BELOW
    return (1 if serial else runtime.spread(B)), serial


# ---------------------------------------------------------------------------------------------
# Packing: topology and geometry as two arrays (rows 0..nbody-1 bodies, nbody..nframe-1 sites)
# ---------------------------------------------------------------------------------------------
def pack_model(model: Model, dtype) -> dict:
    """Device arrays of a model for the kinematics kernels.

    ``topo`` (nframe, 4) int32: body rows (parent, joint type, qadr, vadr); site rows (body, 0, 0,
    0); row 0 (the world) holds (-1, FIXED, nbody, nv) as a header.
    ``geo`` (nframe, 18): placement rotation (9, row-major) and position (3) in the parent (or
    body, for a site) frame, joint axis (3), joint anchor (3).
    """
    nb, nf = model.nbody, model.nframe
    topo = np.zeros((nf, 4), np.int32)
    geo = np.zeros((nf, 18), dtype)
    topo[:nb, 0] = model.body_parent
    for i in range(1, nb):
        j = model.body_jnt[i]
        if j >= 0:
            topo[i, 1:4] = (model.jnt_type[j], model.jnt_qadr[j], model.jnt_vadr[j])
            geo[i, 12:15] = model.jnt_axis[j]
            geo[i, 15:18] = model.jnt_anchor[j]
    topo[0] = (-1, 0, nb, model.nv)
    geo[:nb, 0:9] = model.body_rot.reshape(nb, 9)
    geo[:nb, 9:12] = model.body_pos
    if model.nsite:
        topo[nb:, 0] = model.site_body
        geo[nb:, 0:9] = model.site_rot.reshape(-1, 9)
        geo[nb:, 9:12] = model.site_pos
    qlim = np.tile(np.array([-np.inf, np.inf]), (model.nq, 1))
    for j in range(model.njnt):
        if model.jnt_limited[j]:
            qlim[model.jnt_qadr[j]] = model.jnt_range[j]
    return {"topo": topo, "geo": geo, "qlim": qlim.astype(dtype)}


def device(model: Model) -> dict:
    return runtime.device_data(model, pack_model, "kinematics")


# ---------------------------------------------------------------------------------------------
# Taichi functions
# ---------------------------------------------------------------------------------------------
@ti.func
def frame_poses(q: ti.template(), topo: ti.template(), geo: ti.template(), pose: ti.template(), b):
    """World pose of every frame of env b into pose[b, f, :] (bodies parents-first, then sites)."""
    nbody = topo[0, 2]
    nframe = topo.shape[0]
    store_pose(pose, b, 0, ti.Matrix.identity(float, 3), ti.Vector([0.0, 0.0, 0.0]))
    for i in range(1, nbody):
        par, jt, qa = topo[i, 0], topo[i, 1], topo[i, 2]
        Rp = mat3(pose, b, par, ROT)
        pp = vec3(pose, b, par, POS)
        R = Rp @ row_mat3(geo, i, 0)
        p = pp + Rp @ row_vec3(geo, i, 9)
        a = row_vec3(geo, i, 12)
        if jt == _REV:
            c = row_vec3(geo, i, 15)
            Rj = axis_angle(a, q[b, qa])
            p += R @ (c - Rj @ c)
            R = R @ Rj
        elif jt == _PRI:
            p += R @ (a * q[b, qa])
        elif jt == _FREE:
            p += R @ ti.Vector([q[b, qa], q[b, qa + 1], q[b, qa + 2]])
            R = R @ quat_to_mat(q[b, qa + 3], q[b, qa + 4], q[b, qa + 5], q[b, qa + 6])
        store_pose(pose, b, i, R, p)
    for f in range(nbody, nframe):
        bi = topo[f, 0]
        Rb = mat3(pose, b, bi, ROT)
        store_pose(pose, b, f, Rb @ row_mat3(geo, f, 0), vec3(pose, b, bi, POS) + Rb @ row_vec3(geo, f, 9))


@ti.func
def frame_jacobian_into(topo: ti.template(), geo: ti.template(), pose: ti.template(), J: ti.template(), b, s, f):
    """J[b, s] (6, nv) of frame f: linear velocity of the frame origin then angular velocity,
    world axes (LOCAL_WORLD_ALIGNED). Needs pose[b] from ``frame_poses``; J[b, s] pre-zeroed."""
    nbody = topo[0, 2]
    pf = vec3(pose, b, f, POS)
    i = f
    if f >= nbody:
        i = topo[f, 0]
    while i > 0:
        jt, va = topo[i, 1], topo[i, 3]
        R = mat3(pose, b, i, ROT)
        p = vec3(pose, b, i, POS)
        if jt == _REV:
            w = R @ row_vec3(geo, i, 12)
            lin = w.cross(pf - (p + R @ row_vec3(geo, i, 15)))
            for k in ti.static(range(3)):
                J[b, s, k, va] = lin[k]
                J[b, s, 3 + k, va] = w[k]
        elif jt == _PRI:
            d = R @ row_vec3(geo, i, 12)
            for k in ti.static(range(3)):
                J[b, s, k, va] = d[k]
        elif jt == _FREE:
            r = pf - p
            for c in ti.static(range(3)):
                w = ti.Vector([R[0, c], R[1, c], R[2, c]])
                lin = w.cross(r)
                for k in ti.static(range(3)):
                    J[b, s, k, va + c] = w[k]
                    J[b, s, k, va + 3 + c] = lin[k]
                    J[b, s, 3 + k, va + 3 + c] = w[k]
        i = topo[i, 0]


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------
@fast_kernel
@ti.kernel
def _fk_kernel(
    q: ti.types.ndarray(ndim=2),
    topo: ti.types.ndarray(ndim=2),
    geo: ti.types.ndarray(ndim=2),
    pose: ti.types.ndarray(ndim=3),
    spread: ti.i32, serial: ti.template(),
):
    ti.loop_config(serialize=serial)
    for jb in range(q.shape[0] * spread):  # see runtime.spread
        if jb % spread != 0:
            continue
        b = jb // spread
        frame_poses(q, topo, geo, pose, b)


@fast_kernel
@ti.kernel
def _jacobian_kernel(
    q: ti.types.ndarray(ndim=2),
    topo: ti.types.ndarray(ndim=2),
    geo: ti.types.ndarray(ndim=2),
    sel: ti.types.ndarray(ndim=1),
    pose: ti.types.ndarray(ndim=3),
    J: ti.types.ndarray(ndim=4),
    sel_pose: ti.types.ndarray(ndim=3),
    spread: ti.i32, serial: ti.template(),
):
    """J[b, s] and sel_pose[b, s] of the frames sel[s]; pose is scratch (B, nframe, 12)."""
    ti.loop_config(serialize=serial)
    for jb in range(q.shape[0] * spread):  # see runtime.spread
        if jb % spread != 0:
            continue
        b = jb // spread
        frame_poses(q, topo, geo, pose, b)
        for s in range(sel.shape[0]):
            for r, c in ti.ndrange(6, J.shape[3]):
                J[b, s, r, c] = 0.0
            frame_jacobian_into(topo, geo, pose, J, b, s, sel[s])
            for k in ti.static(range(12)):
                sel_pose[b, s, k] = pose[b, sel[s], k]


@fast_kernel
@ti.kernel
def _fk_vjp_kernel(
    q: ti.types.ndarray(ndim=2),
    topo: ti.types.ndarray(ndim=2),
    geo: ti.types.ndarray(ndim=2),
    pose: ti.types.ndarray(ndim=3),
    cot: ti.types.ndarray(ndim=3),
    W: ti.types.ndarray(ndim=3),
    g: ti.types.ndarray(ndim=2),
    spread: ti.i32, serial: ti.template(),
):
    """Adjoint of FK: cot[b, f] = (R_bar row-major, p_bar) -> g[b] (nv), tangent space.
    W (B, nbody, 6) zero-initialised scratch: force F and moment N about the world origin."""
    ti.loop_config(serialize=serial)
    for jb in range(q.shape[0] * spread):  # see runtime.spread
        if jb % spread != 0:
            continue
        b = jb // spread
        frame_poses(q, topo, geo, pose, b)
        nbody = topo[0, 2]
        for f in range(topo.shape[0]):
            i = f
            if f >= nbody:
                i = topo[f, 0]
            R = mat3(pose, b, f, ROT)
            p = vec3(pose, b, f, POS)
            pb = vec3(cot, b, f, POS)
            A = R @ mat3(cot, b, f, ROT).transpose()
            n = p.cross(pb) + ti.Vector([A[1, 2] - A[2, 1], A[2, 0] - A[0, 2], A[0, 1] - A[1, 0]])
            for k in ti.static(range(3)):
                W[b, i, k] += pb[k]
                W[b, i, 3 + k] += n[k]
        for k in range(nbody - 1):
            i = nbody - 1 - k
            F = vec3(W, b, i, 0)
            N = vec3(W, b, i, 3)
            jt, va = topo[i, 1], topo[i, 3]
            R = mat3(pose, b, i, ROT)
            p = vec3(pose, b, i, POS)
            if jt == _REV:
                w = R @ row_vec3(geo, i, 12)
                o = p + R @ row_vec3(geo, i, 15)
                g[b, va] = w.dot(N - o.cross(F))
            elif jt == _PRI:
                g[b, va] = (R @ row_vec3(geo, i, 12)).dot(F)
            elif jt == _FREE:
                gl = R.transpose() @ F
                ga = R.transpose() @ (N - p.cross(F))
                for c in ti.static(range(3)):
                    g[b, va + c] = gl[c]
                    g[b, va + 3 + c] = ga[c]
            par = topo[i, 0]
            if par > 0:
                for c in ti.static(range(6)):
                    W[b, par, c] += W[b, i, c]


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def _split_pose(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Views (no copy) of packed poses (..., 12) as positions (..., 3) and rotations (..., 3, 3)."""
    return pose[..., POS : POS + 3], pose[..., ROT : ROT + 9].reshape(pose.shape[:-1] + (3, 3))


_scratch = threading.local()
_SCRATCH_BYTES = 256 << 20


def scratch(shape: tuple, dtype, tag: str = "") -> np.ndarray:
    """A reusable (never returned) work buffer of uninitialised memory: big batches would
    otherwise page-fault a fresh allocation on every call (measured: ~2-4 us per point of a
    1,000-point linearization). One buffer per (shape, dtype, tag) and thread; the least
    recently used go beyond 16 buffers or 256 MB. The caller must write before it reads."""
    st = _scratch.__dict__
    pool = st.setdefault("pool", {})
    key = (tuple(shape), np.dtype(dtype).str, tag)
    buf = pool.pop(key, None)
    if buf is None:
        buf = np.empty(shape, dtype)
        st["bytes"] = st.get("bytes", 0) + buf.nbytes
    pool[key] = buf  # most recently used last
    while len(pool) > 16 or (len(pool) > 1 and st["bytes"] > _SCRATCH_BYTES):
        st["bytes"] -= pool.pop(next(iter(pool))).nbytes
    return buf


def forward_kinematics(model: Model, q) -> tuple[np.ndarray, np.ndarray]:
    """World poses of every frame (bodies, then sites).

    Args:
        model: the robot.
        q: (B, nq) or (nq,) configurations (a 1-D q returns unbatched results).

    Returns:
        pos: (B, nframe, 3) m, frame origins in the world frame.
        rot: (B, nframe, 3, 3) frame orientations (columns are the frame axes in world).
    """
    qb, single = as_batch(model, q, "q")
    d = device(model)
    pose = np.empty((qb.shape[0], model.nframe, 12), qb.dtype)
    _fk_kernel(qb, d["topo"], d["geo"], pose, *batch_mode(qb.shape[0]))
    pos, rot = _split_pose(pose)
    return (pos[0], rot[0]) if single else (pos, rot)


def frame_jacobian(model: Model, q, frame, *, return_pose: bool = False):
    """Jacobian of one frame (or a list of frames) in Pinocchio's LOCAL_WORLD_ALIGNED convention.

    Rows 0-2: linear velocity of the frame origin, rows 3-5: angular velocity, both in world
    axes; columns: the nv velocity coordinates (free joints: local linear, local angular).
    Forward kinematics and the Jacobians run in one kernel launch.

    Args:
        q: (B, nq) or (nq,).
        frame: frame name or index, or a list of them.
        return_pose: also return the world pose of the frame(s): pos (B, 3) m and rot (B, 3, 3)
            (with a list: (B, nsel, 3) and (B, nsel, 3, 3)).

    Returns:
        J: (B, 6, nv) for one frame, (B, nsel, 6, nv) for a list (batch axis dropped for 1-D q);
        with ``return_pose``, the tuple (J, pos, rot).
    """
    qb, single = as_batch(model, q, "q")
    sel, one = check_frames(model, frame)
    d = device(model)
    B = qb.shape[0]
    J = np.empty((B, sel.size, 6, max(model.nv, 1)), qb.dtype)  # Taichi rejects 0-size arrays
    sel_pose = np.empty((B, sel.size, 12), qb.dtype)
    work = scratch((B, model.nframe, 12), qb.dtype)
    _jacobian_kernel(qb, d["topo"], d["geo"], sel, work, J, sel_pose, *batch_mode(B))
    J = J[..., : model.nv]
    pos, rot = _split_pose(sel_pose)
    outs = (J, pos, rot) if return_pose else (J,)
    if one:
        outs = tuple(o[:, 0] for o in outs)
    if single:
        outs = tuple(o[0] for o in outs)
    return outs if return_pose else outs[0]


def forward_kinematics_vjp(model: Model, q, pos_bar=None, rot_bar=None, *, space: str = "tangent") -> np.ndarray:
    """Reverse-mode product: cotangents on every frame pose -> gradient with respect to q.

    Computes q_bar = sum_f <pos_bar_f, d pos_f / dq> + <rot_bar_f, d rot_f / dq> for the poses
    returned by ``forward_kinematics``.

    Args:
        q: (B, nq) or (nq,).
        pos_bar: (B, nframe, 3) cotangent of the frame positions (None: zero).
        rot_bar: (B, nframe, 3, 3) cotangent of the frame rotation matrices (None: zero).
        space: "tangent" returns (B, nv): derivatives along the velocity directions used by
            ``integrate`` (free joints: local linear, local angular). "coords" returns (B, nq):
            the Euclidean gradient in the coordinates, free-joint quaternions differentiated
            through their normalisation (so the gradient is orthogonal to q's quaternion).
    """
    from .validate import as_array

    qb, single = as_batch(model, q, "q")
    B = qb.shape[0]
    shape_p = (B, model.nframe, 3) if not single else (model.nframe, 3)
    cot = np.zeros((B, model.nframe, 12), qb.dtype)
    if pos_bar is not None:
        cot[..., POS : POS + 3] = as_array(pos_bar, shape_p, "pos_bar").reshape(B, model.nframe, 3)
    if rot_bar is not None:
        rb = as_array(rot_bar, shape_p + (3,), "rot_bar").reshape(B, model.nframe, 9)
        cot[..., ROT : ROT + 9] = rb
    if space not in ("tangent", "coords"):
        from .errors import InputError

        raise InputError("space", f"expected 'tangent' or 'coords', got '{space}'")
    d = device(model)
    pose = scratch((B, model.nframe, 12), qb.dtype)
    W = np.zeros((B, model.nbody, 6), qb.dtype)
    g = np.zeros((B, model.nv), qb.dtype)
    if model.nv:
        _fk_vjp_kernel(qb, d["topo"], d["geo"], pose, cot, W, g, *batch_mode(B))
    if space == "coords":
        from .configuration import tangent_to_coords_gradient

        g = tangent_to_coords_gradient(model, qb, g)
    return g[0] if single else g
