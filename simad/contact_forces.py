"""Smooth contact for articulated models: geom-pair forces that enter the dynamics as external
body wrenches, and their hand-written adjoint.

This is what ``simad.rollout(..., contact=simad.Contact(mode="smooth"))`` runs: any tree of
joints (fixed or floating base, revolute, prismatic, free) whose bodies carry collision geoms
touches the static geometry and the geoms of other kinematic trees (a robot and a ball, two
robots). Geoms of one tree do not collide with each other (no self-collision, like PyBullet's
default).

Per contact (a geom pair's contact k, same narrow phase as ``contact.py``: gap > 0 apart, unit
normal n from geom a to geom b, the contact point x midway between the surfaces):

    phi  = softness * softplus(-gap / softness)             (penetration, smoothed)
    gate = sigmoid(-gap / softness)
    f_n  = max(k phi - c (v_rel . n) gate, 0),  k = m_eff (2 pi / timeconst)^2,  c = 2 zeta m_eff 2 pi / timeconst
    f_t  = -c v_t,  c = c_mu c_max / (c_mu + c_max),  c_mu = mu f_n / sqrt(|v_t|^2 + friction_eps^2),  c_max = m_eff / (4 dt)
    F    = f_n n + f_t on body b at x, -F on body a

with v_rel the velocity of the point x of body b relative to body a, zeta from the restitution
(as in ``contact.py``'s smooth mode) and the pair's Box2D-style coefficients. The effective mass
is that of the two geoms at the model's reference configuration qpos0 (the idea of MuJoCo's
``body_invweight0``): m_eff = 1 / (w_a + w_b), where w_g is the largest translational inverse
mass of geom g's centre (the top eigenvalue of J M^-1 J^T, J its 3 x nv Jacobian; for a geom
spinning about its centre, L^2 times the rotational one, L its bounding radius) and 0 for static
geometry: the mass of the geom's lightest direction, so the spring and the damper stay within
explicit integration's stability limits whichever way the contact pushes (a foot at the end of a
light leg gets the leg's mass, not the robot's: it sinks more, it does not blow up). A free
sphere hit through its centre has m_eff = m, as in ``contact.py``. It is a constant of the
model: the stiffness does not follow the configuration, and the gradients with respect to the
body masses and inertias do not see it (they differ from finite differences that re-pack the
model by that much).

Friction: the regularised Coulomb law is a viscous drag of slope mu f_n / sqrt(|v_t|^2 + eps^2)
at low slip, which explicit integration only survives below ~2 m_eff / dt (less when several
contacts load one body). The slope is therefore capped smoothly: f_t = -c v_t with
c = c_mu c_max / (c_mu + c_max), c_mu = mu f_n / sqrt(|v_t|^2 + friction_eps^2),
c_max = m_eff / (4 dt). Static friction then holds up to a creep speed of about
friction_eps (1 + c_mu / c_max) times the load ratio.

The wrenches (x cross F, F) (world, about the origin, the dynamics' convention) enter the
articulated-body algorithm as external forces: M qdd + h = tau + sum_i J_i^T F_i.

Pairs: plane with sphere (1 contact), capsule (2, its end spheres), box (8 corners); sphere with
sphere, capsule, box (1 each); capsule with box (3: end spheres, and the point of the axis
nearest the box centre). Capsule-capsule and box-box pairs between two bodies that can collide
are rejected when the rollout is prepared (ModelError naming the geoms). Planes are static.

Gradients: the adjoint below (``contact_vjp``) pulls the wrench cotangents back through the
force law, the narrow phase and the geom poses into the body poses and velocities (then the
dynamics' own adjoint takes them to q and qd), and into ``geom_size``, ``geom_friction`` and
``geom_restitution``. Non-smooth points: the clamp f_n >= 0 and the clamps of the closest point
on a segment or a box pass the gradient of the active piece; the deepest-face choice inside a
box is piecewise constant; the restitution floor 1e-6 and the Box2D max(e_a, e_b) send the
gradient to the active value; normals and slip directions are regularised (1e-12, friction_eps).
"""


import numpy as np
import taichi as ti

from .errors import InputError, ModelError
from .model.model import GeomType, Model
from .tmath import POS, ROT, mat3, vec3

