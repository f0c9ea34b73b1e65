"""Taichi kernels of the contact pipeline (free rigid bodies, static geometry). See contact.py
for the model, the conventions and the public API; this module only holds device code.

Buffers (all flat or few-dimensional ndarrays, so a launch marshals few arguments):
  X    (T+1, B, nb, 13)  state per step: COM position (3), quaternion w-first (4), linear
                         velocity of the COM (3) and angular velocity (3), both world frame
  U    (T, B, nb, 6)     applied wrench per body and step: force (3) at the COM, torque (3), world
  prm  (nprm,)           differentiable parameters, see ``prm_layout`` in contact.py
  cfg  (ncfg,)           options (8 numbers) then the static geometry (12 per geom: pos, rot)
  top  (ntop,)  int32    ng, nb, P, K, per geom (type, body), per pair (ga, gb, ncontacts),
                         per body (qadr, vadr)
  S    (B, nS)           per-env scratch of one step: velocities per solver iteration, impulse
                         sums, contact records, accumulated impulses per iteration
  cnt  (B, nb)  int32    active contacts per body (mass splitting)

The per-stage kernels (init, detect, iter, post) follow DESIGN.md section 1 so that Taichi can
differentiate them: top-level loops only, each value of a step written once to its own slot,
accumulations by atomic adds into zeroed global slots, and no local value carried from one loop
iteration to the next. Their reverse mode is the tests' reference now; the gradient itself is
``contact_adjoint.reverse_kernel`` (hand-written, one launch), which reuses ``_step``.
"""


import taichi as ti

PLANE, SPHERE, CAPSULE, BOX = 0, 1, 2, 3
PAIR_TYPES = ((PLANE, SPHERE), (PLANE, CAPSULE), (PLANE, BOX), (SPHERE, SPHERE), (SPHERE, CAPSULE), (SPHERE, BOX),
              (CAPSULE, CAPSULE), (CAPSULE, BOX), (BOX, BOX))
NCFG = 8  # option slots at the start of cfg
CW = 10  # floats per contact record: active, gap, n (3), point (3), vn_pre, target (impulse) or force flag (smooth)
BW = 8  # floats per geom in the broad phase's BD: centre (3), radius, centre speed, angular speed, x interval
TINY = 1e-12
SLIP_EPS = 1e-6  # m/s: below this slip speed the impulse solver's tangential mass uses a fixed tangent
PI = 3.141592653589793

arr = ti.types.ndarray


# ------------------------------------------------------------------------------------------
# layout helpers
# ------------------------------------------------------------------------------------------
@ti.func
def _o_dP(nb, nit):
    return (nit + 1) * nb * 6


@ti.func
def _o_W(nb, nit):
    return _o_dP(nb, nit) + nit * nb * 6


@ti.func
def _o_C(nb, nit):
    return _o_W(nb, nit) + nb * 6


@ti.func
def _o_L(nb, nit, P, K):
    return _o_C(nb, nit) + P * K * CW


@ti.func
def _o_D(nb, nit, P, K):
    return _o_L(nb, nit, P, K) + (nit + 1) * P * K * 4


@ti.func
def _o_slots(top: ti.template()):
    """Offset in top of the contact-slot table: (pair, k) per slot."""
    return 4 + 2 * top[0] + 3 * top[2] + 2 * top[1]


@ti.func
def _slot(top: ti.template(), cs):
    """(pair p, contact k, geom a, geom b) of contact slot cs."""
    ocs = _o_slots(top) + 2 * cs
    p = top[ocs]
    op = 4 + 2 * top[0] + 3 * p
    return p, top[ocs + 1], top[op], top[op + 1]


@ti.func
def _v6(S: ti.template(), b, o):
    return ti.Vector([S[b, o + c] for c in ti.static(range(6))])


@ti.func
def _x13(X: ti.template(), t, b, i):
    x = ti.Vector([X[t, b, i, c] for c in ti.static(range(3))])
    q = ti.Vector([X[t, b, i, 3 + c] for c in ti.static(range(4))])
    v = ti.Vector([X[t, b, i, 7 + c] for c in ti.static(range(3))])
    w = ti.Vector([X[t, b, i, 10 + c] for c in ti.static(range(3))])
    return x, q, v, w


