"""Hand-written adjoints of the dynamics recursions and of the manifold integrator.

Taichi's autodiff cannot differentiate the multi-pass tree recursions (DESIGN.md section 1),
so the derivatives are written by hand, the way Pinocchio derives them (Carpentier and
Mansard, RSS 2018):

- forward dynamics a = ABA(q, v, tau) satisfies RNEA(q, v, a) = tau, so for a cotangent
  a_bar: lambda = M^-1 a_bar, tau_bar = lambda and theta_bar = -lambda^T dRNEA/dtheta at a,
  for theta any of q, v and the physical parameters;
- ``aba_solve`` applies M^-1 with the articulated inertias the forward ABA left in scratch
  (O(n), no mass matrix);
- ``rnea_adjoint`` is the line-by-line reverse of the world-frame RNEA (``dynamics.rnea_env``),
  ending with the reverse of forward kinematics (the force/moment sweep of
  ``kinematics._fk_vjp_kernel``) so gradients come out in the coordinates q (free joints:
  position and quaternion, through the quaternion's normalisation).

Every function works on one env ``b``; work arrays are 2-D (b, k). Cotangent accumulators are
added to, never overwritten, so the callers chain several adjoints into one buffer.
"""

import taichi as ti

from .contact_forces import contact_vjp
from .dynamics import (
    _A,
    _AS,
    _DI,
    _P,
    _PS,
    _U,
    _U1,
    _V,
    _aba_free_outward,
    _bot,
    _join,
    _st6,
    _top,
    _v6,
    body_inertia,
    free_col,
    motion_col,
    ndof,
)
from .kinematics import _FREE, _PRI, _REV
from .tmath import POS, ROT, mat3, quat_exp, quat_mul, quat_to_mat, row_mat3, row_vec3, skew, vec3

# adjoint scratch G (B, nbody, NG): F_bar, A_bar, V_bar (6 each), R_bar (9), p_bar (3), and the
# force / moment sums of the kinematics adjoint (6)
_GFB, _GAB, _GVB, _GRB, _GPB, _GW = 0, 6, 12, 18, 27, 30
NG = 36
# per-body parameter cotangents (B, nbody, NPB): the 13 ``dyn`` columns, then body_pos (3)
NPB = 16
# per-dof parameter cotangents (B, nv, NDOFBAR): damping, armature, spring stiffness
NDOFBAR = 3


# ---------------------------------------------------------------------------------------------
# quaternion helpers
# ---------------------------------------------------------------------------------------------
@ti.func
def q4(a: ti.template(), b, off):
    return ti.Vector([a[b, off], a[b, off + 1], a[b, off + 2], a[b, off + 3]])


@ti.func
def conj(u):
    return ti.Vector([u[0], -u[1], -u[2], -u[3]])


@ti.func
def normalize_vjp(x, ybar):
    """Cotangent of x for y = x / |x|."""
    n = x.norm()
    y = x / n
    return (ybar - y * y.dot(ybar)) / n