A2, A3 = ti.types.ndarray(ndim=2), ti.types.ndarray(ndim=3)  # real-function argument types
SV = 0  # S offset of a body's spatial velocity (dynamics._V)
SFC = 174  # S offset of a body's external contact wrench (6 numbers, world, about the origin)
NCOL = 20  # columns of the packed contact table
NGB = 5  # geom parameter cotangents per geom: size (3), friction, restitution
PLANE, SPHERE, CAPSULE, BOX = 0, 1, 2, 3
TINY = 1e-12
PI = 3.141592653589793
# the friction's viscous slope is capped at CAP m_eff / dt: a quarter of one contact's stability
# limit m_eff / dt (explicit Euler diverges past 2 m_eff / dt) leaves room for the several
# contacts that load one body (a quadruped's four feet chattered at 1, not at 1/2 or 1/4)
CAP = 0.25
CAPACITY = {(PLANE, SPHERE): 1, (PLANE, CAPSULE): 2, (PLANE, BOX): 8, (SPHERE, SPHERE): 1, (SPHERE, CAPSULE): 1,
            (SPHERE, BOX): 1, (CAPSULE, BOX): 3}


# ------------------------------------------------------------------------------------------
# host side: the packed table
# ------------------------------------------------------------------------------------------
def _mobile(model: Model) -> np.ndarray:
    """Bodies some joint moves (a joint on the path to the world)."""
    mobile = np.zeros(model.nbody, bool)
    for i in range(1, model.nbody):
        mobile[i] = mobile[model.body_parent[i]] or model.body_jnt[i] >= 0
    return mobile


def _trees(model: Model) -> np.ndarray:
    """The kinematic tree of each body: its ancestor just below the world (0 for the world)."""
    root = np.zeros(model.nbody, np.int64)
    for i in range(1, model.nbody):
        p = int(model.body_parent[i])
        root[i] = i if p == 0 else root[p]
    return root


def pairs(model: Model) -> list:
    """The geom pairs (ga, gb, contacts) that can touch, type a <= type b: not both immobile,
    not in one kinematic tree. Numpy only (the server checks a model with it at the boundary).

    Raises:
        ModelError: no geoms, a moving plane, an unsupported pair type (named), nothing to collide.
    """
    ng = model.ngeom
    if ng == 0:
        raise ModelError("contact was asked for but the model has no collision geoms", element=f"model '{model.name}'",
                         field="geoms")
    mobile, tree = _mobile(model), _trees(model)
    gtype = np.asarray(model.geom_type, np.int64)
    gbody = np.asarray(model.geom_body, np.int64)
    for g in range(ng):
        if gtype[g] == PLANE and mobile[gbody[g]]:
            raise ModelError("a plane must be static (on the world or a body welded to it)",
                             element=f"geom '{model.geom_names[g]}'", field="type")
    out = []
    for a in range(ng):
        for b in range(a + 1, ng):
            ba, bb = gbody[a], gbody[b]
            if not (mobile[ba] or mobile[bb]):
                continue  # both immobile
            if tree[ba] == tree[bb] and tree[ba] != 0:
                continue  # one kinematic tree: no self-collision
            ga, gb = (a, b) if gtype[a] <= gtype[b] else (b, a)
            key = (int(gtype[ga]), int(gtype[gb]))
            if key == (PLANE, PLANE):
                continue
            if key not in CAPACITY:
                names = f"'{model.geom_names[ga]}' and '{model.geom_names[gb]}'"
                raise ModelError(f"{GeomType(key[0]).name.lower()}-{GeomType(key[1]).name.lower()} contacts are not "
                                 f"available in articulated rollouts (geoms {names}); supported: plane with sphere, "
                                 "capsule or box; sphere with sphere, capsule or box; capsule with box",
                                 element=f"geom '{model.geom_names[ga]}'", field="type")
            out.append((ga, gb, CAPACITY[key]))
    if not out:
        raise ModelError("contact was asked for but no pair of geoms can touch (every geom is static, or all "
                         "geoms belong to one kinematic tree)", element=f"model '{model.name}'", field="geoms")
    return out