@ti.func
def _rot(q):
    w, x, y, z = q[0], q[1], q[2], q[3]
    return ti.Matrix([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


DW = 22  # per-body step data in scratch: inverse mass, world inverse inertia R Ib^-1 R^T (9), R (9), COM (3)


@ti.func
def _body_raw(prm: ti.template(), top: ti.template(), X: ti.template(), t, b, i):
    """(x, R, v, w, inverse mass, inverse body inertia, com, body inertia) of body i at step t."""
    nb = top[1]
    x, q, v, w = _x13(X, t, b, i)
    R = _rot(q)
    m = prm[i]
    o = nb + 9 * i
    Ib = ti.Matrix([[prm[o + 3 * r + c] for c in ti.static(range(3))] for r in ti.static(range(3))])
    oi = nb * 13 + top[0] * 5 + 3 + 9 * i  # the inverse inertia, kept in prm (its gradient is chained on the host)
    Ib_inv = ti.Matrix([[prm[oi + 3 * r + c] for c in ti.static(range(3))] for r in ti.static(range(3))])
    oc = nb * 10 + 3 * i
    com = ti.Vector([prm[oc + c] for c in ti.static(range(3))])
    return x, R, v, w, 1.0 / m, Ib_inv, com, Ib


@ti.func
def _body(S: ti.template(), top: ti.template(), b, i, nit):
    """(inverse mass, world inverse inertia R Ib^-1 R^T, R, COM) of body i, as stored by the init stage."""
    o = _o_D(top[1], nit, top[2], top[3]) + DW * i
    im = S[b, o]
    Iw = ti.Matrix([[S[b, o + 1 + 3 * r + c] for c in ti.static(range(3))] for r in ti.static(range(3))])
    R = ti.Matrix([[S[b, o + 10 + 3 * r + c] for c in ti.static(range(3))] for r in ti.static(range(3))])
    x = ti.Vector([S[b, o + 19 + c] for c in ti.static(range(3))])
    return im, Iw, R, x


@ti.func
def _body_mass(S: ti.template(), top: ti.template(), b, i, nit):
    """(inverse mass, world inverse inertia, COM) of body i: what the solver needs, nothing more
    (in reverse mode every global read is an atomic add)."""
    o = _o_D(top[1], nit, top[2], top[3]) + DW * i
    im = S[b, o]
    Iw = ti.Matrix([[S[b, o + 1 + 3 * r + c] for c in ti.static(range(3))] for r in ti.static(range(3))])
    x = ti.Vector([S[b, o + 19 + c] for c in ti.static(range(3))])
    return im, Iw, x


@ti.func
def _geom_pose(prm: ti.template(), cfg: ti.template(), top: ti.template(), S: ti.template(), b, g, gt: ti.template(),
               nit):
    """World pose (R, p), size (3,) and body index (-1: static) of geom g (of type gt) at the
    current step, from the body data the init stage stored. A sphere's R is not needed and is
    left as its frame in the body."""
    nb = top[1]
    body = top[5 + 2 * g]
    o = NCFG + 12 * g
    pg = ti.Vector([cfg[o + c] for c in ti.static(range(3))])
    Rg = ti.Matrix([[cfg[o + 3 + 3 * r + c] for c in ti.static(range(3))] for r in ti.static(range(3))])
    os = nb * 13 + 3 * g
    size = ti.Vector([prm[os + c] for c in ti.static(range(3))])
    R = Rg
    p = pg
    if body >= 0:
        im, Ibi, Rb, x = _body(S, top, b, body, nit)
        oc = nb * 10 + 3 * body
        com = ti.Vector([prm[oc + c] for c in ti.static(range(3))])
        if ti.static(gt != SPHERE):
            R = Rb @ Rg
        p = x + Rb @ (pg - com)
    return R, p, size, body


# ------------------------------------------------------------------------------------------
# narrow phase: (gap, n, point) of contact k of a pair; n points from geom a towards geom b
# (the direction b is pushed), gap > 0 when separated
# ------------------------------------------------------------------------------------------
@ti.func
def _sphere_sphere(ca, ra, cb, rb):
    d = cb - ca
    dist = ti.sqrt(d.dot(d) + TINY * TINY)
    n = d / dist
    gap = dist - ra - rb
    return gap, n, ca + n * (ra + 0.5 * gap)


@ti.func
def _point_box(c, r, cb, Rb, h):
    """A sphere (c, r) against box (cb, Rb, half extents h): n points from the sphere to the box."""
    loc = Rb.transpose() @ (c - cb)
    cl = ti.Vector([ti.min(ti.max(loc[k], -h[k]), h[k]) for k in ti.static(range(3))])
    inside = (ti.abs(loc[0]) <= h[0]) and (ti.abs(loc[1]) <= h[1]) and (ti.abs(loc[2]) <= h[2])
    gap = 0.0
    n = ti.Vector([0.0, 0.0, 0.0])
    point = cb + Rb @ cl
    if inside:
        # deepest face: the axis with the least depth; n points into the box (away from it)
        dx, dy, dz = h[0] - ti.abs(loc[0]), h[1] - ti.abs(loc[1]), h[2] - ti.abs(loc[2])
        nl = ti.Vector([0.0, 0.0, 0.0])
        depth = dx
        if dx <= dy and dx <= dz:
            nl[0] = -1.0 if loc[0] >= 0 else 1.0
        elif dy <= dz:
            nl[1] = -1.0 if loc[1] >= 0 else 1.0
            depth = dy
        else:
            nl[2] = -1.0 if loc[2] >= 0 else 1.0
            depth = dz
        n = Rb @ nl
        gap = -depth - r
        point = c
    else:
        d = point - c
        dist = ti.sqrt(d.dot(d) + TINY * TINY)
        n = d / dist
        gap = dist - r
        point = c + n * (r + 0.5 * gap)
    return gap, n, point


@ti.func
def _segments(p1, q1, p2, q2):
    """Closest points of segments [p1, q1] and [p2, q2] (clamped parameters)."""
    d1 = q1 - p1
    d2 = q2 - p2
    r = p1 - p2
    a = d1.dot(d1)
    e = d2.dot(d2)
    f = d2.dot(r)
    c = d1.dot(r)
    bb = d1.dot(d2)
    den = a * e - bb * bb
    s = 0.0
    if den > 1e-12 * a * e:
        s = ti.min(ti.max((bb * f - c * e) / den, 0.0), 1.0)
    tt = (bb * s + f) / e
    if tt < 0.0:
        tt = 0.0
        s = ti.min(ti.max(-c / a, 0.0), 1.0)
    elif tt > 1.0:
        tt = 1.0
        s = ti.min(ti.max((bb - c) / a, 0.0), 1.0)
    return p1 + d1 * s, p2 + d2 * tt


@ti.func
def _face_vertex(pr, Rr, hr, pi, Ri, hi, out, ref_i, corner):
    """Vertex ``corner`` of the incident box (pi, Ri, hi) against the reference box's face with
    outward normal ``out`` (axis ref_i): (valid, gap, contact point)."""
    v = pi + Ri @ (corner * hi)
    loc = Rr.transpose() @ (v - pr)
    gap = (v - pr).dot(out) - hr[ref_i]
    valid = 1
    for c in ti.static(range(3)):
        if c != ref_i and ti.abs(loc[c]) > 1.1 * hr[c]:
            valid = 0
    return valid, gap, v - out * (0.5 * gap)


@ti.func
def _box_box(Ra, pa, ha, Rb, pb, hb, k):
    """Contact k (0..7) of two boxes: the separating axis among the six face normals with the
    least penetration picks the reference box and the normal n (from a to b); contact k is
    vertex k of the other (incident) box, its gap the signed distance to the reference face.
    A vertex outside the reference face's extent (beyond 10 % of the face size) is not a
    contact. Edge-edge contacts are not generated."""
    d = pb - pa
    best = -1e30
    axis = ti.Vector([0.0, 0.0, 1.0])
    ref_a = 1
    ref_i = 2
    for j in ti.static(range(6)):
        u = ti.Vector([0.0, 0.0, 0.0])
        if ti.static(j < 3):
            u = ti.Vector([Ra[0, j], Ra[1, j], Ra[2, j]])
        else:
            u = ti.Vector([Rb[0, j - 3], Rb[1, j - 3], Rb[2, j - 3]])
        ra_ = ha[0] * ti.abs(u.dot(ti.Vector([Ra[0, 0], Ra[1, 0], Ra[2, 0]]))) + ha[1] * ti.abs(
            u.dot(ti.Vector([Ra[0, 1], Ra[1, 1], Ra[2, 1]]))) + ha[2] * ti.abs(u.dot(ti.Vector([Ra[0, 2], Ra[1, 2], Ra[2, 2]])))
        rb_ = hb[0] * ti.abs(u.dot(ti.Vector([Rb[0, 0], Rb[1, 0], Rb[2, 0]]))) + hb[1] * ti.abs(
            u.dot(ti.Vector([Rb[0, 1], Rb[1, 1], Rb[2, 1]]))) + hb[2] * ti.abs(u.dot(ti.Vector([Rb[0, 2], Rb[1, 2], Rb[2, 2]])))
        sep = ti.abs(d.dot(u)) - ra_ - rb_
        if sep > best + 1e-9:  # prefer a's faces on ties (stable choice)
            best = sep
            axis = u if d.dot(u) >= 0 else -u
            ref_a = 1 if j < 3 else 0
            ref_i = j % 3
    sx = 1.0 if (k & 1) else -1.0
    sy = 1.0 if (k & 2) else -1.0
    sz = 1.0 if (k & 4) else -1.0
    corner = ti.Vector([sx, sy, sz])
    valid, gap, point = 1, 0.0, pa
    if ref_a == 1:  # reference face on a (facing b), incident vertices of b
        valid, gap, point = _face_vertex(pa, Ra, ha, pb, Rb, hb, axis, ref_i, corner)
    else:  # reference face on b (facing a), incident vertices of a
        valid, gap, point = _face_vertex(pb, Rb, hb, pa, Ra, ha, -axis, ref_i, corner)
    return valid, gap, axis, point


@ti.func
def _narrow(ta: ti.template(), Ra, pa, sa, tb: ti.template(), Rb, pb, sb, k):
    """Contact k of the pair (ta <= tb). Returns (valid, gap, n, point)."""
    valid = 1
    gap = 1e30
    n = ti.Vector([0.0, 0.0, 1.0])
    point = pb
    if ti.static(ta == PLANE):
        nrm = ti.Vector([Ra[0, 2], Ra[1, 2], Ra[2, 2]])
        c = pb
        r = 0.0
        if ti.static(tb == SPHERE):
            r = sb[0]
        elif ti.static(tb == CAPSULE):
            ax = ti.Vector([Rb[0, 2], Rb[1, 2], Rb[2, 2]])
            c = pb + ax * (sb[1] if k == 0 else -sb[1])
            r = sb[0]
        elif ti.static(tb == BOX):
            sx = 1.0 if (k & 1) else -1.0
            sy = 1.0 if (k & 2) else -1.0
            sz = 1.0 if (k & 4) else -1.0
            c = pb + Rb @ ti.Vector([sx * sb[0], sy * sb[1], sz * sb[2]])
        else:
            valid = 0
        gap = (c - pa).dot(nrm) - r
        n = nrm
        point = c - nrm * (r + 0.5 * gap)
    elif ti.static(ta == SPHERE):
        if ti.static(tb == SPHERE):
            gap, n, point = _sphere_sphere(pa, sa[0], pb, sb[0])
        elif ti.static(tb == CAPSULE):
            ax = ti.Vector([Rb[0, 2], Rb[1, 2], Rb[2, 2]])
            s = ti.min(ti.max((pa - pb).dot(ax), -sb[1]), sb[1])
            gap, n, point = _sphere_sphere(pa, sa[0], pb + ax * s, sb[0])
        else:  # box
            gap, n, point = _point_box(pa, sa[0], pb, Rb, sb)
    elif ti.static(ta == CAPSULE):
        axa = ti.Vector([Ra[0, 2], Ra[1, 2], Ra[2, 2]])
        if ti.static(tb == CAPSULE):
            axb = ti.Vector([Rb[0, 2], Rb[1, 2], Rb[2, 2]])
            ca, cb = _segments(pa - axa * sa[1], pa + axa * sa[1], pb - axb * sb[1], pb + axb * sb[1])
            gap, n, point = _sphere_sphere(ca, sa[0], cb, sb[0])
        else:  # box: the two end spheres and the segment point nearest the box centre
            s = sa[1] if k == 0 else -sa[1]
            if k == 2:
                s = ti.min(ti.max((pb - pa).dot(axa), -sa[1]), sa[1])
            gap, n, point = _point_box(pa + axa * s, sa[0], pb, Rb, sb)
    else:  # box - box: see _box_box
        valid, gap, n, point = _box_box(Ra, pa, sa, Rb, pb, sb, k)
    return valid, gap, n, point


# ------------------------------------------------------------------------------------------
# broad phase: a conservative bounding-sphere test per contact slot, after the init stage
# ------------------------------------------------------------------------------------------
@ti.func
def _stage_bounds(prm: ti.template(), cfg: ti.template(), top: ti.template(), S: ti.template(), BD: ti.template(),
                  b, g, nit):
    """BD[b, BW g ..]: centre (3), bounding radius, centre speed and angular speed of geom g at the
    current step (free-motion velocities V[0]; zero for static geoms; a plane's radius is 0)."""
    gt = top[4 + 2 * g]
    R, c, size, body = _geom_pose(prm, cfg, top, S, b, g, SPHERE, nit)  # the centre needs no rotation
    rad = 0.0
    if gt == SPHERE:
        rad = size[0]
    elif gt == CAPSULE:
        rad = size[0] + size[1]
    elif gt == BOX:
        rad = ti.sqrt(size.dot(size))
    vs = 0.0
    ws = 0.0
    if body >= 0:
        im, Iw, x = _body_mass(S, top, b, body, nit)  # the COM (the geom pose read the rest already)
        v = ti.Vector([S[b, 6 * body + k] for k in ti.static(range(3))])
        w = ti.Vector([S[b, 6 * body + 3 + k] for k in ti.static(range(3))])
        vc = v + w.cross(c - x)
        vs = ti.sqrt(vc.dot(vc))
        ws = ti.sqrt(w.dot(w))
    for k in ti.static(range(3)):
        BD[b, BW * g + k] = c[k]
    BD[b, BW * g + 3] = rad
    BD[b, BW * g + 4] = vs
    BD[b, BW * g + 5] = ws


@ti.func
def _margin(cfg: ti.template()):
    """Twice the activation margin: impulse slop; smooth 30 softness (softplus force < 1e-13)."""
    return 2.0 * ti.max(cfg[4], 30.0 * cfg[1] * cfg[7]) + 1e-9


@ti.func
def _slack(c, r):
    """A geom's share of the broad phase's rounding slack, relative to its size and position."""
    return 1e-6 * (1.0 + r + ti.abs(c).max())


@ti.func
def _near(cfg: ti.template(), top: ti.template(), BD: ti.template(), b, cs, dt):
    """1 unless the pair of slot cs certainly cannot touch within the step: its bounding spheres
    (a plane's half-space) are apart by more than what the free-motion velocities close in dt
    (centre speeds plus rotation times a bound on the lever arm), plus twice the activation
    margin (impulse: slop; smooth: 30 softness, where the softplus force is below 1e-13 of its
    scale). cfg[6] <= 0.5 turns the test off."""
    p, k, ga, gb = _slot(top, cs)
    near = 1
    if cfg[6] > 0.5:
        ca = ti.Vector([BD[b, BW * ga + k] for k in ti.static(range(3))])
        cb = ti.Vector([BD[b, BW * gb + k] for k in ti.static(range(3))])
        ra, rb = BD[b, BW * ga + 3], BD[b, BW * gb + 3]
        gap = 0.0
        if top[4 + 2 * ga] == PLANE:
            o = NCFG + 12 * ga
            nrm = ti.Vector([cfg[o + 5], cfg[o + 8], cfg[o + 11]])  # the plane's z axis (static)
            gap = (cb - ca).dot(nrm) - rb
        else:
            d = cb - ca
            gap = ti.sqrt(d.dot(d)) - ra - rb
        lever = ra + rb + ti.max(gap, 0.0)
        close = dt * (BD[b, BW * ga + 4] + BD[b, BW * gb + 4] + BD[b, BW * ga + 5] * (lever + rb)
                      + BD[b, BW * gb + 5] * (lever + ra))
        # + _slack per geom: above f32 rounding of metre-scale positions (the two gaps come from
        # different formulas); in f64 it only admits a few more candidates
        if gap > close + _margin(cfg) + _slack(ca, ra) + _slack(cb, rb):
            near = 0
    return near


@ti.func
def _append_if_near(cfg: ti.template(), top: ti.template(), BD: ti.template(), cand: ti.template(), b, cs, dt, nc):
    out = nc
    if _near(cfg, top, BD, b, cs, dt) == 1:
        cand[b, nc] = cs
        out = nc + 1
    return out


@ti.func
def _key_less(BD: ti.template(), b, g, h):
    """Sweep order: by the lower end of the expanded x interval, then by geom index (unique)."""
    kg, kh = BD[b, BW * g + 6], BD[b, BW * h + 6]
    return kg < kh or (kg == kh and g < h)


@ti.func
def _stage_broad(prm: ti.template(), cfg: ti.template(), top: ti.template(), S: ti.template(), BD: ti.template(),
                 bpt: ti.template(), order: ti.template(), cand: ti.template(), ncand: ti.template(), b, ns, dt, nit):
    """The candidate slots of env b into cand[b, 0 .. ncand[b]) (deterministic: a function of the
    step's state). Every other slot must read as inactive (its flag is all that is read of it):
    S starts zeroed, so clearing the flags of the previous call's candidates keeps that true.

    Sweep and prune along x: every non-plane geom gets an x interval, its bounding sphere grown
    by what it can travel in the step (twice dt (centre speed + 3 w r_max), plus the margin),
    large enough that every pair ``_near`` accepts has overlapping intervals (when the
    rotation per step dt (w_a + w_b) stays below 1/2); the intervals are kept sorted in
    ``order`` (insertion sort: few moves from one step to the next), and only overlapping
    pairs are tested, through the pair table of ``bpt``. Plane pairs (the leading slots) are
    tested one by one. Without the table (too many geoms), with the test switched off or with
    a faster rotation, every slot is tested (the scan)."""
    ng, nb, K = top[0], top[1], top[3]
    for j in range(ncand[b]):
        ocs = _o_slots(top) + 2 * cand[b, j]
        S[b, _o_C(nb, nit) + (top[ocs] * K + top[ocs + 1]) * CW] = 0.0
    rmax = 0.0
    wmax = 0.0
    for g in range(ng):
        _stage_bounds(prm, cfg, top, S, BD, b, g, nit)
        if top[4 + 2 * g] != PLANE:
            rmax = ti.max(rmax, BD[b, BW * g + 3])
            wmax = ti.max(wmax, BD[b, BW * g + 5])
    nc = 0
    if cfg[6] > 0.5 and bpt[1] > 0 and 2.0 * dt * wmax <= 0.5:
        for cs in range(bpt[0]):  # plane pairs
            nc = _append_if_near(cfg, top, BD, cand, b, cs, dt, nc)
        m2 = _margin(cfg)
        for g in range(ng):
            lo = 1e30
            hi = 1e30
            if top[4 + 2 * g] != PLANE:
                c = ti.Vector([BD[b, BW * g + k] for k in ti.static(range(3))])
                ext = (BD[b, BW * g + 3] + 2.0 * dt * (BD[b, BW * g + 4] + 3.0 * BD[b, BW * g + 5] * rmax) + m2
                       + 2.0 * _slack(c, BD[b, BW * g + 3]))
                lo = BD[b, BW * g] - ext
                hi = BD[b, BW * g] + ext
            BD[b, BW * g + 6] = lo
            BD[b, BW * g + 7] = hi
        for i in range(1, ng):  # insertion sort of order[b] by (lo, g)
            g = order[b, i]
            j = i - 1
            go = 1
            while go == 1:
                if j < 0:
                    go = 0
                else:
                    h = order[b, j]
                    if _key_less(BD, b, g, h):
                        order[b, j + 1] = h
                        j -= 1
                    else:
                        go = 0
            order[b, j + 1] = g
        P = top[2]
        for i in range(ng):
            ga = order[b, i]
            if top[4 + 2 * ga] != PLANE:  # planes sort last (lo = 1e30)
                hi = BD[b, BW * ga + 7]
                j = i + 1
                go = 1
                while go == 1:
                    if j >= ng:
                        go = 0
                    else:
                        gb = order[b, j]
                        if BD[b, BW * gb + 6] > hi:
                            go = 0
                        else:
                            lo_g = ti.min(ga, gb)
                            hi_g = ti.max(ga, gb)
                            p = bpt[2 + P + lo_g * ng + hi_g]
                            if p >= 0:
                                for k in range(top[4 + 2 * ng + 3 * p + 2]):
                                    nc = _append_if_near(cfg, top, BD, cand, b, bpt[2 + p] + k, dt, nc)
                            j += 1
    else:
        for cs in range(ns):
            nc = _append_if_near(cfg, top, BD, cand, b, cs, dt, nc)
    ncand[b] = nc


# ------------------------------------------------------------------------------------------
# pipeline stages (one env b; called from the per-step kernels and the fused rollout)
# ------------------------------------------------------------------------------------------
@ti.func
def _stage_init(X: ti.template(), U: ti.template(), prm: ti.template(), top: ti.template(), S: ti.template(),
                cnt: ti.template(), t, b, i, dt, nit):
    """Free motion (gravity, applied wrench, gyroscopic term) into V[0]; zero the sums."""
    nb, ng = top[1], top[0]
    x, R, v, w, im, Iwi, com, Ib = _body_raw(prm, top, X, t, b, i)
    od = _o_D(nb, nit, top[2], top[3]) + DW * i
    S[b, od] = im
    Iw = R @ Iwi @ R.transpose()
    for r, c in ti.static(ti.ndrange(3, 3)):
        S[b, od + 1 + 3 * r + c] = Iw[r, c]
        S[b, od + 10 + 3 * r + c] = R[r, c]
    for c in ti.static(range(3)):
        S[b, od + 19 + c] = x[c]
    og = nb * 13 + ng * 5
    g = ti.Vector([prm[og + c] for c in ti.static(range(3))])
    f = ti.Vector([U[t, b, i, c] for c in ti.static(range(3))])
    tau = ti.Vector([U[t, b, i, 3 + c] for c in ti.static(range(3))])
    wb = R.transpose() @ w
    v1 = v + dt * (g + f * im)
    w1 = w + dt * (R @ (Iwi @ (R.transpose() @ tau - wb.cross(Ib @ wb))))
    for c in ti.static(range(3)):
        S[b, 6 * i + c] = v1[c]
        S[b, 6 * i + 3 + c] = w1[c]
    for c in ti.static(range(6)):
        S[b, _o_W(nb, nit) + 6 * i + c] = 0.0
    cnt[b, i] = 0


@ti.func
def _point_vel(S: ti.template(), b, o, body, r):
    """Velocity of the point at offset r from body's COM, from the 6-vector at S[b, o + 6 body]."""
    vel = ti.Vector([0.0, 0.0, 0.0])
    if body >= 0:
        vw = _v6(S, b, o + 6 * body)
        vel = ti.Vector([vw[0], vw[1], vw[2]]) + ti.Vector([vw[3], vw[4], vw[5]]).cross(r)
    return vel


@ti.func
def _tangent(n):
    """A unit vector perpendicular to the unit vector n."""
    a = ti.Vector([1.0, 0.0, 0.0])
    if ti.abs(n[0]) > 0.8:
        a = ti.Vector([0.0, 1.0, 0.0])
    t = a - a.dot(n) * n
    return t / ti.sqrt(t.dot(t))


@ti.func
def _body_or_zero(S: ti.template(), top: ti.template(), b, body, nit):
    """``_body_mass`` for a moving body; zeros (no inverse mass, no inverse inertia) for a static one."""
    im = 0.0
    Iw = ti.Matrix.zero(float, 3, 3)
    x = ti.Vector([0.0, 0.0, 0.0])
    if body >= 0:
        im, Iw, x = _body_mass(S, top, b, body, nit)
    return im, Iw, x


@ti.func
def _inv_mass_pre(im, Iw, r, d, split):
    """Inverse effective mass along d at lever r, from preloaded body data (zero for static)."""
    rd = r.cross(d)
    return split * (im + rd.dot(Iw @ rd))


@ti.func
def _inv_mass_dir(S: ti.template(), top: ti.template(), b, body, r, d, split, nit):
    out = 0.0
    if body >= 0:
        im, Iw, x = _body_mass(S, top, b, body, nit)
        out = _inv_mass_pre(im, Iw, r, d, split)
    return out


@ti.func
def _add_impulse(S: ti.template(), b, o, body, r, J, sign):
    if body >= 0:
        a = r.cross(J)
        for c in ti.static(range(3)):
            ti.atomic_add(S[b, o + 6 * body + c], sign * J[c])
            ti.atomic_add(S[b, o + 6 * body + 3 + c], sign * a[c])


@ti.func
def _coef(prm: ti.template(), top: ti.template(), ga, gb):
    """Pair friction (geometric mean) and restitution (the larger) of the two geoms' values."""
    nb, ng = top[1], top[0]
    of = nb * 13 + ng * 3
    return ti.sqrt(prm[of + ga] * prm[of + gb] + TINY * TINY), ti.max(prm[of + ng + ga], prm[of + ng + gb])


@ti.func
def _com_of(X: ti.template(), t, b, body):
    x = ti.Vector([0.0, 0.0, 0.0])
    if body >= 0:
        x = ti.Vector([X[t, b, body, c] for c in ti.static(range(3))])
    return x


@ti.func
def _stage_detect(X: ti.template(), prm: ti.template(), cfg: ti.template(), top: ti.template(), S: ti.template(),
                  cnt: ti.template(), t, b, cs, dt, mode: ti.template(), nit, toi: ti.template(), ta: ti.template(),
                  tb: ti.template()):
    """Narrow phase of contact slot cs (pair p, contact k): its record (impulse mode) or its
    penalty impulse (smooth)."""
    nb, P, K = top[1], top[2], top[3]
    p, k, ga, gb = _slot(top, cs)
    Ra, pa, sa, ba = _geom_pose(prm, cfg, top, S, b, ga, ta, nit)
    Rb, pb, sb, bb = _geom_pose(prm, cfg, top, S, b, gb, tb, nit)
    xa = _com_of(X, t, b, ba)
    xb = _com_of(X, t, b, bb)
    mu, e = _coef(prm, top, ga, gb)
    timeconst, soft, feps = cfg[0], cfg[1], cfg[2]
    beta, slop, bounce = cfg[3], cfg[4], cfg[5]
    if True:
        valid, gap, n, point = _narrow(ta, Ra, pa, sa, tb, Rb, pb, sb, k)
        ra = point - xa
        rb = point - xb
        oc = _o_C(nb, nit) + (p * K + k) * CW
        if ti.static(mode == 0):  # impulse: record the contact if it closes within the step
            vrel = _point_vel(S, b, 0, bb, rb) - _point_vel(S, b, 0, ba, ra)
            vn = vrel.dot(n)
            active = 0.0
            target = 0.0
            # active if it closes within the step; the slop band only for slow approaches, so a
            # fast contact is never taken one step early (it gets its time of impact next step)
            if valid == 1 and gap < ti.max(-vn * dt, slop):
                active = 1.0
                if ba >= 0:
                    ti.atomic_add(cnt[b, ba], 1)
                if bb >= 0:
                    ti.atomic_add(cnt[b, bb], 1)
                # restitution fades in over approach speeds bounce .. 2 bounce (no micro-bounces)
                ramp = ti.min(ti.max(-vn / bounce - 1.0, 0.0), 1.0)
                target = -e * ramp * ti.min(vn, 0.0)
                if ti.static(not toi):
                    if gap > 0.0:
                        target = -gap / dt
                if gap < -slop:
                    target += beta * (-gap - slop) / dt
            S[b, oc] = active
            S[b, oc + 1] = gap
            for c in ti.static(range(3)):
                S[b, oc + 2 + c] = n[c]
                S[b, oc + 5 + c] = point[c]
            S[b, oc + 8] = vn
            S[b, oc + 9] = target
            ol = _o_L(nb, nit, P, K) + (p * K + k) * 4  # accumulated impulses start at zero
            for c in ti.static(range(4)):
                S[b, ol + c] = 0.0
        else:  # smooth: spring-damper along n, regularised Coulomb friction
            S[b, oc] = 1.0 if (valid == 1 and gap < 0.0) else 0.0  # for the mode-switch count
            d = -gap / soft
            # the record keeps the narrow phase's result and whether a force acts, so the reverse
            # pass skips the narrow phase of the (many) candidates that exert none
            S[b, oc + 1] = gap
            for c in ti.static(range(3)):
                S[b, oc + 2 + c] = n[c]
                S[b, oc + 5 + c] = point[c]
            S[b, oc + 9] = 0.0
            if valid == 1 and d > -30.0:
                S[b, oc + 9] = 1.0
                phi = soft * (ti.max(d, 0.0) + ti.log(1.0 + ti.exp(-ti.abs(d))))
                gate = 1.0 / (1.0 + ti.exp(-d))
                inv = _inv_mass_dir(S, top, b, ba, ra, n, 1.0, nit) + _inv_mass_dir(S, top, b, bb, rb, n, 1.0, nit)
                meff = 1.0 / inv
                wn = 2.0 * PI / timeconst
                le = ti.log(ti.max(e, 1e-6))
                zeta = -le / ti.sqrt(PI * PI + le * le)
                vrel = _point_vel(S, b, 0, bb, rb) - _point_vel(S, b, 0, ba, ra)
                vn = vrel.dot(n)
                fn = ti.max(meff * wn * wn * phi - 2.0 * zeta * meff * wn * vn * gate, 0.0)
                vt = vrel - vn * n
                ft = -mu * fn * vt / ti.sqrt(vt.dot(vt) + feps * feps)
                J = dt * (fn * n + ft)
                odp = _o_dP(nb, nit)
                _add_impulse(S, b, odp, bb, rb, J, 1.0)
                _add_impulse(S, b, odp, ba, ra, J, -1.0)


@ti.func
def _stage_solve(X: ti.template(), prm: ti.template(), top: ti.template(), S: ti.template(), cnt: ti.template(),
                 t, b, cs, it, nit):
    """One Jacobi iteration over the contacts of pair p (impulse mode), with mass splitting:
    each contact sees its bodies' masses divided by their number of active contacts."""
    nb, P, K = top[1], top[2], top[3]
    p, k, ga, gb = _slot(top, cs)
    ba, bb = top[5 + 2 * ga], top[5 + 2 * gb]
    oV = it * nb * 6
    if True:
        oc = _o_C(nb, nit) + (p * K + k) * CW
        ol = _o_L(nb, nit, P, K) + ((it * P + p) * K + k) * 4
        ol1 = ol + P * K * 4
        if S[b, oc] > 0.5:  # inactive slots (most of them) only clear their impulse slot
            mu, e = _coef(prm, top, ga, gb)
            # each body's data read once (every global read becomes an atomic add in reverse mode)
            ima, Ia, xa = _body_or_zero(S, top, b, ba, nit)
            imb, Ib, xb = _body_or_zero(S, top, b, bb, nit)
            n = ti.Vector([S[b, oc + 2 + c] for c in ti.static(range(3))])
            point = ti.Vector([S[b, oc + 5 + c] for c in ti.static(range(3))])
            ra = point - xa
            rb = point - xb
            sa = 1.0
            sbb = 1.0
            if ba >= 0:
                sa = ti.cast(ti.max(cnt[b, ba], 1), float)
            if bb >= 0:
                sbb = ti.cast(ti.max(cnt[b, bb], 1), float)
            vrel = _point_vel(S, b, oV, bb, rb) - _point_vel(S, b, oV, ba, ra)
            vn = vrel.dot(n)
            vt = vrel - vn * n
            inv_n = _inv_mass_pre(ima, Ia, ra, n, sa) + _inv_mass_pre(imb, Ib, rb, n, sbb)
            ln0 = S[b, ol]
            lt0 = ti.Vector([S[b, ol + 1 + c] for c in ti.static(range(3))])
            ln1 = ti.max(ln0 + (S[b, oc + 9] - vn) / inv_n, 0.0)
            # a unit slip direction sets the tangential effective mass; below SLIP_EPS (rolling,
            # resting) any unit tangent does, and the mass then does not depend on v_t at all
            vt2 = vt.dot(vt)
            that = _tangent(n)
            if vt2 > SLIP_EPS * SLIP_EPS:
                that = vt / ti.sqrt(vt2)
            inv_t = _inv_mass_pre(ima, Ia, ra, that, sa) + _inv_mass_pre(imb, Ib, rb, that, sbb)
            lt1 = ti.Vector([0.0, 0.0, 0.0])
            if mu > 1e-9:  # frictionless pairs carry no tangential impulse (and no gradient)
                lt1 = lt0 - vt / inv_t
                ltn = ti.sqrt(lt1.dot(lt1) + TINY * TINY)
                cap = mu * ln1
                if ltn > cap:
                    lt1 = lt1 * (cap / ltn)
            S[b, ol1] = ln1
            for c in ti.static(range(3)):
                S[b, ol1 + 1 + c] = lt1[c]
            J = (ln1 - ln0) * n + (lt1 - lt0)
            odp = _o_dP(nb, nit) + it * nb * 6
            _add_impulse(S, b, odp, bb, rb, J, 1.0)
            _add_impulse(S, b, odp, ba, ra, J, -1.0)
        else:
            for c in ti.static(range(4)):
                S[b, ol1 + c] = 0.0


@ti.func
def _stage_apply(X: ti.template(), prm: ti.template(), top: ti.template(), S: ti.template(), t, b, i, it, nit):
    """V[it + 1] = V[it] + M^-1 dP[it] for body i."""
    nb = top[1]
    im, Iw, x = _body_mass(S, top, b, i, nit)
    o = (it * nb + i) * 6
    od = _o_dP(nb, nit) + o
    dl = ti.Vector([S[b, od + c] for c in ti.static(range(3))])
    da = ti.Vector([S[b, od + 3 + c] for c in ti.static(range(3))])
    dw = Iw @ da
    for c in ti.static(range(3)):
        S[b, o + nb * 6 + c] = S[b, o + c] + im * dl[c]
        S[b, o + nb * 6 + 3 + c] = S[b, o + 3 + c] + dw[c]


@ti.func
def _stage_toi(X: ti.template(), prm: ti.template(), top: ti.template(), S: ti.template(), t, b, cs, dt, nit):
    """Time-of-impact weights: a contact that closes at time toi inside the step moved its
    bodies with the pre-impact velocity until toi; sum toi * J per body into W."""
    nb, P, K = top[1], top[2], top[3]
    p, k, ga, gb = _slot(top, cs)
    ba, bb = top[5 + 2 * ga], top[5 + 2 * gb]
    xa = _com_of(X, t, b, ba)
    xb = _com_of(X, t, b, bb)
    if True:
        oc = _o_C(nb, nit) + (p * K + k) * CW
        gap = S[b, oc + 1]
        vn = S[b, oc + 8]
        # only a contact that closes by its own motion inside the step has an impact time; one
        # already touching (within slop) or pushed shut by other contacts acts from the start
        if S[b, oc] > 0.5 and gap > 0.0 and gap < -vn * dt:
            toi = gap / (-vn)
            ol = _o_L(nb, nit, P, K) + ((nit * P + p) * K + k) * 4
            n = ti.Vector([S[b, oc + 2 + c] for c in ti.static(range(3))])
            point = ti.Vector([S[b, oc + 5 + c] for c in ti.static(range(3))])
            J = S[b, ol] * n + ti.Vector([S[b, ol + 1 + c] for c in ti.static(range(3))])
            ow = _o_W(nb, nit)
            _add_impulse(S, b, ow, bb, point - xb, toi * J, 1.0)
            _add_impulse(S, b, ow, ba, point - xa, toi * J, -1.0)


@ti.func
def _stage_final(X: ti.template(), prm: ti.template(), top: ti.template(), S: ti.template(), t, b, i, dt, nit):
    """Positions from the final velocities (minus the time-of-impact corrections) into X[t+1]."""
    nb = top[1]
    im, Iw, x = _body_mass(S, top, b, i, nit)
    q = ti.Vector([X[t, b, i, 3 + c] for c in ti.static(range(4))])
    o = (nit * nb + i) * 6
    vf = ti.Vector([S[b, o + c] for c in ti.static(range(3))])
    wf = ti.Vector([S[b, o + 3 + c] for c in ti.static(range(3))])
    ow = _o_W(nb, nit) + 6 * i
    Wl = ti.Vector([S[b, ow + c] for c in ti.static(range(3))])
    Wa = ti.Vector([S[b, ow + 3 + c] for c in ti.static(range(3))])
    x1 = x + dt * vf - im * Wl
    th = dt * wf - Iw @ Wa
    dq = 0.5 * ti.Vector([
        -th[0] * q[1] - th[1] * q[2] - th[2] * q[3],
        th[0] * q[0] + th[1] * q[3] - th[2] * q[2],
        -th[0] * q[3] + th[1] * q[0] + th[2] * q[1],
        th[0] * q[2] - th[1] * q[1] + th[2] * q[0],
    ])
    q1 = q + dq
    q1 = q1 / ti.sqrt(q1.dot(q1))
    for c in ti.static(range(3)):
        X[t + 1, b, i, c] = x1[c]
        X[t + 1, b, i, 7 + c] = vf[c]
        X[t + 1, b, i, 10 + c] = wf[c]
    for c in ti.static(range(4)):
        X[t + 1, b, i, 3 + c] = q1[c]


# ------------------------------------------------------------------------------------------
# kernels
# ------------------------------------------------------------------------------------------
@ti.kernel
def init_kernel(X: arr(ndim=4), U: arr(ndim=4), prm: arr(ndim=1), top: arr(ndim=1), S: arr(ndim=2),
                cnt: arr(ndim=2), t: ti.i32, dt: float, nit: ti.i32):
    """Step t, first part: free motion of every body; zeroes the impulse sums. Differentiable
    (one step is init, detect per pair type, nit x iter, post; each a few top-level loops)."""
    for b, i in ti.ndrange(X.shape[1], X.shape[2]):
        _stage_init(X, U, prm, top, S, cnt, t, b, i, dt, nit)
    for b, j in ti.ndrange(X.shape[1], nit * X.shape[2] * 6):
        S[b, _o_dP(X.shape[2], nit) + j] = 0.0


@ti.kernel
def detect_kernel(X: arr(ndim=4), prm: arr(ndim=1), cfg: arr(ndim=1), top: arr(ndim=1), S: arr(ndim=2),
                  cnt: arr(ndim=2), cand: arr(ndim=2), ncand: arr(ndim=1), t: ti.i32, s0: ti.i32, s1: ti.i32,
                  nc: ti.i32, dt: float, nit: ti.i32, mode: ti.template(), toi: ti.template(), ta: ti.template(),
                  tb: ti.template()):
    """Step t: narrow phase of the candidate slots in s0 .. s1 - 1, all of geom types (ta, tb)
    (the slots are sorted by pair type, so each launch compiles one narrow phase only); nc is
    the largest candidate count over the envs."""
    for b, j in ti.ndrange(X.shape[1], nc):
        if j < ncand[b]:
            cs = cand[b, j]
            if cs >= s0 and cs < s1:
                _stage_detect(X, prm, cfg, top, S, cnt, t, b, cs, dt, mode, nit, toi, ta, tb)


@ti.kernel
def iter_kernel(X: arr(ndim=4), prm: arr(ndim=1), top: arr(ndim=1), S: arr(ndim=2), cnt: arr(ndim=2),
                cand: arr(ndim=2), ncand: arr(ndim=1), t: ti.i32, nc: ti.i32, it: ti.i32, nit: ti.i32,
                mode: ti.template()):
    """Step t: solver iteration ``it`` (impulse mode) over the candidates and the velocity
    update V[it + 1]."""
    if ti.static(mode == 0):
        for b, j in ti.ndrange(X.shape[1], nc):
            if j < ncand[b]:
                _stage_solve(X, prm, top, S, cnt, t, b, cand[b, j], it, nit)
    for b, i in ti.ndrange(X.shape[1], X.shape[2]):
        _stage_apply(X, prm, top, S, t, b, i, it, nit)


@ti.kernel
def post_kernel(X: arr(ndim=4), prm: arr(ndim=1), top: arr(ndim=1), S: arr(ndim=2), cand: arr(ndim=2),
                ncand: arr(ndim=1), t: ti.i32, nc: ti.i32, dt: float, nit: ti.i32, mode: ti.template(),
                toi: ti.template()):
    """Step t, last part: time-of-impact weights and the new positions into X[t + 1]."""
    if ti.static(mode == 0 and toi):
        for b, j in ti.ndrange(X.shape[1], nc):
            if j < ncand[b]:
                _stage_toi(X, prm, top, S, t, b, cand[b, j], dt, nit)
    for b, i in ti.ndrange(X.shape[1], X.shape[2]):
        _stage_final(X, prm, top, S, t, b, i, dt, nit)


@ti.func
def _step(X: ti.template(), U: ti.template(), prm: ti.template(), cfg: ti.template(), top: ti.template(),
          S: ti.template(), cnt: ti.template(), BD: ti.template(), bpt: ti.template(), order: ti.template(),
          cand: ti.template(), ncand: ti.template(), nslot, dt, mode: ti.template(), nit, toi: ti.template(),
          types: ti.template(), b, t):
    """Step t of env b, every stage in order (serial; the fused forward and the reverse pass's
    recomputation of a step)."""
    nb = top[1]
    for i in range(nb):
        _stage_init(X, U, prm, top, S, cnt, t, b, i, dt, nit)
    for j in range(nit * nb * 6):
        S[b, _o_dP(nb, nit) + j] = 0.0
    _stage_broad(prm, cfg, top, S, BD, bpt, order, cand, ncand, b, nslot, dt, nit)
    nc = ncand[b]
    for j in range(nc):
        cs = cand[b, j]
        p, k, ga, gb = _slot(top, cs)
        ta, tb = top[4 + 2 * ga], top[4 + 2 * gb]
        for pt in ti.static(types):
            if ta == pt[0] and tb == pt[1]:
                _stage_detect(X, prm, cfg, top, S, cnt, t, b, cs, dt, mode, nit, toi, pt[0], pt[1])
    for it in range(nit):
        if ti.static(mode == 0):
            for j in range(nc):
                _stage_solve(X, prm, top, S, cnt, t, b, cand[b, j], it, nit)
        for i in range(nb):
            _stage_apply(X, prm, top, S, t, b, i, it, nit)
    if ti.static(mode == 0 and toi):
        for j in range(nc):
            _stage_toi(X, prm, top, S, t, b, cand[b, j], dt, nit)
    for i in range(nb):
        _stage_final(X, prm, top, S, t, b, i, dt, nit)


@ti.kernel
def rollout_kernel(X: arr(ndim=4), U: arr(ndim=4), prm: arr(ndim=1), cfg: arr(ndim=1), top: arr(ndim=1),
                   S: arr(ndim=2), cnt: arr(ndim=2), BD: arr(ndim=2), bpt: arr(ndim=1), order: arr(ndim=2),
                   cand: arr(ndim=2), ncand: arr(ndim=1),
                   nslot: ti.i32, dt: float, mode: ti.template(), nit: ti.i32, toi: ti.template(),
                   spread: ti.i32, serial: ti.template(), types: ti.template()):
    """The whole rollout in one launch: parallel over envs, time and stages serial inside.
    ``types``: the (type a, type b) pairs present in the scene: only their narrow phases are
    compiled (one compile per combination, cached on disk)."""
    ti.loop_config(serialize=serial)
    for jb in range(X.shape[1] * spread):  # see runtime.spread
        if jb % spread != 0:
            continue
        b = jb // spread
        for t in range(X.shape[0] - 1):
            _step(X, U, prm, cfg, top, S, cnt, BD, bpt, order, cand, ncand, nslot, dt, mode, nit, toi, types, b, t)


@ti.kernel
def step_kernel(X: arr(ndim=4), U: arr(ndim=4), prm: arr(ndim=1), cfg: arr(ndim=1), top: arr(ndim=1),
                S: arr(ndim=2), cnt: arr(ndim=2), BD: arr(ndim=2), bpt: arr(ndim=1), order: arr(ndim=2),
                cand: arr(ndim=2), ncand: arr(ndim=1), nslot: ti.i32, dt: float, mode: ti.template(), nit: ti.i32,
                toi: ti.template(), spread: ti.i32, serial: ti.template(), types: ti.template(), t: ti.i32):
    """Step t alone, all envs (the reverse pass recomputes each step's scratch S with it, then
    runs the step's adjoint kernels)."""
    ti.loop_config(serialize=serial)
    for jb in range(X.shape[1] * spread):
        if jb % spread != 0:
            continue
        b = jb // spread
        _step(X, U, prm, cfg, top, S, cnt, BD, bpt, order, cand, ncand, nslot, dt, mode, nit, toi, types, b, t)


@ti.kernel
def pack_kernel(q0: arr(ndim=2), qd0: arr(ndim=2), prm: arr(ndim=1), top: arr(ndim=1), X: arr(ndim=4)):
    """Model coordinates (body origin, body-frame velocities) -> internal state X[0]."""
    for b, i in ti.ndrange(X.shape[1], X.shape[2]):
        ng, nb, P = top[0], top[1], top[2]
        oa = 4 + 2 * ng + 3 * P + 2 * i
        qa, va = top[oa], top[oa + 1]
        p = ti.Vector([q0[b, qa + c] for c in ti.static(range(3))])
        q = ti.Vector([q0[b, qa + 3 + c] for c in ti.static(range(4))])
        q = q / ti.sqrt(q.dot(q))
        vb = ti.Vector([qd0[b, va + c] for c in ti.static(range(3))])
        wb = ti.Vector([qd0[b, va + 3 + c] for c in ti.static(range(3))])
        R = _rot(q)
        oc = nb * 10 + 3 * i
        com = ti.Vector([prm[oc + c] for c in ti.static(range(3))])
        x = p + R @ com
        v = R @ (vb + wb.cross(com))
        w = R @ wb
        for c in ti.static(range(3)):
            X[0, b, i, c] = x[c]
            X[0, b, i, 7 + c] = v[c]
            X[0, b, i, 10 + c] = w[c]
        for c in ti.static(range(4)):
            X[0, b, i, 3 + c] = q[c]


@ti.kernel
def unpack_kernel(X: arr(ndim=4), prm: arr(ndim=1), top: arr(ndim=1), Q: arr(ndim=3), QD: arr(ndim=3)):
    """Internal states -> model coordinates q (B, T+1, nq), qd (B, T+1, nv)."""
    for t, b, i in ti.ndrange(X.shape[0], X.shape[1], X.shape[2]):
        ng, nb, P = top[0], top[1], top[2]
        oa = 4 + 2 * ng + 3 * P + 2 * i
        qa, va = top[oa], top[oa + 1]
        x, q, v, w = _x13(X, t, b, i)
        R = _rot(q)
        oc = nb * 10 + 3 * i
        com = ti.Vector([prm[oc + c] for c in ti.static(range(3))])
        p = x - R @ com
        wb = R.transpose() @ w
        vb = R.transpose() @ v - wb.cross(com)
        for c in ti.static(range(3)):
            Q[b, t, qa + c] = p[c]
            QD[b, t, va + c] = vb[c]
            QD[b, t, va + 3 + c] = wb[c]
        for c in ti.static(range(4)):
            Q[b, t, qa + 3 + c] = q[c]


@ti.kernel
def switches_kernel(S: arr(ndim=2), top: arr(ndim=1), prev: arr(ndim=2), out: arr(ndim=1), nslot: ti.i32,
                    nit: ti.i32, count: ti.i32):
    """Counts per env the contacts whose active flag differs from ``prev`` (the neighbouring
    step's), then stores the flags in ``prev``; ``count`` = 0 only records them."""
    for b, cs in ti.ndrange(S.shape[0], nslot):
        nb, K = top[1], top[3]
        ocs = _o_slots(top) + 2 * cs
        p, k = top[ocs], top[ocs + 1]
        a = 1 if S[b, _o_C(nb, nit) + (p * K + k) * CW] > 0.5 else 0
        if a != prev[b, cs] and count == 1:
            ti.atomic_add(out[b], 1)
        prev[b, cs] = a


@ti.kernel
def adjoint_norm_kernel(X: arr(ndim=4), G: arr(ndim=2), t: ti.i32):
    """G[t, b] = |adjoint of state t of env b| (X here is X.grad)."""
    for b in range(X.shape[1]):
        acc = 0.0
        for i, c in ti.ndrange(X.shape[2], 13):
            acc += X[t, b, i, c] ** 2
        G[t, b] = ti.sqrt(acc)