@ti.func
def quat_to_mat_vjp(u, Rb):
    """Cotangent of a quaternion u (any norm) for R = quat_to_mat(u), given R_bar."""
    n = u.norm()
    w, x, y, z = u[0] / n, u[1] / n, u[2] / n, u[3] / n
    dw = ti.Matrix([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    dx = ti.Matrix([[0.0, y, z], [y, -2.0 * x, -w], [z, w, -2.0 * x]])
    dy = ti.Matrix([[-2.0 * y, x, w], [x, 0.0, z], [-w, z, -2.0 * y]])
    dz = ti.Matrix([[-2.0 * z, -w, x], [w, -2.0 * z, y], [x, y, 0.0]])
    ub = 2.0 * ti.Vector([(Rb * dw).sum(), (Rb * dx).sum(), (Rb * dy).sum(), (Rb * dz).sum()])
    return normalize_vjp(u, ub)


@ti.func
def quat_exp_vjp(th, eb):
    """Cotangent of the rotation vector th for e = quat_exp(th) = (cos(|th|/2), sin(|th|/2) th/|th|)."""
    t = th.norm()
    h = 0.5 * t
    k = 0.5 - t * t / 48.0
    g = -1.0 / 24.0  # (dk/dt) / t, its small-angle limit
    if t > 1e-6:
        k = ti.sin(h) / t
        g = (0.5 * ti.cos(h) * t - ti.sin(h)) / (t * t * t)
    ev = ti.Vector([eb[1], eb[2], eb[3]])
    return -0.5 * k * eb[0] * th + k * ev + th * (th.dot(ev) * g)


@ti.func
def quat_log_vjp(r, fb):
    """Cotangent of the unit quaternion r for f = quat_log(r)."""
    sg = 1.0
    if r[0] < 0.0:
        r = -r
        sg = -1.0
    v = ti.Vector([r[1], r[2], r[3]])
    w = r[0]
    s = v.norm()
    ss = s * s + w * w
    c = 2.0 / ti.max(w, 1e-300)
    cs = -4.0 / (3.0 * w * w * w)  # (dc/ds) / s, small-s limit
    if s > 1e-4:
        at = ti.atan2(s, w)
        c = 2.0 * at / s
        cs = 2.0 * (w * s / ss - at) / (s * s * s)
    elif s > 1e-12:
        c = 2.0 * ti.atan2(s, w) / s
    cw = -2.0 / ss
    vb = c * fb + v * (cs * v.dot(fb))
    return sg * ti.Vector([cw * v.dot(fb), vb[0], vb[1], vb[2]])


# ---------------------------------------------------------------------------------------------
# integrator on the manifold: q_out = q (+) scale * d[b, row, :]
# ---------------------------------------------------------------------------------------------
@ti.func
def _free_increment(q: ti.template(), d: ti.template(), row, scale, b, qa, va):
    """A free joint's quaternion u (raw and unit), its rotation and the scaled body-frame
    increment (linear, angular) read from d[b, row]."""
    u = q4(q, b, qa + 3)
    dl = ti.Vector([d[b, row, va], d[b, row, va + 1], d[b, row, va + 2]]) * scale
    dw = ti.Vector([d[b, row, va + 3], d[b, row, va + 4], d[b, row, va + 5]]) * scale
    return u, u / u.norm(), quat_to_mat(u[0], u[1], u[2], u[3]), dl, dw


@ti.func
def integrate_env(topo: ti.template(), q: ti.template(), d: ti.template(), row, scale, qo: ti.template(), b):
    """Revolute and prismatic: q + scale d. Free joint (x, quat), d = (v, w) in the body frame:
    x + R(quat) v scale, normalise(quat * exp(w scale)). ``qo`` may alias ``q`` only for
    one-dof joints; the free branch reads everything before writing."""
    nbody = topo[0, 2]
    for i in range(1, nbody):
        jt, qa, va = topo[i, 1], topo[i, 2], topo[i, 3]
        if jt == _REV or jt == _PRI:
            qo[b, qa] = q[b, qa] + scale * d[b, row, va]
        elif jt == _FREE:
            u, un, Rn, dl, dw = _free_increment(q, d, row, scale, b, qa, va)
            p = ti.Vector([q[b, qa], q[b, qa + 1], q[b, qa + 2]]) + Rn @ dl
            r = quat_mul(un, quat_exp(dw))
            r = r / r.norm()
            for k in ti.static(range(3)):
                qo[b, qa + k] = p[k]
            for k in ti.static(range(4)):
                qo[b, qa + 3 + k] = r[k]


@ti.func
def integrate_vjp(topo: ti.template(), q: ti.template(), d: ti.template(), row, scale, qob: ti.template(),
                  qb: ti.template(), db: ti.template(), b):
    """Reverse of ``integrate_env``: the cotangent qob of q_out adds into qb (of q) and into
    db[b, row] (of d)."""
    nbody = topo[0, 2]
    for i in range(1, nbody):
        jt, qa, va = topo[i, 1], topo[i, 2], topo[i, 3]
        if jt == _REV or jt == _PRI:
            qb[b, qa] += qob[b, qa]
            db[b, row, va] += scale * qob[b, qa]
        elif jt == _FREE:
            u, un, Rn, dl, dw = _free_increment(q, d, row, scale, b, qa, va)
            e = quat_exp(dw)
            r = quat_mul(un, e)
            pb = ti.Vector([qob[b, qa], qob[b, qa + 1], qob[b, qa + 2]])
            rb = normalize_vjp(r, q4(qob, b, qa + 3))
            unb = quat_mul(rb, conj(e))
            eb = quat_mul(conj(un), rb)
            dwb = quat_exp_vjp(dw, eb)
            dlb = Rn.transpose() @ pb
            ub = quat_to_mat_vjp(u, pb.outer_product(dl)) + normalize_vjp(u, unb)
            for k in ti.static(range(3)):
                qb[b, qa + k] += pb[k]
                db[b, row, va + k] += scale * dlb[k]
                db[b, row, va + 3 + k] += scale * dwb[k]
            for k in ti.static(range(4)):
                qb[b, qa + 3 + k] += ub[k]


# ---------------------------------------------------------------------------------------------
# M^-1 through the ABA factorisation
# ---------------------------------------------------------------------------------------------
@ti.func
def aba_solve(topo: ti.template(), geo: ti.template(), pose: ti.template(), S: ti.template(), y: ti.template(),
              x: ti.template(), b):
    """x = M(q)^-1 y, reusing U and D^-1 that ``aba_env`` left in S at the same q (armature
    included; velocity, damping and gravity play no part). Uses the _PS, _AS and _U1
    slots (not _P and _A: the RNEA adjoint reads those after the solve)."""
    nbody = topo[0, 2]
    for i in range(nbody):
        _st6(S, b, i, _PS, ti.Vector.zero(float, 6))
    for kk in range(nbody - 1):
        i = nbody - 1 - kk
        jt, va, par = topo[i, 1], topo[i, 3], topo[i, 0]
        pA = _v6(S, b, i, _PS)
        if jt == _FREE:
            R = mat3(pose, b, i, ROT)
            p = vec3(pose, b, i, POS)
            for k in range(6):
                S[b, i, _U1 + k] = y[b, va + k] - free_col(R, p, k).dot(pA)
            if par > 0:
                pa = pA
                for k1 in range(6):
                    z = 0.0
                    for k2 in range(6):
                        z += S[b, i, _DI + 6 * k1 + k2] * S[b, i, _U1 + k2]
                    pa += _v6(S, b, i, _U + 6 * k1) * z
                _st6(S, b, par, _PS, _v6(S, b, par, _PS) + pa)
        elif jt == _REV or jt == _PRI:
            u = y[b, va] - motion_col(topo, geo, pose, b, i, 0).dot(pA)
            S[b, i, _U1] = u
            if par > 0:
                _st6(S, b, par, _PS, _v6(S, b, par, _PS) + pA + _v6(S, b, i, _U) * (S[b, i, _DI] * u))
        elif par > 0:
            _st6(S, b, par, _PS, _v6(S, b, par, _PS) + pA)
    _st6(S, b, 0, _AS, ti.Vector.zero(float, 6))
    for i in range(1, nbody):
        jt, va = topo[i, 1], topo[i, 3]
        A = _v6(S, b, topo[i, 0], _AS)
        if jt == _FREE:
            A = _aba_free_outward(pose, S, x, b, i, va, A)
        elif jt == _REV or jt == _PRI:
            z = S[b, i, _DI] * (S[b, i, _U1] - _v6(S, b, i, _U).dot(A))
            x[b, va] = z
            A += motion_col(topo, geo, pose, b, i, 0) * z
        _st6(S, b, i, _AS, A)


# ---------------------------------------------------------------------------------------------
# reverse of RNEA
# ---------------------------------------------------------------------------------------------
@ti.func
def _add_pose_bar(G: ti.template(), b, i, Rb, pb):
    for r, c in ti.static(ti.ndrange(3, 3)):
        G[b, i, _GRB + 3 * r + c] += Rb[r, c]
    for k in ti.static(range(3)):
        G[b, i, _GPB + k] += pb[k]


@ti.func
def _col_vjp(topo: ti.template(), geo: ti.template(), pose: ti.template(), G: ti.template(), b, i, k, sb):
    """Pose cotangents of body i from the cotangent sb of its motion column k."""
    jt = topo[i, 1]
    R = mat3(pose, b, i, ROT)
    p = vec3(pose, b, i, POS)
    s1, s2 = _top(sb), _bot(sb)
    Rb = ti.Matrix.zero(float, 3, 3)
    pb = ti.Vector([0.0, 0.0, 0.0])
    if jt == _REV:
        a = row_vec3(geo, i, 12)
        c = row_vec3(geo, i, 15)
        w = R @ a
        o = p + R @ c
        ob = w.cross(s2)
        Rb = (s1 + s2.cross(o)).outer_product(a) + ob.outer_product(c)
        pb = ob
    elif jt == _PRI:
        Rb = s2.outer_product(row_vec3(geo, i, 12))
    elif jt == _FREE:
        kk = k % 3
        eb = s2
        if k >= 3:
            e = ti.Vector([R[0, kk], R[1, kk], R[2, kk]])
            eb = s1 + s2.cross(p)
            pb = e.cross(s2)
        for r in ti.static(range(3)):
            Rb[r, kk] = eb[r]
    _add_pose_bar(G, b, i, Rb, pb)


@ti.func
def _inertia_vjp(dyn: ti.template(), pose: ti.template(), G: ti.template(), pbar: ti.template(), b, i, Ib, sign):
    """Cotangents of ``body_inertia`` (6x6 about the origin) -> pose of body i (into G) and
    mass, COM and inertia (into pbar, times sign)."""
    m = dyn[i, 0]
    R = mat3(pose, b, i, ROT)
    com = row_vec3(dyn, i, 1)
    Icb = row_mat3(dyn, i, 4)
    c = vec3(pose, b, i, POS) + R @ com
    C = skew(c)
    TL = ti.Matrix([[Ib[r, k] for k in ti.static(range(3))] for r in ti.static(range(3))])
    TR = ti.Matrix([[Ib[r, 3 + k] for k in ti.static(range(3))] for r in ti.static(range(3))])
    BL = ti.Matrix([[Ib[3 + r, k] for k in ti.static(range(3))] for r in ti.static(range(3))])
    mb = -(TL * (C @ C)).sum() + (TR * C).sum() - (BL * C).sum() + Ib[3, 3] + Ib[4, 4] + Ib[5, 5]
    Cb = -m * (TL @ C.transpose() + C.transpose() @ TL) + m * (TR - BL)
    cb = ti.Vector([Cb[2, 1] - Cb[1, 2], Cb[0, 2] - Cb[2, 0], Cb[1, 0] - Cb[0, 1]])
    Rb = cb.outer_product(com) + TL @ R @ Icb.transpose() + TL.transpose() @ R @ Icb
    _add_pose_bar(G, b, i, Rb, cb)
    comb = R.transpose() @ cb
    Icbar = R.transpose() @ TL @ R
    pbar[b, i, 0] += sign * mb
    for k in ti.static(range(3)):
        pbar[b, i, 1 + k] += sign * comb[k]
    for r, k in ti.static(ti.ndrange(3, 3)):
        pbar[b, i, 4 + 3 * r + k] += sign * Icbar[r, k]


@ti.func
def rnea_adjoint(q: ti.template(), qd: ti.template(), qdd: ti.template(), lam: ti.template(), topo: ti.template(),
                 geo: ti.template(), dyn: ti.template(), dof: ti.template(), pose: ti.template(), S: ti.template(),
                 G: ti.template(), qb: ti.template(), qdb: ti.template(), pbar: ti.template(), dofbar: ti.template(),
                 b, sign, cg: ti.template(), cgb: ti.template()):
    """Adds sign * d(lam . RNEA(q, qd, qdd))/d(.) into qb (B, nq: coordinates), qdb (B, nv),
    pbar (B, nbody, NPB: dyn columns then body_pos; gravity in row 0, columns 1-3) and dofbar
    (B, nv, NDOFBAR: damping, armature, spring stiffness). Needs S (V, C, A and the summed forces in P) from
    ``rnea_env`` at the same (q, qd, qdd). With a contact table cg (else the int 0) that has
    pairs, the contact wrenches' part (-J^T F_ext) is reversed too; geom parameter cotangents
    go to cgb."""
    nbody = topo[0, 2]
    for i in range(nbody):
        for c in range(NG):
            G[b, i, c] = 0.0
    # tau_k = S_k . F_i  ->  F_bar_i = F_bar_parent + sum_k lam_k S_k (root to leaves)
    for i in range(1, nbody):
        jt, va = topo[i, 1], topo[i, 3]
        Fb = _v6(G, b, topo[i, 0], _GFB)
        for k in range(ndof(jt)):
            Fb += motion_col(topo, geo, pose, b, i, k) * lam[b, va + k]
        _st6(G, b, i, _GFB, Fb)
    # P_i = I A + V x* (I V), with P_bar = F_bar
    for i in range(1, nbody):
        Pb = _v6(G, b, i, _GFB)
        Ib = body_inertia(dyn, pose, b, i)
        A = _v6(S, b, i, _A)
        V = _v6(S, b, i, _V)
        h = Ib @ V
        n, f, a, bb, w, u = _top(h), _bot(h), _top(Pb), _bot(Pb), _top(V), _bot(V)
        hb = -_join(w.cross(a), w.cross(bb) + u.cross(a))
        Vb = _join(n.cross(a) + f.cross(bb), f.cross(a)) + Ib @ hb
        _st6(G, b, i, _GAB, Ib @ Pb)
        _st6(G, b, i, _GVB, Vb)
        _inertia_vjp(dyn, pose, G, pbar, b, i, Pb.outer_product(A) + hb.outer_product(V), sign)
    if ti.static(not isinstance(cg, int)):  # before the velocity cotangents flow to the root
        if cg[0, 0] > 0:
            contact_vjp(cg, pose, S, G, cgb, b, sign, _GFB, _GVB, _GRB, _GPB)
    # A_i = A_par + V_i xm vj_i + S qdd, V_i = V_par + vj_i, vj_i = S qd (leaves to root)
    for kk in range(nbody - 1):
        i = nbody - 1 - kk
        jt, va, par = topo[i, 1], topo[i, 3], topo[i, 0]
        Ab = _v6(G, b, i, _GAB)
        Vb = _v6(G, b, i, _GVB)
        V = _v6(S, b, i, _V)
        vj = V - _v6(S, b, par, _V)
        w, u, w2, u2, c1, c2 = _top(V), _bot(V), _top(vj), _bot(vj), _top(Ab), _bot(Ab)
        Vb += _join(w2.cross(c1) + u2.cross(c2), w2.cross(c2))
        vjb = _join(c1.cross(w) + c2.cross(u), c2.cross(w)) + Vb
        if par > 0:
            _st6(G, b, par, _GAB, _v6(G, b, par, _GAB) + Ab)
            _st6(G, b, par, _GVB, _v6(G, b, par, _GVB) + Vb)
        else:  # A_0 = (0, -g)
            for k in ti.static(range(3)):
                pbar[b, 0, 1 + k] -= sign * Ab[3 + k]
        F = _v6(S, b, i, _P)
        for k in range(ndof(jt)):
            d = va + k
            s = motion_col(topo, geo, pose, b, i, k)
            lk = lam[b, d]
            qdb[b, d] += sign * (vjb.dot(s) + lk * dof[d, 0])
            dofbar[b, d, 0] += sign * lk * qd[b, d]
            dofbar[b, d, 1] += sign * lk * qdd[b, d]
            _col_vjp(topo, geo, pose, G, b, i, k, F * lk + Ab * qdd[b, d] + vjb * qd[b, d])
        if jt == _REV or jt == _PRI:  # the spring stiffness (q - springref)
            qa, lk = topo[i, 2], lam[b, va]
            qb[b, qa] += sign * lk * dof[va, 2]
            dofbar[b, va, 2] += sign * lk * (q[b, qa] - dof[va, 3])
    pose_adjoint(q, topo, geo, pose, G, qb, pbar, b, sign)


@ti.func
def pose_adjoint(q: ti.template(), topo: ti.template(), geo: ti.template(), pose: ti.template(), G: ti.template(),
                 qb: ti.template(), pbar: ti.template(), b, sign):
    """World-pose cotangents of the bodies (G's R_bar, p_bar) -> q (coordinates) and body_pos,
    times sign. Moving joint j by dq turns every body below it about w_j through o_j (or
    shifts it along d_j), so the cotangents below j reduce to a force F and a moment N about
    the origin, summed leaves to root."""
    nbody = topo[0, 2]
    for i in range(1, nbody):
        R = mat3(pose, b, i, ROT)
        p = vec3(pose, b, i, POS)
        pb = vec3(G, b, i, _GPB)
        A = R @ mat3(G, b, i, _GRB).transpose()
        n = p.cross(pb) + ti.Vector([A[1, 2] - A[2, 1], A[2, 0] - A[0, 2], A[0, 1] - A[1, 0]])
        _st6(G, b, i, _GW, _join(pb, n))
    for kk in range(nbody - 1):
        i = nbody - 1 - kk
        W = _v6(G, b, i, _GW)
        F, N = _top(W), _bot(W)
        jt, qa, par = topo[i, 1], topo[i, 2], topo[i, 0]
        R = mat3(pose, b, i, ROT)
        p = vec3(pose, b, i, POS)
        Rpar = mat3(pose, b, par, ROT)
        posb = Rpar.transpose() @ F
        for k in ti.static(range(3)):
            pbar[b, i, 13 + k] += sign * posb[k]
        if jt == _REV:
            w = R @ row_vec3(geo, i, 12)
            o = p + R @ row_vec3(geo, i, 15)
            qb[b, qa] += sign * w.dot(N - o.cross(F))
        elif jt == _PRI:
            qb[b, qa] += sign * (R @ row_vec3(geo, i, 12)).dot(F)
        elif jt == _FREE:
            gl = R.transpose() @ F
            ga = R.transpose() @ (N - p.cross(F))
            u = q4(q, b, qa + 3)
            nu = u.norm()
            un = u / nu
            pl = quat_to_mat(u[0], u[1], u[2], u[3]) @ gl
            qg = quat_mul(un, ti.Vector([0.0, ga[0], ga[1], ga[2]])) * (2.0 / nu)
            for k in ti.static(range(3)):
                qb[b, qa + k] += sign * pl[k]
            for k in ti.static(range(4)):
                qb[b, qa + 3 + k] += sign * qg[k]
        if par > 0:
            _st6(G, b, par, _GW, _v6(G, b, par, _GW) + W)