def _inverse_weights(model: Model) -> np.ndarray:
    """Per geom: the largest translational inverse mass of its centre at qpos0, the top eigenvalue
    of J M^-1 J^T (for a geom spinning about its centre: L^2 times the rotational one, L its
    bounding radius); 0 for a geom no joint moves. Runs two kernels (mass matrix, Jacobians)."""
    from .dynamics import mass_matrix  # the dynamics import this module's device code
    from .kinematics import frame_jacobian

    ng = model.ngeom
    w = np.zeros(ng)
    mobile = _mobile(model)
    bodies = sorted({int(model.geom_body[g]) for g in range(ng) if mobile[model.geom_body[g]]})
    if model.nv == 0 or not bodies:
        return w
    q = model.qpos0[None].astype(np.float64)
    M = np.asarray(mass_matrix(model, q), np.float64)[0]
    Minv = np.linalg.pinv(0.5 * (M + M.T))
    J, _, rot = frame_jacobian(model, q, bodies, return_pose=True)
    J, rot = np.asarray(J, np.float64)[0], np.asarray(rot, np.float64)[0]
    for g in range(ng):
        body = int(model.geom_body[g])
        if not mobile[body]:
            continue
        k = bodies.index(body)
        r = rot[k] @ model.geom_pos[g]
        skew = np.array([[0.0, -r[2], r[1]], [r[2], 0.0, -r[0]], [-r[1], r[0], 0.0]])
        Jp = J[k, :3] - skew @ J[k, 3:]
        wt = float(np.linalg.eigvalsh(Jp @ Minv @ Jp.T).max())
        wr = float(np.linalg.eigvalsh(J[k, 3:] @ Minv @ J[k, 3:].T).max())
        size = model.geom_size[g]
        L = {SPHERE: size[0], CAPSULE: size[0] + size[1], BOX: float(np.linalg.norm(size))}.get(int(model.geom_type[g]), 0.0)
        w[g] = wt if wt > 1e-9 * (wt + L * L * wr) else L * L * wr
        if not w[g] > 0:
            raise ModelError("the geom's body moves but no force at the geom can move it (massless or locked "
                             "chain)", element=f"geom '{model.geom_names[g]}'", field="body")
    return w


def pack(model: Model, contact, dt: float, dtype) -> np.ndarray:
    """The contact table of the rollout kernels (see the module docstring for the model):
    row 0: npair, ngeom, timeconst, softness, friction_eps, dt; rows 1..ng: per geom type, body,
    pos (3), rot (9) in the body frame, size (3), friction, restitution, inverse weight; then
    per pair ga, gb (type a <= type b), contacts."""
    from .contact import Contact  # the contact module imports the rollout, which imports this

    if not isinstance(contact, Contact):
        raise InputError("contact", f"expected a simad.Contact, got {type(contact).__name__}")
    c = contact.validated(dt)
    if c.mode != "smooth":
        raise InputError("contact.mode", "rollout() simulates smooth contact (mode='smooth'); impulse contacts "
                                         "with time of impact are contact_rollout()'s, for free bodies")
    prs = pairs(model)
    w = _inverse_weights(model)
    ng = model.ngeom
    t = np.zeros((1 + ng + len(prs), NCOL), np.float64)
    t[0, :6] = (len(prs), ng, c.timeconst, c.softness, c.friction_eps, dt)
    for g in range(ng):
        t[1 + g, 0], t[1 + g, 1] = model.geom_type[g], model.geom_body[g]
        t[1 + g, 2:5] = model.geom_pos[g]
        t[1 + g, 5:14] = model.geom_rot[g].reshape(9)
        t[1 + g, 14:17] = model.geom_size[g]
        t[1 + g, 17], t[1 + g, 18], t[1 + g, 19] = model.geom_friction[g], model.geom_restitution[g], w[g]
    for p, (ga, gb, kc) in enumerate(prs):
        t[1 + ng + p, :3] = (ga, gb, kc)
    return t.astype(dtype)


def no_contact(dtype) -> np.ndarray:
    """The contact table of a call without contact: one header row of zeros (no pairs)."""
    return np.zeros((1, NCOL), dtype)


def param_grads(model: Model, cgb: np.ndarray) -> dict:
    """geom_size, geom_friction, geom_restitution cotangents from the kernels' (B, ng, 5)."""
    s = cgb.sum(0, dtype=np.float64)
    return {"geom_size": s[:, :3].copy(), "geom_friction": s[:, 3].copy(), "geom_restitution": s[:, 4].copy()}


# ------------------------------------------------------------------------------------------
# device side: geometry
# ------------------------------------------------------------------------------------------
@ti.func
def _col(R, k):
    return ti.Vector([R[0, k], R[1, k], R[2, k]])


@ti.func
def _geom(cg: ti.template(), pose: ti.template(), b, g):
    """World rotation, position, size of geom g and its body."""
    r = 1 + g
    body = ti.cast(cg[r, 1], ti.i32)
    Rl = ti.Matrix([[cg[r, 5 + 3 * i + j] for j in ti.static(range(3))] for i in ti.static(range(3))])
    pl = ti.Vector([cg[r, 2 + k] for k in ti.static(range(3))])
    Rb = mat3(pose, b, body, ROT)
    R = Rb @ Rl
    p = vec3(pose, b, body, POS) + Rb @ pl
    size = ti.Vector([cg[r, 14 + k] for k in ti.static(range(3))])
    return R, p, size, body


@ti.func
def _corner(k):
    return ti.Vector([1.0 if (k & 1) else -1.0, 1.0 if (k & 2) else -1.0, 1.0 if (k & 4) else -1.0])


@ti.func
def _sphere_sphere(ca, ra, cb, rb):
    d = cb - ca
    dist = ti.sqrt(d.dot(d) + TINY * TINY)
    n = d / dist
    gap = dist - ra - rb
    return gap, n, ca + n * (ra + 0.5 * gap)


@ti.func
def _sphere_sphere_vjp(ca, ra, cb, rb, gb, nb, xb):
    """Cotangents of (ca, ra, cb, rb) from those of (gap, n, x)."""
    d = cb - ca
    dist = ti.sqrt(d.dot(d) + TINY * TINY)
    n = d / dist
    gap = dist - ra - rb
    cab = xb
    ntot = nb + (ra + 0.5 * gap) * xb
    rab = n.dot(xb)
    G = gb + 0.5 * n.dot(xb)
    rab -= G
    rbb = -G
    db = ntot / dist - d * (d.dot(ntot) / (dist * dist * dist)) + G * n
    return cab - db, rab, db, rbb


@ti.func
def _seg_point(R, p, h, o, mode):
    """The point of the segment p +- h R[:, 2]: its +h end (mode 1), -h end (mode -1), or the
    point nearest o (mode 0)."""
    ax = _col(R, 2)
    s = h * mode
    if mode == 0:
        s = ti.min(ti.max((o - p).dot(ax), -h), h)
    return p + ax * s


@ti.func
def _seg_point_vjp(R, p, h, o, mode, cb):
    """Cotangents (R, p, h, o) of ``_seg_point`` from that of its point."""
    ax = _col(R, 2)
    s = h * mode
    s0 = 0.0
    inside = 0
    if mode == 0:
        s0 = (o - p).dot(ax)
        s = ti.min(ti.max(s0, -h), h)
        if ti.abs(s0) < h:
            inside = 1
    pb = cb
    axb = s * cb
    sb = ax.dot(cb)
    hb = 0.0
    ob = ti.Vector([0.0, 0.0, 0.0])
    if mode != 0:
        hb = mode * sb
    elif inside == 1:
        ob = sb * ax
        pb -= sb * ax
        axb += sb * (o - p)
    else:
        hb = sb if s0 > 0 else -sb
    Rb = ti.Matrix.zero(float, 3, 3)
    for r in ti.static(range(3)):
        Rb[r, 2] = axb[r]
    return Rb, pb, hb, ob


@ti.func
def _point_box(c, r, pb, Rb, h):
    """Sphere (c, r) against box (pb, Rb, half extents h): (gap, n from the sphere to the box, x)."""
    loc = Rb.transpose() @ (c - pb)
    inside = (ti.abs(loc[0]) <= h[0]) and (ti.abs(loc[1]) <= h[1]) and (ti.abs(loc[2]) <= h[2])
    gap = 0.0
    n = ti.Vector([0.0, 0.0, 0.0])
    x = c
    if inside:
        kk, sg = _deepest(loc, h)
        n = -sg * _col(Rb, kk)
        gap = sg * loc[kk] - h[kk] - r
    else:
        cl = ti.Vector([ti.min(ti.max(loc[k], -h[k]), h[k]) for k in ti.static(range(3))])
        gap, n, x = _sphere_sphere(c, r, pb + Rb @ cl, 0.0)
    return gap, n, x


@ti.func
def _deepest(loc, h):
    """The box axis of least depth for an inside point, and the side (+1 / -1)."""
    dx, dy, dz = h[0] - ti.abs(loc[0]), h[1] - ti.abs(loc[1]), h[2] - ti.abs(loc[2])
    k = 2
    if dx <= dy and dx <= dz:
        k = 0
    elif dy <= dz:
        k = 1
    return k, (1.0 if loc[k] >= 0 else -1.0)


@ti.func
def _point_box_vjp(c, r, pb, Rb, h, gb, nb, xb):
    """Cotangents (c, r, pb, Rb, h) of ``_point_box`` from those of (gap, n, x)."""
    loc = Rb.transpose() @ (c - pb)
    inside = (ti.abs(loc[0]) <= h[0]) and (ti.abs(loc[1]) <= h[1]) and (ti.abs(loc[2]) <= h[2])
    cb = ti.Vector([0.0, 0.0, 0.0])
    rb = 0.0
    pbb = ti.Vector([0.0, 0.0, 0.0])
    Rbb = ti.Matrix.zero(float, 3, 3)
    hb = ti.Vector([0.0, 0.0, 0.0])
    locb = ti.Vector([0.0, 0.0, 0.0])
    if inside:
        kk, sg = _deepest(loc, h)
        cb += xb
        for j in ti.static(range(3)):
            if j == kk:
                for i in ti.static(range(3)):
                    Rbb[i, j] += -sg * nb[i]
                locb[j] += sg * gb
                hb[j] -= gb
        rb -= gb
    else:
        cl = ti.Vector([ti.min(ti.max(loc[k], -h[k]), h[k]) for k in ti.static(range(3))])
        y = pb + Rb @ cl
        cb1, rb1, yb, _ = _sphere_sphere_vjp(c, r, y, 0.0, gb, nb, xb)
        cb += cb1
        rb += rb1
        pbb += yb
        Rbb += yb.outer_product(cl)
        clb = Rb.transpose() @ yb
        for k in ti.static(range(3)):
            if ti.abs(loc[k]) < h[k]:
                locb[k] += clb[k]
            else:
                hb[k] += clb[k] if loc[k] > 0 else -clb[k]
    cb += Rb @ locb
    pbb -= Rb @ locb
    Rbb += (c - pb).outer_product(locb)
    return cb, rb, pbb, Rbb, hb


@ti.func
def _plane_point(pa, na, c, r):
    gap = (c - pa).dot(na) - r
    return gap, na, c - na * (r + 0.5 * gap)


@ti.func
def _narrow(ta, Ra, pa, sa, tb, Rb, pb, sb, k):
    """(gap, n, x) of contact k of a supported pair (ta <= tb)."""
    gap = 1e30
    n = ti.Vector([0.0, 0.0, 1.0])
    x = pb
    if ta == PLANE:
        c = pb
        r = 0.0
        if tb == SPHERE:
            r = sb[0]
        elif tb == CAPSULE:
            c = _seg_point(Rb, pb, sb[1], pb, 1.0 if k == 0 else -1.0)
            r = sb[0]
        else:
            c = pb + Rb @ (_corner(k) * sb)
        gap, n, x = _plane_point(pa, _col(Ra, 2), c, r)
    elif ta == SPHERE:
        if tb == SPHERE:
            gap, n, x = _sphere_sphere(pa, sa[0], pb, sb[0])
        elif tb == CAPSULE:
            gap, n, x = _sphere_sphere(pa, sa[0], _seg_point(Rb, pb, sb[1], pa, 0.0), sb[0])
        else:
            gap, n, x = _point_box(pa, sa[0], pb, Rb, sb)
    else:  # capsule - box
        gap, n, x = _point_box(_seg_point(Ra, pa, sa[1], pb, _cap_mode(k)), sa[0], pb, Rb, sb)
    return gap, n, x


@ti.func
def _cap_mode(k):
    m = 0.0
    if k == 0:
        m = 1.0
    elif k == 1:
        m = -1.0
    return m


@ti.func
def _narrow_vjp(ta, Ra, pa, sa, tb, Rb, pb, sb, k, gb, nb, xb):
    """Cotangents (Ra, pa, sa, Rb, pb, sb) of ``_narrow`` from those of (gap, n, x)."""
    Rab = ti.Matrix.zero(float, 3, 3)
    Rbb = ti.Matrix.zero(float, 3, 3)
    pab = ti.Vector([0.0, 0.0, 0.0])
    pbb = ti.Vector([0.0, 0.0, 0.0])
    sab = ti.Vector([0.0, 0.0, 0.0])
    sbb = ti.Vector([0.0, 0.0, 0.0])
    if ta == PLANE:
        na = _col(Ra, 2)
        c = pb
        r = 0.0
        mode = 1.0 if k == 0 else -1.0
        if tb == SPHERE or tb == CAPSULE:
            r = sb[0]
        if tb == CAPSULE:
            c = _seg_point(Rb, pb, sb[1], pb, mode)
        elif tb == BOX:
            c = pb + Rb @ (_corner(k) * sb)
        gap = (c - pa).dot(na) - r
        # x = c - na (r + gap / 2), gap = (c - pa) . na - r, n = na
        cb = xb
        nab = -(r + 0.5 * gap) * xb + nb
        rb = -na.dot(xb)
        G = gb - 0.5 * na.dot(xb)
        cb += G * na
        pab -= G * na
        nab += G * (c - pa)
        rb -= G
        for i in ti.static(range(3)):
            Rab[i, 2] += nab[i]
        if tb == SPHERE:
            pbb += cb
            sbb[0] += rb
        elif tb == CAPSULE:
            R1, p1, h1, _ = _seg_point_vjp(Rb, pb, sb[1], pb, mode, cb)
            Rbb += R1
            pbb += p1
            sbb[1] += h1
            sbb[0] += rb
        else:
            cr = _corner(k)
            pbb += cb
            Rbb += cb.outer_product(cr * sb)
            sbb += cr * (Rb.transpose() @ cb)
    elif ta == SPHERE:
        if tb == SPHERE:
            c1, r1, c2, r2 = _sphere_sphere_vjp(pa, sa[0], pb, sb[0], gb, nb, xb)
            pab += c1
            sab[0] += r1
            pbb += c2
            sbb[0] += r2
        elif tb == CAPSULE:
            y = _seg_point(Rb, pb, sb[1], pa, 0.0)
            c1, r1, yb, r2 = _sphere_sphere_vjp(pa, sa[0], y, sb[0], gb, nb, xb)
            R2, p2, h2, o2 = _seg_point_vjp(Rb, pb, sb[1], pa, 0.0, yb)
            pab += c1 + o2
            sab[0] += r1
            Rbb += R2
            pbb += p2
            sbb[0] += r2
            sbb[1] += h2
        else:
            c1, r1, p2, R2, h2 = _point_box_vjp(pa, sa[0], pb, Rb, sb, gb, nb, xb)
            pab += c1
            sab[0] += r1
            pbb += p2
            Rbb += R2
            sbb += h2
    else:  # capsule - box
        mode = _cap_mode(k)
        c = _seg_point(Ra, pa, sa[1], pb, mode)
        c1, r1, p2, R2, h2 = _point_box_vjp(c, sa[0], pb, Rb, sb, gb, nb, xb)
        R1, p1, h1, o1 = _seg_point_vjp(Ra, pa, sa[1], pb, mode, c1)
        Rab += R1
        pab += p1
        sab[0] += r1
        sab[1] += h1
        pbb += p2 + o1
        Rbb += R2
        sbb += h2
    return Rab, pab, sab, Rbb, pbb, sbb


# ------------------------------------------------------------------------------------------
# device side: the force law
# ------------------------------------------------------------------------------------------
@ti.func
def _pair(cg: ti.template(), p):
    ng = ti.cast(cg[0, 1], ti.i32)
    r = 1 + ng + p
    return ti.cast(cg[r, 0], ti.i32), ti.cast(cg[r, 1], ti.i32), ti.cast(cg[r, 2], ti.i32)


@ti.func
def _coef(cg: ti.template(), ga, gb):
    mu = ti.sqrt(cg[1 + ga, 17] * cg[1 + gb, 17] + TINY * TINY)
    e = ti.max(cg[1 + ga, 18], cg[1 + gb, 18])
    w = cg[1 + ga, 19] + cg[1 + gb, 19]
    return mu, e, 1.0 / w


@ti.func
def _point_vel(S: ti.template(), b, body, x):
    w = ti.Vector([S[b, body, SV + k] for k in ti.static(range(3))])
    v = ti.Vector([S[b, body, SV + 3 + k] for k in ti.static(range(3))])
    return v + w.cross(x), w


@ti.func
def _force(cg: ti.template(), gap, n, vrel, mu, e, meff):
    """The contact force on body b (zero when apart beyond 30 softness)."""
    tc, soft, feps = cg[0, 2], cg[0, 3], cg[0, 4]
    F = ti.Vector([0.0, 0.0, 0.0])
    d = -gap / soft
    if d > -30.0:
        phi = soft * (ti.max(d, 0.0) + ti.log(1.0 + ti.exp(-ti.abs(d))))
        gate = 1.0 / (1.0 + ti.exp(-d))
        wn = 2.0 * PI / tc
        le = ti.log(ti.max(e, 1e-6))
        zeta = -le / ti.sqrt(PI * PI + le * le)
        vn = vrel.dot(n)
        fn = ti.max(meff * wn * wn * phi - 2.0 * zeta * meff * wn * vn * gate, 0.0)
        vt = vrel - vn * n
        cmu = mu * fn / ti.sqrt(vt.dot(vt) + feps * feps)
        cmax = CAP * meff / cg[0, 5]
        F = fn * n - (cmu * cmax / (cmu + cmax)) * vt
    return F


@ti.func
def _force_vjp(cg: ti.template(), gap, n, vrel, mu, e, meff, Fb):
    """Cotangents (gap, n, vrel, mu, e) of ``_force`` from that of F."""
    tc, soft, feps = cg[0, 2], cg[0, 3], cg[0, 4]
    gapb = 0.0
    nb = ti.Vector([0.0, 0.0, 0.0])
    vb = ti.Vector([0.0, 0.0, 0.0])
    mub = 0.0
    eb = 0.0
    d = -gap / soft
    if d > -30.0:
        phi = soft * (ti.max(d, 0.0) + ti.log(1.0 + ti.exp(-ti.abs(d))))
        gate = 1.0 / (1.0 + ti.exp(-d))
        wn = 2.0 * PI / tc
        le = ti.log(ti.max(e, 1e-6))
        rt = ti.sqrt(PI * PI + le * le)
        zeta = -le / rt
        vn = vrel.dot(n)
        raw = meff * wn * wn * phi - 2.0 * zeta * meff * wn * vn * gate
        fn = ti.max(raw, 0.0)
        vt = vrel - vn * n
        sden = ti.sqrt(vt.dot(vt) + feps * feps)
        cmu = mu * fn / sden
        cmax = CAP * meff / cg[0, 5]
        c = cmu * cmax / (cmu + cmax)
        # F = fn n - c vt
        fnb = n.dot(Fb)
        nb += fn * Fb
        cmub = -vt.dot(Fb) * cmax * cmax / ((cmu + cmax) * (cmu + cmax))
        vtb = -c * Fb
        mub = cmub * fn / sden
        fnb += cmub * mu / sden
        vtb += (-cmub * mu * fn / (sden * sden)) * vt / sden
        vb += vtb
        vnb = -n.dot(vtb)
        nb += -vn * vtb
        if raw > 0.0:
            phib = fnb * meff * wn * wn
            vnb += -fnb * 2.0 * zeta * meff * wn * gate
            gateb = -fnb * 2.0 * zeta * meff * wn * vn
            zetab = -fnb * 2.0 * meff * wn * vn * gate
            gapb = -(phib * soft * gate + gateb * gate * (1.0 - gate)) / soft
            if e > 1e-6:
                eb = zetab * (-PI * PI / (rt * rt * rt)) / e
        vb += vnb * n
        nb += vnb * vrel
    return gapb, nb, vb, mub, eb


@ti.func
def _add_wrench(S: ti.template(), b, body, x, F, sign):
    m = x.cross(F)
    for k in ti.static(range(3)):
        S[b, body, SFC + k] += sign * m[k]
        S[b, body, SFC + 3 + k] += sign * F[k]


@ti.real_func
def contact_wrenches(cg: A2, pose: A3, S: A3, b: ti.i32, nbody: ti.i32):
    """S[b, i, SFC:SFC+6] = the contact wrench on body i (world, about the origin). Needs the
    poses (``frame_poses``) and body velocities (``velocities``) of env b."""
    for i in range(nbody):
        for k in ti.static(range(6)):
            S[b, i, SFC + k] = 0.0
    npair = ti.cast(cg[0, 0], ti.i32)
    for p in range(npair):
        ga, gb, kc = _pair(cg, p)
        ta, tb = ti.cast(cg[1 + ga, 0], ti.i32), ti.cast(cg[1 + gb, 0], ti.i32)
        Ra, pa, sa, ba = _geom(cg, pose, b, ga)
        Rb, pb, sb, bb = _geom(cg, pose, b, gb)
        mu, e, meff = _coef(cg, ga, gb)
        for k in range(kc):
            gap, n, x = _narrow(ta, Ra, pa, sa, tb, Rb, pb, sb, k)
            if gap < 30.0 * cg[0, 3]:
                ub, _ = _point_vel(S, b, bb, x)
                ua, _ = _point_vel(S, b, ba, x)
                F = _force(cg, gap, n, ub - ua, mu, e, meff)
                _add_wrench(S, b, bb, x, F, 1.0)
                _add_wrench(S, b, ba, x, F, -1.0)


@ti.func
def _add_pose_bar(G: ti.template(), b, body, Rb, pb, oR, oP):
    for r, c in ti.static(ti.ndrange(3, 3)):
        G[b, body, oR + 3 * r + c] += Rb[r, c]
    for k in ti.static(range(3)):
        G[b, body, oP + k] += pb[k]


@ti.func
def _geom_vjp(cg: ti.template(), pose: ti.template(), G: ti.template(), b, g, body, Rgb, pgb, oR, oP):
    """World geom pose cotangents -> its body's pose cotangents (R = Rbody Rl, p = pbody + Rbody pl)."""
    if body > 0:
        r = 1 + g
        Rl = ti.Matrix([[cg[r, 5 + 3 * i + j] for j in ti.static(range(3))] for i in ti.static(range(3))])
        pl = ti.Vector([cg[r, 2 + k] for k in ti.static(range(3))])
        _add_pose_bar(G, b, body, Rgb @ Rl.transpose() + pgb.outer_product(pl), pgb, oR, oP)


@ti.real_func
def contact_vjp(cg: A2, pose: A3, S: A3, G: A3, cgb: A3, b: ti.i32, sign: float, oFB: ti.i32, oVB: ti.i32, oR: ti.i32,
                oP: ti.i32):
    """Reverse of ``contact_wrenches`` inside the RNEA adjoint: the cotangent of body i's wrench
    is -G[b, i, oFB:oFB+6] (minus the body's motion under lam: tau carries -S^T F_ext); the
    cotangents land in the body velocities (oVB), the body poses (oR, oP) and, times sign, in
    cgb (B, ng, 5)."""
    npair = ti.cast(cg[0, 0], ti.i32)
    for p in range(npair):
        ga, gb, kc = _pair(cg, p)
        ta, tb = ti.cast(cg[1 + ga, 0], ti.i32), ti.cast(cg[1 + gb, 0], ti.i32)
        Ra, pa, sa, ba = _geom(cg, pose, b, ga)
        Rb, pb, sb, bb = _geom(cg, pose, b, gb)
        mu, e, meff = _coef(cg, ga, gb)
        Yb = ti.Vector([G[b, bb, oFB + k] for k in ti.static(range(6))])
        Ya = ti.Vector([G[b, ba, oFB + k] for k in ti.static(range(6))])
        wYb = ti.Vector([Yb[0], Yb[1], Yb[2]])
        wYa = ti.Vector([Ya[0], Ya[1], Ya[2]])
        for k in range(kc):
            gap, n, x = _narrow(ta, Ra, pa, sa, tb, Rb, pb, sb, k)
            if gap < 30.0 * cg[0, 3]:
                ub, wb = _point_vel(S, b, bb, x)
                ua, wa = _point_vel(S, b, ba, x)
                vrel = ub - ua
                F = _force(cg, gap, n, vrel, mu, e, meff)
                yb = ti.Vector([Yb[3], Yb[4], Yb[5]]) + wYb.cross(x)
                ya = ti.Vector([Ya[3], Ya[4], Ya[5]]) + wYa.cross(x)
                Fb = -(yb - ya)
                xb = (wYb - wYa).cross(F)
                gapb, nb, vrb, mub, eb = _force_vjp(cg, gap, n, vrel, mu, e, meff, Fb)
                # vrel = (v_b + w_b x x) - (v_a + w_a x x)
                xb += vrb.cross(wb) - vrb.cross(wa)
                xv = x.cross(vrb)
                for c in ti.static(range(3)):
                    G[b, bb, oVB + c] += xv[c]
                    G[b, bb, oVB + 3 + c] += vrb[c]
                    G[b, ba, oVB + c] -= xv[c]
                    G[b, ba, oVB + 3 + c] -= vrb[c]
                Rab, pab, sab, Rbb, pbb, sbb = _narrow_vjp(ta, Ra, pa, sa, tb, Rb, pb, sb, k, gapb, nb, xb)
                _geom_vjp(cg, pose, G, b, ga, ba, Rab, pab, oR, oP)
                _geom_vjp(cg, pose, G, b, gb, bb, Rbb, pbb, oR, oP)
                for c in ti.static(range(3)):
                    cgb[b, ga, c] += sign * sab[c]
                    cgb[b, gb, c] += sign * sbb[c]
                # mu = sqrt(mu_a mu_b), e = max(e_a, e_b)
                mua, mubb = cg[1 + ga, 17], cg[1 + gb, 17]
                cgb[b, ga, 3] += sign * mub * mubb / (2.0 * mu)
                cgb[b, gb, 3] += sign * mub * mua / (2.0 * mu)
                if cg[1 + ga, 18] >= cg[1 + gb, 18]:
                    cgb[b, ga, 4] += sign * eb
                else:
                    cgb[b, gb, 4] += sign * eb
