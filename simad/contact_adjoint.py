"""The contact gradient's reverse pass, written by hand: ``reverse_kernel`` runs it whole in one
launch, one thread per env, for t = T - 1 .. 0: step t recomputed with the forward's own code
(``contact_kernels._step``), then the reverse of each stage in turn (positions and time-of-impact
sums, the ``nit`` Jacobi iterations, the narrow phase of every pair type, the free motion).

Why by hand: Taichi's reverse mode of the per-step stage kernels (still here as the tests'
reference, ``contact.SOLVER_ADJOINT = "taichi"``) turns every global read into an atomic add on
S.grad and needs a launch per stage and step; the billiards gradient (B = 256, T = 250) took
8-9x its forward, and 45x at B = 1, where launches dominate. In one launch per env the step's
scratch S and S.grad (~180 KB for 16 balls) stay in the core's cache, and every write to S.grad
is a plain add to memory the thread owns. Parameter cotangents go to a per-env buffer PG
(B, nprm) that the host sums, so no atomics either.

Conventions (Taichi's, so the reference path and this one agree to rounding):
  * a value the forward *stores* has its cotangent consumed and zeroed (X[t + 1], V[it + 1],
    L[it + 1], the contact records, the body data); a value it *reads* has its cotangent
    accumulated;
  * non-smooth points take the branch the forward took, with Taichi's tie rules: max(a, b)
    passes the cotangent to a iff a > b (else to b), min(a, b) to a iff a < b, |x| has slope
    0 at 0. So the Jacobi clamp, the friction cone, the slip-direction switch (SLIP_EPS), the
    fixed tangent of a resting contact, the restitution ramp, the contact activity test, the
    reference face of a box pair and the clamped segment parameters of capsules are
    differentiated on the side the forward chose. The contact counts of the mass splitting are
    integers (no gradient).
``tests/test_contact.py`` checks this module against Taichi's reverse mode of the stage kernels
(every gradient kind, both modes, the quality report) and, for all nine pair types, against
central finite differences.
"""

import taichi as ti

from .contact_kernels import (
    BOX,
    CAPSULE,
    CW,
    DW,
    NCFG,
    PI,
    PLANE,
    SLIP_EPS,
    SPHERE,
    TINY,
    _body,
    _body_mass,
    _body_or_zero,
    _body_raw,
    _coef,
    _com_of,
    _geom_pose,
    _inv_mass_pre,
    _narrow,
    _o_C,
    _o_D,
    _o_dP,
    _o_L,
    _o_slots,
    _o_W,
    _point_vel,
    _rot,
    _segments,
    _slot,
    _step,
    _tangent,
    _v6,
    _x13,
    arr,
)


@ti.func
def _add(Sg: ti.template(), b, o, v):
    for c in ti.static(range(v.n)):
        Sg[b, o + c] = Sg[b, o + c] + v[c]


@ti.func
def _inv_mass_adj(Iw, r, d, split, g):
    """Cotangents (im, Iw, r, d) of split * (im + (r x d) . Iw (r x d)) for the cotangent g."""
    rd = r.cross(d)
    rdbar = split * g * ((Iw + Iw.transpose()) @ rd)
    return split * g, split * g * rd.outer_product(rd), d.cross(rdbar), rdbar.cross(r)


@ti.func
def _tangent_adj(n, tbar_hat):
    """Cotangent of n for ``_tangent(n)`` (the forward's branch on |n_x|)."""
    a = ti.Vector([1.0, 0.0, 0.0])
    if ti.abs(n[0]) > 0.8:
        a = ti.Vector([0.0, 1.0, 0.0])
    t = a - a.dot(n) * n
    tn = ti.sqrt(t.dot(t))
    th = t / tn
    tbar = (tbar_hat - th * th.dot(tbar_hat)) / tn
    return -(n.dot(tbar) * a + a.dot(n) * tbar)


@ti.func
def _body_adj(Sg: ti.template(), top: ti.template(), b, body, nit, imbar, Iwbar, xbar):
    if body >= 0:
        o = _o_D(top[1], nit, top[2], top[3]) + DW * body
        Sg[b, o] = Sg[b, o] + imbar
        for r, c in ti.static(ti.ndrange(3, 3)):
            Sg[b, o + 1 + 3 * r + c] = Sg[b, o + 1 + 3 * r + c] + Iwbar[r, c]
        _add(Sg, b, o + 19, xbar)


@ti.func
def _apply_adj(S: ti.template(), Sg: ti.template(), top: ti.template(), b, i, it, nit):
    """Reverse of V[it + 1] = V[it] + (im dP_lin, Iw dP_ang) for body i."""
    nb = top[1]
    im, Iw, x = _body_mass(S, top, b, i, nit)
    o = (it * nb + i) * 6
    o1 = o + nb * 6
    od = _o_dP(nb, nit) + o
    gl = ti.Vector([Sg[b, o1 + c] for c in ti.static(range(3))])
    ga = ti.Vector([Sg[b, o1 + 3 + c] for c in ti.static(range(3))])
    for c in ti.static(range(6)):
        Sg[b, o + c] = Sg[b, o + c] + Sg[b, o1 + c]
        Sg[b, o1 + c] = 0.0
    dl = ti.Vector([S[b, od + c] for c in ti.static(range(3))])
    da = ti.Vector([S[b, od + 3 + c] for c in ti.static(range(3))])
    _add(Sg, b, od, im * gl)
    _add(Sg, b, od + 3, Iw.transpose() @ ga)
    _body_adj(Sg, top, b, i, nit, dl.dot(gl), ga.outer_product(da), ti.Vector([0.0, 0.0, 0.0]))


@ti.func
def _solve_adj(S: ti.template(), Sg: ti.template(), prm: ti.template(), PG: ti.template(), top: ti.template(),
               cnt: ti.template(), b, cs, it, nit):
    """Reverse of ``_stage_solve`` for contact slot cs at iteration it (same forward, recomputed)."""
    nb, ng, P, K = top[1], top[0], top[2], top[3]
    p, k, ga, gb = _slot(top, cs)
    ba, bb = top[5 + 2 * ga], top[5 + 2 * gb]
    oV = it * nb * 6
    oc = _o_C(nb, nit) + (p * K + k) * CW
    ol = _o_L(nb, nit, P, K) + ((it * P + p) * K + k) * 4
    ol1 = ol + P * K * 4
    l1bar = ti.Vector([Sg[b, ol1 + c] for c in ti.static(range(4))])
    for c in ti.static(range(4)):
        Sg[b, ol1 + c] = 0.0
    if S[b, oc] > 0.5:
        zero3 = ti.Vector([0.0, 0.0, 0.0])
        # ---- forward, recomputed (as in _stage_solve) ----
        mu, e = _coef(prm, top, ga, gb)
        ima, Ia, xa = _body_or_zero(S, top, b, ba, nit)
        imb, Ib, xb = _body_or_zero(S, top, b, bb, nit)
        n = ti.Vector([S[b, oc + 2 + c] for c in ti.static(range(3))])
        point = ti.Vector([S[b, oc + 5 + c] for c in ti.static(range(3))])
        tgt = S[b, oc + 9]
        ra = point - xa
        rb = point - xb
        sa = 1.0
        sbb = 1.0
        va, wa, vb, wb = zero3, zero3, zero3, zero3
        if ba >= 0:
            sa = ti.cast(ti.max(cnt[b, ba], 1), float)
            Va = _v6(S, b, oV + 6 * ba)
            va = ti.Vector([Va[0], Va[1], Va[2]])
            wa = ti.Vector([Va[3], Va[4], Va[5]])
        if bb >= 0:
            sbb = ti.cast(ti.max(cnt[b, bb], 1), float)
            Vb = _v6(S, b, oV + 6 * bb)
            vb = ti.Vector([Vb[0], Vb[1], Vb[2]])
            wb = ti.Vector([Vb[3], Vb[4], Vb[5]])
        vrel = (vb + wb.cross(rb)) - (va + wa.cross(ra))
        vn = vrel.dot(n)
        vt = vrel - vn * n
        rna = ra.cross(n)
        rnb = rb.cross(n)
        inv_n = sa * (ima + rna.dot(Ia @ rna)) + sbb * (imb + rnb.dot(Ib @ rnb))
        ln0 = S[b, ol]
        lt0 = ti.Vector([S[b, ol + 1 + c] for c in ti.static(range(3))])
        arg = ln0 + (tgt - vn) / inv_n
        ln1 = ti.max(arg, 0.0)
        vt2 = vt.dot(vt)
        slip = vt2 > SLIP_EPS * SLIP_EPS
        that = _tangent(n)
        if slip:
            that = vt / ti.sqrt(vt2)
        rta = ra.cross(that)
        rtb = rb.cross(that)
        inv_t = sa * (ima + rta.dot(Ia @ rta)) + sbb * (imb + rtb.dot(Ib @ rtb))
        fric = mu > 1e-9
        lt1 = zero3
        u = zero3
        ltn = 1.0
        cap = 0.0
        clamped = False
        if fric:
            u = lt0 - vt / inv_t
            lt1 = u
            ltn = ti.sqrt(u.dot(u) + TINY * TINY)
            cap = mu * ln1
            if ltn > cap:
                clamped = True
                lt1 = u * (cap / ltn)
        J = (ln1 - ln0) * n + (lt1 - lt0)

        # ---- reverse ----
        odp = _o_dP(nb, nit) + it * nb * 6
        Jbar = zero3
        rabar = zero3
        rbbar = zero3
        if bb >= 0:
            gl = ti.Vector([Sg[b, odp + 6 * bb + c] for c in ti.static(range(3))])
            gw = ti.Vector([Sg[b, odp + 6 * bb + 3 + c] for c in ti.static(range(3))])
            Jbar += gl + gw.cross(rb)
            rbbar += J.cross(gw)
        if ba >= 0:
            gl = ti.Vector([Sg[b, odp + 6 * ba + c] for c in ti.static(range(3))])
            gw = ti.Vector([Sg[b, odp + 6 * ba + 3 + c] for c in ti.static(range(3))])
            Jbar -= gl + gw.cross(ra)
            rabar -= J.cross(gw)
        ln1bar = l1bar[0]
        lt1bar = ti.Vector([l1bar[1], l1bar[2], l1bar[3]])
        jn = Jbar.dot(n)
        ln1bar += jn
        ln0bar = -jn
        nbar = (ln1 - ln0) * Jbar
        lt1bar += Jbar
        lt0bar = -Jbar
        mubar = 0.0
        vtbar = zero3
        inv_tbar = 0.0
        if fric:
            ubar = lt1bar
            if clamped:
                ul = u.dot(lt1bar)
                ubar = (cap / ltn) * lt1bar - (cap / (ltn * ltn * ltn)) * ul * u
                capbar = ul / ltn
                mubar += capbar * ln1
                ln1bar += capbar * mu
            lt0bar += ubar
            vtbar -= ubar / inv_t
            inv_tbar += ubar.dot(vt) / (inv_t * inv_t)
        # the tangential effective mass
        imabar, Iabar, rab_, tha = _inv_mass_adj(Ia, ra, that, sa, inv_tbar)
        imbbar, Ibbar, rbb_, thb = _inv_mass_adj(Ib, rb, that, sbb, inv_tbar)
        rabar += rab_
        rbbar += rbb_
        thatbar = tha + thb
        if slip:
            vtbar += (thatbar - that * that.dot(thatbar)) / ti.sqrt(vt2)
        else:
            nbar += _tangent_adj(n, thatbar)
        # ln1 = max(arg, 0)
        vnbar = 0.0
        tgtbar = 0.0
        inv_nbar = 0.0
        if arg > 0.0:
            ln0bar += ln1bar
            tgtbar = ln1bar / inv_n
            vnbar -= ln1bar / inv_n
            inv_nbar = -ln1bar * (tgt - vn) / (inv_n * inv_n)
        # the normal effective mass
        i1, I1, r1, n1 = _inv_mass_adj(Ia, ra, n, sa, inv_nbar)
        i2, I2, r2, n2 = _inv_mass_adj(Ib, rb, n, sbb, inv_nbar)
        imabar += i1
        Iabar += I1
        rabar += r1
        imbbar += i2
        Ibbar += I2
        rbbar += r2
        nbar += n1 + n2
        # vt = vrel - vn n, vn = vrel . n
        vnbar -= vtbar.dot(n)
        nbar -= vn * vtbar
        vrelbar = vtbar + vnbar * n
        nbar += vnbar * vrel
        # vrel = (vb + wb x rb) - (va + wa x ra)
        if bb >= 0:
            _add(Sg, b, oV + 6 * bb, vrelbar)
            _add(Sg, b, oV + 6 * bb + 3, rb.cross(vrelbar))
            rbbar += vrelbar.cross(wb)
        if ba >= 0:
            _add(Sg, b, oV + 6 * ba, -vrelbar)
            _add(Sg, b, oV + 6 * ba + 3, -ra.cross(vrelbar))
            rabar -= vrelbar.cross(wa)
        # r = point - x
        _body_adj(Sg, top, b, ba, nit, imabar, Iabar, -rabar)
        _body_adj(Sg, top, b, bb, nit, imbbar, Ibbar, -rbbar)
        _add(Sg, b, oc + 2, nbar)
        _add(Sg, b, oc + 5, rabar + rbbar)
        Sg[b, oc + 9] = Sg[b, oc + 9] + tgtbar
        Sg[b, ol] = Sg[b, ol] + ln0bar
        _add(Sg, b, ol + 1, lt0bar)
        if mubar != 0.0:  # mu = sqrt(f_a f_b + TINY^2)
            of = nb * 13 + ng * 3
            fa, fb = prm[of + ga], prm[of + gb]
            PG[b, of + ga] = PG[b, of + ga] + mubar * fb / (2.0 * mu)
            PG[b, of + gb] = PG[b, of + gb] + mubar * fa / (2.0 * mu)



@ti.func
def _final_adj(X: ti.template(), Xg: ti.template(), S: ti.template(), Sg: ti.template(), top: ti.template(), t, b, i,
               dt, nit):
    """Reverse of ``_stage_final`` for body i: consumes (and zeroes) the cotangent of X[t + 1]."""
    nb = top[1]
    im, Iw, x = _body_mass(S, top, b, i, nit)
    q = ti.Vector([X[t, b, i, 3 + c] for c in ti.static(range(4))])
    o = (nit * nb + i) * 6
    wf = ti.Vector([S[b, o + 3 + c] for c in ti.static(range(3))])
    ow = _o_W(nb, nit) + 6 * i
    Wl = ti.Vector([S[b, ow + c] for c in ti.static(range(3))])
    Wa = ti.Vector([S[b, ow + 3 + c] for c in ti.static(range(3))])
    th = dt * wf - Iw @ Wa
    qv = ti.Vector([q[1], q[2], q[3]])
    dv = q[0] * th + th.cross(qv)
    dq = 0.5 * ti.Vector([-th.dot(qv), dv[0], dv[1], dv[2]])
    q1u = q + dq
    nq = ti.sqrt(q1u.dot(q1u))
    q1 = q1u / nq
    x1bar = ti.Vector([Xg[t + 1, b, i, c] for c in ti.static(range(3))])
    q1bar = ti.Vector([Xg[t + 1, b, i, 3 + c] for c in ti.static(range(4))])
    vfbar = ti.Vector([Xg[t + 1, b, i, 7 + c] for c in ti.static(range(3))])
    wfbar = ti.Vector([Xg[t + 1, b, i, 10 + c] for c in ti.static(range(3))])
    for c in ti.static(range(13)):
        Xg[t + 1, b, i, c] = 0.0
    qubar = (q1bar - q1 * q1.dot(q1bar)) / nq  # q1 = q1u / |q1u|
    gw = 0.5 * qubar[0]
    gv = 0.5 * ti.Vector([qubar[1], qubar[2], qubar[3]])
    thbar = -gw * qv + q[0] * gv + qv.cross(gv)  # dq = 0.5 (-th . qv, q_w th + th x qv)
    qwbar = qubar[0] + th.dot(gv)
    qvbar = ti.Vector([qubar[1], qubar[2], qubar[3]]) - gw * th + gv.cross(th)
    Xg[t, b, i, 3] = Xg[t, b, i, 3] + qwbar
    for c in ti.static(range(3)):
        Xg[t, b, i, 4 + c] = Xg[t, b, i, 4 + c] + qvbar[c]
    vfbar += dt * x1bar  # x1 = x + dt vf - im Wl
    wfbar += dt * thbar  # th = dt wf - Iw Wa
    _add(Sg, b, o, vfbar)
    _add(Sg, b, o + 3, wfbar)
    _add(Sg, b, ow, -im * x1bar)
    _add(Sg, b, ow + 3, -(Iw.transpose() @ thbar))
    _body_adj(Sg, top, b, i, nit, -Wl.dot(x1bar), -thbar.outer_product(Wa), x1bar)


@ti.func
def _toi_adj(X: ti.template(), Xg: ti.template(), S: ti.template(), Sg: ti.template(), top: ti.template(), t, b, cs,
             dt, nit):
    """Reverse of ``_stage_toi`` for contact slot cs (the time-of-impact sums W)."""
    nb, P, K = top[1], top[2], top[3]
    p, k, ga, gb = _slot(top, cs)
    ba, bb = top[5 + 2 * ga], top[5 + 2 * gb]
    oc = _o_C(nb, nit) + (p * K + k) * CW
    gap = S[b, oc + 1]
    vn = S[b, oc + 8]
    if S[b, oc] > 0.5 and gap > 0.0 and gap < -vn * dt:
        zero3 = ti.Vector([0.0, 0.0, 0.0])
        toi = gap / (-vn)
        ol = _o_L(nb, nit, P, K) + ((nit * P + p) * K + k) * 4
        n = ti.Vector([S[b, oc + 2 + c] for c in ti.static(range(3))])
        point = ti.Vector([S[b, oc + 5 + c] for c in ti.static(range(3))])
        ln = S[b, ol]
        J = ln * n + ti.Vector([S[b, ol + 1 + c] for c in ti.static(range(3))])
        Jt = toi * J
        ow = _o_W(nb, nit)
        Jtbar = zero3
        pointbar = zero3
        if bb >= 0:
            xb = _com_of(X, t, b, bb)
            gl = ti.Vector([Sg[b, ow + 6 * bb + c] for c in ti.static(range(3))])
            gw = ti.Vector([Sg[b, ow + 6 * bb + 3 + c] for c in ti.static(range(3))])
            Jtbar += gl + gw.cross(point - xb)
            rbar = Jt.cross(gw)
            pointbar += rbar
            for c in ti.static(range(3)):
                Xg[t, b, bb, c] = Xg[t, b, bb, c] - rbar[c]
        if ba >= 0:
            xa = _com_of(X, t, b, ba)
            gl = ti.Vector([Sg[b, ow + 6 * ba + c] for c in ti.static(range(3))])
            gw = ti.Vector([Sg[b, ow + 6 * ba + 3 + c] for c in ti.static(range(3))])
            Jtbar -= gl + gw.cross(point - xa)
            rbar = -Jt.cross(gw)
            pointbar += rbar
            for c in ti.static(range(3)):
                Xg[t, b, ba, c] = Xg[t, b, ba, c] - rbar[c]
        toibar = J.dot(Jtbar)
        Jbar = toi * Jtbar
        Sg[b, ol] = Sg[b, ol] + Jbar.dot(n)
        _add(Sg, b, ol + 1, Jbar)
        _add(Sg, b, oc + 2, ln * Jbar)
        _add(Sg, b, oc + 5, pointbar)
        Sg[b, oc + 1] = Sg[b, oc + 1] - toibar / vn  # toi = gap / (-vn)
        Sg[b, oc + 8] = Sg[b, oc + 8] + toibar * gap / (vn * vn)


@ti.func
def _drot_T(q, G):
    """Cotangent of q for R = _rot(q) (q not normalised) given the cotangent G of R."""
    w, x, y, z = q[0], q[1], q[2], q[3]
    gw = 2.0 * (-z * G[0, 1] + y * G[0, 2] + z * G[1, 0] - x * G[1, 2] - y * G[2, 0] + x * G[2, 1])
    gx = 2.0 * (y * G[0, 1] + z * G[0, 2] + y * G[1, 0] - 2.0 * x * G[1, 1] - w * G[1, 2] + z * G[2, 0]
                + w * G[2, 1] - 2.0 * x * G[2, 2])
    gy = 2.0 * (-2.0 * y * G[0, 0] + x * G[0, 1] + w * G[0, 2] + x * G[1, 0] + z * G[1, 2] - w * G[2, 0]
                + z * G[2, 1] - 2.0 * y * G[2, 2])
    gz = 2.0 * (-2.0 * z * G[0, 0] - w * G[0, 1] + x * G[0, 2] + w * G[1, 0] - 2.0 * z * G[1, 1] + y * G[1, 2]
                + x * G[2, 0] + y * G[2, 1])
    return ti.Vector([gw, gx, gy, gz])


@ti.func
def _init_adj(X: ti.template(), Xg: ti.template(), U: ti.template(), Ug: ti.template(), prm: ti.template(),
              PG: ti.template(), top: ti.template(), Sg: ti.template(), t, b, i, dt, nit):
    """Reverse of ``_stage_init`` for body i at step t: consumes (and zeroes) the cotangents of
    the body data D and of V[0]; zeroes those of the sums W and dP (stored as zeros)."""
    nb, ng = top[1], top[0]
    x, R, v, w, im, Ibi, com, Ib = _body_raw(prm, top, X, t, b, i)
    q = ti.Vector([X[t, b, i, 3 + c] for c in ti.static(range(4))])
    od = _o_D(nb, nit, top[2], top[3]) + DW * i
    imbar = Sg[b, od]
    Iwbar = ti.Matrix([[Sg[b, od + 1 + 3 * r + c] for c in ti.static(range(3))] for r in ti.static(range(3))])
    Rbar = ti.Matrix([[Sg[b, od + 10 + 3 * r + c] for c in ti.static(range(3))] for r in ti.static(range(3))])
    xbar = ti.Vector([Sg[b, od + 19 + c] for c in ti.static(range(3))])
    v1bar = ti.Vector([Sg[b, 6 * i + c] for c in ti.static(range(3))])
    w1bar = ti.Vector([Sg[b, 6 * i + 3 + c] for c in ti.static(range(3))])
    for c in ti.static(range(DW)):
        Sg[b, od + c] = 0.0
    for c in ti.static(range(6)):
        Sg[b, 6 * i + c] = 0.0
        Sg[b, _o_W(nb, nit) + 6 * i + c] = 0.0
    for it in range(nit):
        for c in ti.static(range(6)):
            Sg[b, _o_dP(nb, nit) + (it * nb + i) * 6 + c] = 0.0
    f = ti.Vector([U[t, b, i, c] for c in ti.static(range(3))])
    tau = ti.Vector([U[t, b, i, 3 + c] for c in ti.static(range(3))])
    wb = R.transpose() @ w
    h = Ib @ wb
    cvec = R.transpose() @ tau - wb.cross(h)
    a = Ibi @ cvec
    # v1 = v + dt (g + f im)
    vbar = v1bar
    og = nb * 13 + ng * 5
    for c in ti.static(range(3)):
        PG[b, og + c] = PG[b, og + c] + dt * v1bar[c]
        Ug[t, b, i, c] = Ug[t, b, i, c] + dt * im * v1bar[c]
    imbar += dt * f.dot(v1bar)
    # w1 = w + dt R a, a = Ib^-1 c, c = R^T tau - wb x (Ib wb), wb = R^T w
    wbar = w1bar
    Rbar += dt * w1bar.outer_product(a)
    abar = dt * (R.transpose() @ w1bar)
    Ibibar = abar.outer_product(cvec)
    cbar = Ibi.transpose() @ abar
    Rbar += tau.outer_product(cbar)
    taubar = R @ cbar
    wbbar = -h.cross(cbar)  # y = wb x h enters with a minus sign
    hbar = -cbar.cross(wb)
    Ibbar = hbar.outer_product(wb)
    wbbar += Ib.transpose() @ hbar
    Rbar += w.outer_product(wbbar)
    wbar += R @ wbbar
    # Iw = R Ib^-1 R^T
    Rbar += Iwbar @ R @ Ibi.transpose() + Iwbar.transpose() @ R @ Ibi
    Ibibar += R.transpose() @ Iwbar @ R
    qbar = _drot_T(q, Rbar)
    for c in ti.static(range(3)):
        Ug[t, b, i, 3 + c] = Ug[t, b, i, 3 + c] + taubar[c]
        Xg[t, b, i, c] = Xg[t, b, i, c] + xbar[c]
        Xg[t, b, i, 7 + c] = Xg[t, b, i, 7 + c] + vbar[c]
        Xg[t, b, i, 10 + c] = Xg[t, b, i, 10 + c] + wbar[c]
    for c in ti.static(range(4)):
        Xg[t, b, i, 3 + c] = Xg[t, b, i, 3 + c] + qbar[c]
    PG[b, i] = PG[b, i] - imbar * im * im  # im = 1 / m
    oi = nb * 13 + ng * 5 + 3 + 9 * i
    for r, c in ti.static(ti.ndrange(3, 3)):
        PG[b, nb + 9 * i + 3 * r + c] = PG[b, nb + 9 * i + 3 * r + c] + Ibbar[r, c]
        PG[b, oi + 3 * r + c] = PG[b, oi + 3 * r + c] + Ibibar[r, c]


@ti.func
def _adjoint_norm(Xg: ti.template(), t, b, nb):
    acc = 0.0
    for i in range(nb):
        for c in ti.static(range(13)):
            acc += Xg[t, b, i, c] ** 2
    return ti.sqrt(acc)


@ti.func
def _solver_adj(S: ti.template(), Sg: ti.template(), PG: ti.template(), top: ti.template(), cnt: ti.template(),
                cand: ti.template(), ncand: ti.template(), b, nit, mode: ti.template(), prm: ti.template()):
    for r in range(nit):
        it = nit - 1 - r
        for i in range(top[1]):
            _apply_adj(S, Sg, top, b, i, it, nit)
        if ti.static(mode == 0):
            for j in range(ncand[b]):
                _solve_adj(S, Sg, prm, PG, top, cnt, b, cand[b, j], it, nit)


# ------------------------------------------------------------------------------------------
# narrow phase and detect stage, reversed (the branch the forward took; Taichi's tie rules:
# max(a, b) passes to a iff a > b, min(a, b) to a iff a < b, |x| has slope 0 at 0)
# ------------------------------------------------------------------------------------------
@ti.func
def _col(R, j):
    return ti.Vector([R[0, j], R[1, j], R[2, j]])


@ti.func
def _add_col(R, j, v):
    G = R
    for r in ti.static(range(3)):
        G[r, j] += v[r]
    return G


@ti.func
def _clamp_adj(z, lo, hi, g):
    """Cotangents (z, lo, hi) of min(max(z, lo), hi) for the cotangent g."""
    y = ti.max(z, lo)
    zb, lob, hib = 0.0, 0.0, 0.0
    if y < hi:
        if z > lo:
            zb = g
        else:
            lob = g
    else:
        hib = g
    return zb, lob, hib


@ti.func
def _sphere_sphere_adj(ca, ra, cb, rb, gbar, nbar, pbar):
    """Cotangents (ca, ra, cb, rb) of ``_sphere_sphere``."""
    d = cb - ca
    dist = ti.sqrt(d.dot(d) + TINY * TINY)
    n = d / dist
    gap = dist - ra - rb
    h = ra + 0.5 * gap
    nb_ = nbar + h * pbar
    hb = n.dot(pbar)
    gb = gbar + 0.5 * hb
    dbar = (nb_ - n * n.dot(nb_)) / dist + gb * n
    return pbar - dbar, hb - gb, dbar, -gb


@ti.func
def _point_box_adj(c, r, cb, Rb, h, gbar, nbar, pbar):
    """Cotangents (c, r, cb, Rb, h) of ``_point_box``."""
    loc = Rb.transpose() @ (c - cb)
    cl = ti.Vector([ti.min(ti.max(loc[k], -h[k]), h[k]) for k in ti.static(range(3))])
    inside = (ti.abs(loc[0]) <= h[0]) and (ti.abs(loc[1]) <= h[1]) and (ti.abs(loc[2]) <= h[2])
    cbar = ti.Vector([0.0, 0.0, 0.0])
    cbbar = ti.Vector([0.0, 0.0, 0.0])
    Rbbar = ti.Matrix.zero(float, 3, 3)
    hbar = ti.Vector([0.0, 0.0, 0.0])
    locbar = ti.Vector([0.0, 0.0, 0.0])
    rbar = 0.0
    if inside:
        dx, dy, dz = h[0] - ti.abs(loc[0]), h[1] - ti.abs(loc[1]), h[2] - ti.abs(loc[2])
        nl = ti.Vector([0.0, 0.0, 0.0])
        j = 0
        if dx <= dy and dx <= dz:
            nl[0] = -1.0 if loc[0] >= 0 else 1.0
        elif dy <= dz:
            nl[1] = -1.0 if loc[1] >= 0 else 1.0
            j = 1
        else:
            nl[2] = -1.0 if loc[2] >= 0 else 1.0
            j = 2
        cbar += pbar
        Rbbar += nbar.outer_product(nl)
        depthbar = -gbar
        rbar -= gbar
        for k in ti.static(range(3)):
            if k == j:
                hbar[k] += depthbar
                sg = 0.0
                if loc[k] > 0:
                    sg = 1.0
                elif loc[k] < 0:
                    sg = -1.0
                locbar[k] -= depthbar * sg
    else:
        point0 = cb + Rb @ cl
        d = point0 - c
        dist = ti.sqrt(d.dot(d) + TINY * TINY)
        n = d / dist
        gap = dist - r
        cbar += pbar
        nb_ = nbar + (r + 0.5 * gap) * pbar
        hb = n.dot(pbar)
        rbar += hb
        gb = gbar + 0.5 * hb
        rbar -= gb
        dbar = (nb_ - n * n.dot(nb_)) / dist + gb * n
        cbar -= dbar
        cbbar += dbar
        Rbbar += dbar.outer_product(cl)
        clbar = Rb.transpose() @ dbar
        for k in ti.static(range(3)):
            zb, lob, hib = _clamp_adj(loc[k], -h[k], h[k], clbar[k])
            locbar[k] += zb
            hbar[k] += hib - lob
    # loc = Rb^T (c - cb)
    Rbbar += (c - cb).outer_product(locbar)
    e = Rb @ locbar
    return cbar + e, rbar, cbbar - e, Rbbar, hbar


@ti.func
def _segments_adj(p1, q1, p2, q2, c1bar, c2bar):
    """Cotangents (p1, q1, p2, q2) of ``_segments``."""
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
    s0 = 0.0
    unclamped = False
    if den > 1e-12 * a * e:
        s0 = (bb * f - c * e) / den
        s = ti.min(ti.max(s0, 0.0), 1.0)
        unclamped = s0 > 0.0 and ti.max(s0, 0.0) < 1.0
    tt = (bb * s + f) / e
    case = 0
    s1 = 0.0
    if tt < 0.0:
        case = 1
        tt = 0.0
        s1 = -c / a
        s = ti.min(ti.max(s1, 0.0), 1.0)
    elif tt > 1.0:
        case = 2
        tt = 1.0
        s1 = (bb - c) / a
        s = ti.min(ti.max(s1, 0.0), 1.0)
    d1bar = s * c1bar
    sbar = d1.dot(c1bar)
    d2bar = tt * c2bar
    ttbar = d2.dot(c2bar)
    abar, ebar, fbar, cbar, bbbar = 0.0, 0.0, 0.0, 0.0, 0.0
    if case == 0:
        bbbar += ttbar * s / e
        sbar += ttbar * bb / e
        fbar += ttbar / e
        ebar -= ttbar * tt / e
        if unclamped:
            numbar = sbar / den
            denbar = -sbar * s0 / den
            bbbar += numbar * f
            fbar += numbar * bb
            cbar -= numbar * e
            ebar -= numbar * c
            abar += denbar * e
            ebar += denbar * a
            bbbar -= 2.0 * bb * denbar
    else:
        if s1 > 0.0 and ti.max(s1, 0.0) < 1.0:
            if case == 1:
                cbar -= sbar / a
                abar += sbar * c / (a * a)
            else:
                bbbar += sbar / a
                cbar -= sbar / a
                abar -= sbar * (bb - c) / (a * a)
    d1bar += 2.0 * abar * d1 + cbar * r + bbbar * d2
    d2bar += 2.0 * ebar * d2 + fbar * r + bbbar * d1
    rbar = fbar * d2 + cbar * d1
    return c1bar + rbar - d1bar, d1bar, c2bar - rbar - d2bar, d2bar


@ti.func
def _face_vertex_adj(pr, Rr, hr, pi, Ri, hi, out, ref_i, corner, gbar, pbar):
    """Cotangents (pr, hr, pi, Ri, hi, out) of ``_face_vertex``'s (gap, point)."""
    v = pi + Ri @ (corner * hi)
    gap = (v - pr).dot(out) - hr[ref_i]
    vbar = pbar
    outbar = -0.5 * gap * pbar
    gb = gbar - 0.5 * out.dot(pbar)
    vbar += gb * out
    outbar += gb * (v - pr)
    hrbar = ti.Vector([0.0, 0.0, 0.0])
    for c in ti.static(range(3)):
        if c == ref_i:
            hrbar[c] -= gb
    return -gb * out, hrbar, vbar, vbar.outer_product(corner * hi), corner * (Ri.transpose() @ vbar), outbar


@ti.func
def _box_box_adj(Ra, pa, ha, Rb, pb, hb, k, gbar, nbar, pbar):
    """Cotangents (Ra, pa, ha, Rb, pb, hb) of ``_box_box``'s (gap, n, point) (the choice of the
    reference face is discrete; the normal is a column of a rotation)."""
    d = pb - pa
    best = -1e30
    jb = 2
    sgn = 1.0
    for j in ti.static(range(6)):
        u = ti.Vector([0.0, 0.0, 0.0])
        if ti.static(j < 3):
            u = _col(Ra, j)
        else:
            u = _col(Rb, j - 3)
        ra_ = ha[0] * ti.abs(u.dot(_col(Ra, 0))) + ha[1] * ti.abs(u.dot(_col(Ra, 1))) + ha[2] * ti.abs(u.dot(_col(Ra, 2)))
        rb_ = hb[0] * ti.abs(u.dot(_col(Rb, 0))) + hb[1] * ti.abs(u.dot(_col(Rb, 1))) + hb[2] * ti.abs(u.dot(_col(Rb, 2)))
        sep = ti.abs(d.dot(u)) - ra_ - rb_
        if sep > best + 1e-9:
            best = sep
            jb = j
            sgn = 1.0 if d.dot(u) >= 0 else -1.0
    sx = 1.0 if (k & 1) else -1.0
    sy = 1.0 if (k & 2) else -1.0
    sz = 1.0 if (k & 4) else -1.0
    corner = ti.Vector([sx, sy, sz])
    Rabar = ti.Matrix.zero(float, 3, 3)
    Rbbar = ti.Matrix.zero(float, 3, 3)
    pabar = ti.Vector([0.0, 0.0, 0.0])
    pbbar = ti.Vector([0.0, 0.0, 0.0])
    habar = ti.Vector([0.0, 0.0, 0.0])
    hbbar = ti.Vector([0.0, 0.0, 0.0])
    axisbar = nbar
    ref_i = jb % 3
    if jb < 3:
        axis = sgn * _col(Ra, ref_i)
        prb, hrb, pib, Rib, hib, outb = _face_vertex_adj(pa, Ra, ha, pb, Rb, hb, axis, ref_i, corner, gbar, pbar)
        pabar += prb
        habar += hrb
        pbbar += pib
        Rbbar += Rib
        hbbar += hib
        axisbar += outb
        for r in ti.static(range(3)):
            for c in ti.static(range(3)):
                if c == ref_i:
                    Rabar[r, c] += sgn * axisbar[r]
    else:
        axis = sgn * _col(Rb, ref_i)
        prb, hrb, pib, Rib, hib, outb = _face_vertex_adj(pb, Rb, hb, pa, Ra, ha, -axis, ref_i, corner, gbar, pbar)
        pbbar += prb
        hbbar += hrb
        pabar += pib
        Rabar += Rib
        habar += hib
        axisbar -= outb
        for r in ti.static(range(3)):
            for c in ti.static(range(3)):
                if c == ref_i:
                    Rbbar[r, c] += sgn * axisbar[r]
    return Rabar, pabar, habar, Rbbar, pbbar, hbbar


@ti.func
def _narrow_adj(ta: ti.template(), Ra, pa, sa, tb: ti.template(), Rb, pb, sb, k, gbar, nbar, pbar):
    """Cotangents (Ra, pa, sa, Rb, pb, sb) of ``_narrow``'s (gap, n, point) for contact k."""
    Rabar = ti.Matrix.zero(float, 3, 3)
    Rbbar = ti.Matrix.zero(float, 3, 3)
    pabar = ti.Vector([0.0, 0.0, 0.0])
    pbbar = ti.Vector([0.0, 0.0, 0.0])
    sabar = ti.Vector([0.0, 0.0, 0.0])
    sbbar = ti.Vector([0.0, 0.0, 0.0])
    if ti.static(ta == PLANE):
        nrm = _col(Ra, 2)
        c = pb
        r = 0.0
        sgn = 1.0 if k == 0 else -1.0
        box_s = ti.Vector([1.0 if (k & 1) else -1.0, 1.0 if (k & 2) else -1.0, 1.0 if (k & 4) else -1.0])
        if ti.static(tb == SPHERE):
            r = sb[0]
        elif ti.static(tb == CAPSULE):
            c = pb + _col(Rb, 2) * (sgn * sb[1])
            r = sb[0]
        elif ti.static(tb == BOX):
            c = pb + Rb @ (box_s * sb)
        gap = (c - pa).dot(nrm) - r
        cbar = pbar
        nrmbar = nbar - (r + 0.5 * gap) * pbar
        hb = -nrm.dot(pbar)
        gb = gbar + 0.5 * hb
        rbar = hb - gb
        cbar += gb * nrm
        pabar -= gb * nrm
        nrmbar += gb * (c - pa)
        Rabar = _add_col(Rabar, 2, nrmbar)
        pbbar += cbar
        if ti.static(tb == SPHERE):
            sbbar[0] += rbar
        elif ti.static(tb == CAPSULE):
            Rbbar = _add_col(Rbbar, 2, (sgn * sb[1]) * cbar)
            sbbar[1] += sgn * _col(Rb, 2).dot(cbar)
            sbbar[0] += rbar
        elif ti.static(tb == BOX):
            Rbbar += cbar.outer_product(box_s * sb)
            sbbar += box_s * (Rb.transpose() @ cbar)
    elif ti.static(ta == SPHERE):
        if ti.static(tb == SPHERE):
            ca_, ra_, cb_, rb_ = _sphere_sphere_adj(pa, sa[0], pb, sb[0], gbar, nbar, pbar)
            pabar += ca_
            sabar[0] += ra_
            pbbar += cb_
            sbbar[0] += rb_
        elif ti.static(tb == CAPSULE):
            ax = _col(Rb, 2)
            z = (pa - pb).dot(ax)
            s = ti.min(ti.max(z, -sb[1]), sb[1])
            ca_, ra_, cb_, rb_ = _sphere_sphere_adj(pa, sa[0], pb + ax * s, sb[0], gbar, nbar, pbar)
            pabar += ca_
            sabar[0] += ra_
            sbbar[0] += rb_
            pbbar += cb_
            axbar = s * cb_
            zb, lob, hib = _clamp_adj(z, -sb[1], sb[1], ax.dot(cb_))
            sbbar[1] += hib - lob
            pabar += zb * ax
            pbbar -= zb * ax
            axbar += zb * (pa - pb)
            Rbbar = _add_col(Rbbar, 2, axbar)
        else:
            c_, r_, cb_, Rb_, h_ = _point_box_adj(pa, sa[0], pb, Rb, sb, gbar, nbar, pbar)
            pabar += c_
            sabar[0] += r_
            pbbar += cb_
            Rbbar += Rb_
            sbbar += h_
    elif ti.static(ta == CAPSULE):
        axa = _col(Ra, 2)
        if ti.static(tb == CAPSULE):
            axb = _col(Rb, 2)
            p1, q1, p2, q2 = pa - axa * sa[1], pa + axa * sa[1], pb - axb * sb[1], pb + axb * sb[1]
            ca, cb = _segments(p1, q1, p2, q2)
            ca_, ra_, cb_, rb_ = _sphere_sphere_adj(ca, sa[0], cb, sb[0], gbar, nbar, pbar)
            sabar[0] += ra_
            sbbar[0] += rb_
            p1b, q1b, p2b, q2b = _segments_adj(p1, q1, p2, q2, ca_, cb_)
            pabar += p1b + q1b
            Rabar = _add_col(Rabar, 2, sa[1] * (q1b - p1b))
            sabar[1] += axa.dot(q1b - p1b)
            pbbar += p2b + q2b
            Rbbar = _add_col(Rbbar, 2, sb[1] * (q2b - p2b))
            sbbar[1] += axb.dot(q2b - p2b)
        else:
            s = sa[1] if k == 0 else -sa[1]
            z = (pb - pa).dot(axa)
            if k == 2:
                s = ti.min(ti.max(z, -sa[1]), sa[1])
            c_, r_, cb_, Rb_, h_ = _point_box_adj(pa + axa * s, sa[0], pb, Rb, sb, gbar, nbar, pbar)
            sabar[0] += r_
            pbbar += cb_
            Rbbar += Rb_
            sbbar += h_
            pabar += c_
            axabar = s * c_
            sbar = axa.dot(c_)
            if k == 0:
                sabar[1] += sbar
            elif k == 1:
                sabar[1] -= sbar
            else:
                zb, lob, hib = _clamp_adj(z, -sa[1], sa[1], sbar)
                sabar[1] += hib - lob
                pbbar += zb * axa
                pabar -= zb * axa
                axabar += zb * (pb - pa)
            Rabar = _add_col(Rabar, 2, axabar)
    else:
        Rabar, pabar, sabar, Rbbar, pbbar, sbbar = _box_box_adj(Ra, pa, sa, Rb, pb, sb, k, gbar, nbar, pbar)
    return Rabar, pabar, sabar, Rbbar, pbbar, sbbar


@ti.func
def _geom_pose_adj(prm: ti.template(), cfg: ti.template(), top: ti.template(), S: ti.template(), Sg: ti.template(),
                   PG: ti.template(), b, g, gt: ti.template(), nit, Rbar, pbar, sbar):
    """Reverse of ``_geom_pose``: into the body data's R and COM (Sg), the COM offset and the size (PG)."""
    nb = top[1]
    body = top[5 + 2 * g]
    os_ = nb * 13 + 3 * g
    for c in ti.static(range(3)):
        PG[b, os_ + c] = PG[b, os_ + c] + sbar[c]
    if body >= 0:
        o = NCFG + 12 * g
        pg = ti.Vector([cfg[o + c] for c in ti.static(range(3))])
        Rg = ti.Matrix([[cfg[o + 3 + 3 * r + c] for c in ti.static(range(3))] for r in ti.static(range(3))])
        im, Ibi, Rb, x = _body(S, top, b, body, nit)
        oc = nb * 10 + 3 * body
        com = ti.Vector([prm[oc + c] for c in ti.static(range(3))])
        Rbodybar = pbar.outer_product(pg - com)  # p = x + R_body (pg - com)
        if ti.static(gt != SPHERE):
            Rbodybar += Rbar @ Rg.transpose()  # R = R_body Rg
        od = _o_D(nb, nit, top[2], top[3]) + DW * body
        _add(Sg, b, od + 19, pbar)
        combar = -(Rb.transpose() @ pbar)
        for c in ti.static(range(3)):
            PG[b, oc + c] = PG[b, oc + c] + combar[c]
        for r, c in ti.static(ti.ndrange(3, 3)):
            Sg[b, od + 10 + 3 * r + c] = Sg[b, od + 10 + 3 * r + c] + Rbodybar[r, c]


@ti.func
def _vel_adj(Sg: ti.template(), b, o, body, r, w, g):
    """Reverse of the point velocity v + w x r of body (V slot at o): returns the cotangent of r."""
    rbar = ti.Vector([0.0, 0.0, 0.0])
    if body >= 0:
        _add(Sg, b, o + 6 * body, g)
        _add(Sg, b, o + 6 * body + 3, r.cross(g))
        rbar = g.cross(w)
    return rbar


@ti.func
def _ang(S: ti.template(), b, o, body):
    w = ti.Vector([0.0, 0.0, 0.0])
    if body >= 0:
        w = ti.Vector([S[b, o + 6 * body + 3 + c] for c in ti.static(range(3))])
    return w


@ti.func
def _impulse_adj(Sg: ti.template(), b, o, body, r, J, sign):
    """Reverse of ``_add_impulse``: the cotangents (J, r) from the impulse sums' at o."""
    Jbar = ti.Vector([0.0, 0.0, 0.0])
    rbar = ti.Vector([0.0, 0.0, 0.0])
    if body >= 0:
        gl = ti.Vector([Sg[b, o + 6 * body + c] for c in ti.static(range(3))])
        gw = ti.Vector([Sg[b, o + 6 * body + 3 + c] for c in ti.static(range(3))])
        Jbar = sign * (gl + gw.cross(r))
        rbar = sign * J.cross(gw)
    return Jbar, rbar


@ti.func
def _detect_adj(X: ti.template(), Xg: ti.template(), prm: ti.template(), PG: ti.template(), cfg: ti.template(),
                top: ti.template(), S: ti.template(), Sg: ti.template(), t, b, cs, dt, mode: ti.template(), nit,
                toi: ti.template(), ta: ti.template(), tb: ti.template()):
    """Reverse of ``_stage_detect`` for contact slot cs (geom types ta, tb): consumes (and
    zeroes) the cotangent of its record (impulse) or reads the impulse sums' (smooth). The
    narrow phase's result comes from the record the recomputed step left in S; a slot that
    exerted nothing (impulse: inactive; smooth: no force) only has its cotangents cleared."""
    nb, ng, P, K = top[1], top[0], top[2], top[3]
    p, k, ga, gb = _slot(top, cs)
    oc = _o_C(nb, nit) + (p * K + k) * CW
    if S[b, oc + ti.static(0 if mode == 0 else 9)] > 0.5:  # the active / force flag
        _detect_adj_active(X, Xg, prm, PG, cfg, top, S, Sg, t, b, cs, dt, mode, nit, toi, ta, tb)
    elif ti.static(mode == 0):
        for c in ti.static(range(CW)):
            Sg[b, oc + c] = 0.0
        ol = _o_L(nb, nit, P, K) + (p * K + k) * 4
        for c in ti.static(range(4)):
            Sg[b, ol + c] = 0.0
    else:
        Sg[b, oc] = 0.0


@ti.func
def _detect_adj_active(X: ti.template(), Xg: ti.template(), prm: ti.template(), PG: ti.template(),
                       cfg: ti.template(), top: ti.template(), S: ti.template(), Sg: ti.template(), t, b, cs, dt,
                       mode: ti.template(), nit, toi: ti.template(), ta: ti.template(), tb: ti.template()):
    """``_detect_adj`` of a slot that exerted an impulse or a force."""
    nb, ng, P, K = top[1], top[0], top[2], top[3]
    p, k, ga, gb = _slot(top, cs)
    Ra, pa, sa, ba = _geom_pose(prm, cfg, top, S, b, ga, ta, nit)
    Rb, pb, sb, bb = _geom_pose(prm, cfg, top, S, b, gb, tb, nit)
    xa = _com_of(X, t, b, ba)
    xb = _com_of(X, t, b, bb)
    mu, e = _coef(prm, top, ga, gb)
    timeconst, soft, feps = cfg[0], cfg[1], cfg[2]
    beta, slop, bounce = cfg[3], cfg[4], cfg[5]
    oc = _o_C(nb, nit) + (p * K + k) * CW
    valid = 1
    gap = S[b, oc + 1]
    n = ti.Vector([S[b, oc + 2 + c] for c in ti.static(range(3))])
    point = ti.Vector([S[b, oc + 5 + c] for c in ti.static(range(3))])
    ra = point - xa
    rb = point - xb
    wa = _ang(S, b, 0, ba)
    wb = _ang(S, b, 0, bb)
    vrel = _point_vel(S, b, 0, bb, rb) - _point_vel(S, b, 0, ba, ra)
    vn = vrel.dot(n)
    zero3 = ti.Vector([0.0, 0.0, 0.0])
    gapbar, nbar, pointbar, vnbar = 0.0, zero3, zero3, 0.0
    ebar, mubar = 0.0, 0.0
    rabar, rbbar, vrelbar = zero3, zero3, zero3
    run = False
    if ti.static(mode == 0):
        cb_ = ti.Vector([Sg[b, oc + c] for c in ti.static(range(CW))])
        for c in ti.static(range(CW)):
            Sg[b, oc + c] = 0.0
        ol = _o_L(nb, nit, P, K) + (p * K + k) * 4
        for c in ti.static(range(4)):
            Sg[b, ol + c] = 0.0
        if valid == 1 and gap < ti.max(-vn * dt, slop):
            run = True
            gapbar = cb_[1]
            nbar = ti.Vector([cb_[2], cb_[3], cb_[4]])
            pointbar = ti.Vector([cb_[5], cb_[6], cb_[7]])
            vnbar = cb_[8]
            tbar = cb_[9]
            z = -vn / bounce - 1.0
            ramp = ti.min(ti.max(z, 0.0), 1.0)
            overridden = False
            if ti.static(not toi):
                if gap > 0.0:
                    overridden = True
                    gapbar -= tbar / dt
            if not overridden:  # target = -e ramp min(vn, 0)
                mv = ti.min(vn, 0.0)
                ebar -= tbar * ramp * mv
                if vn < 0.0:
                    vnbar -= tbar * e * ramp
                zb, lob, hib = _clamp_adj(z, 0.0, 1.0, -tbar * e * mv)
                vnbar -= zb / bounce
            if gap < -slop:
                gapbar -= beta * tbar / dt
    else:
        Sg[b, oc] = 0.0
        d = -gap / soft
        if valid == 1 and d > -30.0:
            run = True
            ex = ti.exp(-ti.abs(d))
            phi = soft * (ti.max(d, 0.0) + ti.log(1.0 + ex))
            gate = 1.0 / (1.0 + ti.exp(-d))
            ima, Ia, xa_ = _body_or_zero(S, top, b, ba, nit)
            imb, Ib, xb_ = _body_or_zero(S, top, b, bb, nit)
            inv = _inv_mass_pre(ima, Ia, ra, n, 1.0) + _inv_mass_pre(imb, Ib, rb, n, 1.0)
            meff = 1.0 / inv
            wn = 2.0 * PI / timeconst
            le = ti.log(ti.max(e, 1e-6))
            zeta = -le / ti.sqrt(PI * PI + le * le)
            fn0 = meff * wn * wn * phi - 2.0 * zeta * meff * wn * vn * gate
            fn = ti.max(fn0, 0.0)
            vt = vrel - vn * n
            sv = ti.sqrt(vt.dot(vt) + feps * feps)
            ft = -mu * fn * vt / sv
            J = dt * (fn * n + ft)
            odp = _o_dP(nb, nit)
            Jb1, rb1 = _impulse_adj(Sg, b, odp, bb, rb, J, 1.0)
            Ja1, ra1 = _impulse_adj(Sg, b, odp, ba, ra, J, -1.0)
            Jbar = Jb1 + Ja1
            rbbar += rb1
            rabar += ra1
            fnbar = dt * Jbar.dot(n)
            nbar += dt * fn * Jbar
            ftbar = dt * Jbar
            vf = vt.dot(ftbar)
            mubar += -fn * vf / sv
            fnbar += -mu * vf / sv
            vtbar = -mu * fn * (ftbar / sv - vt * (vf / (sv * sv * sv)))
            vrelbar += vtbar
            vnbar -= vtbar.dot(n)
            nbar -= vn * vtbar
            if fn0 > 0.0:
                meffbar = fnbar * (wn * wn * phi - 2.0 * zeta * wn * vn * gate)
                phibar = fnbar * meff * wn * wn
                zetabar = -fnbar * 2.0 * meff * wn * vn * gate
                vnbar -= fnbar * 2.0 * zeta * meff * wn * gate
                gatebar = -fnbar * 2.0 * zeta * meff * wn * vn
                q2 = PI * PI + le * le
                lebar = -zetabar * PI * PI / (q2 * ti.sqrt(q2))
                if e > 1e-6:
                    ebar += lebar / e
                invbar = -meffbar / (inv * inv)
                i1, I1, r1, n1 = _inv_mass_adj(Ia, ra, n, 1.0, invbar)
                i2, I2, r2, n2 = _inv_mass_adj(Ib, rb, n, 1.0, invbar)
                _body_adj(Sg, top, b, ba, nit, i1, I1, zero3)
                _body_adj(Sg, top, b, bb, nit, i2, I2, zero3)
                rabar += r1
                rbbar += r2
                nbar += n1 + n2
                sg = 0.0
                if d > 0.0:
                    sg = 1.0
                elif d < 0.0:
                    sg = -1.0
                dpos = 1.0 if d > 0.0 else 0.0
                dbar = phibar * soft * (dpos - sg * ex / (1.0 + ex)) + gatebar * gate * (1.0 - gate)
                gapbar -= dbar / soft
    if run:
        # vn = vrel . n; vrel = (vb + wb x rb) - (va + wa x ra); r = point - x
        vrelbar += vnbar * n
        nbar += vnbar * vrel
        rbbar += _vel_adj(Sg, b, 0, bb, rb, wb, vrelbar)
        rabar += _vel_adj(Sg, b, 0, ba, ra, wa, -vrelbar)
        pointbar += rabar + rbbar
        if ba >= 0:
            for c in ti.static(range(3)):
                Xg[t, b, ba, c] = Xg[t, b, ba, c] - rabar[c]
        if bb >= 0:
            for c in ti.static(range(3)):
                Xg[t, b, bb, c] = Xg[t, b, bb, c] - rbbar[c]
        Rab, pab, sab, Rbb, pbb, sbb = _narrow_adj(ta, Ra, pa, sa, tb, Rb, pb, sb, k, gapbar, nbar, pointbar)
        _geom_pose_adj(prm, cfg, top, S, Sg, PG, b, ga, ta, nit, Rab, pab, sab)
        _geom_pose_adj(prm, cfg, top, S, Sg, PG, b, gb, tb, nit, Rbb, pbb, sbb)
        of = nb * 13 + ng * 3
        if ebar != 0.0:  # e = max(e_a, e_b): Taichi's tie rule gives a tie to b
            if prm[of + ng + ga] > prm[of + ng + gb]:
                PG[b, of + ng + ga] = PG[b, of + ng + ga] + ebar
            else:
                PG[b, of + ng + gb] = PG[b, of + ng + gb] + ebar
        if mubar != 0.0:  # mu = sqrt(f_a f_b + TINY^2)
            fa, fb = prm[of + ga], prm[of + gb]
            PG[b, of + ga] = PG[b, of + ga] + mubar * fb / (2.0 * mu)
            PG[b, of + gb] = PG[b, of + gb] + mubar * fa / (2.0 * mu)


@ti.kernel
def reverse_kernel(X: arr(ndim=4), Xg: arr(ndim=4), U: arr(ndim=4), Ug: arr(ndim=4), prm: arr(ndim=1),
                   PG: arr(ndim=2), cfg: arr(ndim=1), top: arr(ndim=1), S: arr(ndim=2), Sg: arr(ndim=2),
                   cnt: arr(ndim=2), BD: arr(ndim=2), bpt: arr(ndim=1), order: arr(ndim=2), cand: arr(ndim=2),
                   ncand: arr(ndim=1), prev: arr(ndim=2), nsw: arr(ndim=1), G: arr(ndim=2), nslot: ti.i32,
                   dt: float, mode: ti.template(), nit: ti.i32, toi: ti.template(), spread: ti.i32,
                   serial: ti.template(), types: ti.template(), quality: ti.i32):
    """The whole reverse pass in one launch: per env on one thread (its scratch stays in cache),
    for t = T - 1 .. 0: step t recomputed (as the forward), then the reverse of its stages in
    turn: positions, time-of-impact sums, the ``nit`` solver iterations, the narrow phase and
    the free motion. With ``quality``: the contact flags compared with step t + 1's (mode
    switches into nsw, flags kept in prev) and G[t, b] = |adjoint of X[t]|.
    Xg, Ug, Sg: X.grad, U.grad, S.grad; PG (B, nprm): per-env parameter cotangents (summed on
    the host). On entry Xg holds the trajectory's cotangents (``unpack_adjoint_kernel``)."""
    ti.loop_config(serialize=serial)
    for jb in range(X.shape[1] * spread):  # see runtime.spread
        if jb % spread != 0:
            continue
        b = jb // spread
        nb = top[1]
        T = X.shape[0] - 1
        for r in range(T):
            t = T - 1 - r
            _step(X, U, prm, cfg, top, S, cnt, BD, bpt, order, cand, ncand, nslot, dt, mode, nit, toi, types, b, t)
            if quality == 1:
                K = top[3]
                for cs in range(nslot):
                    ocs = _o_slots(top) + 2 * cs
                    a = 1 if S[b, _o_C(nb, nit) + (top[ocs] * K + top[ocs + 1]) * CW] > 0.5 else 0
                    if a != prev[b, cs] and t < T - 1:
                        nsw[b] += 1
                    prev[b, cs] = a
            for i in range(nb):
                _final_adj(X, Xg, S, Sg, top, t, b, i, dt, nit)
            if ti.static(mode == 0 and toi):
                for j in range(ncand[b]):
                    _toi_adj(X, Xg, S, Sg, top, t, b, cand[b, j], dt, nit)
            _solver_adj(S, Sg, PG, top, cnt, cand, ncand, b, nit, mode, prm)
            for j in range(ncand[b]):
                cs = cand[b, j]
                p, k, ga, gb = _slot(top, cs)
                ta, tb = top[4 + 2 * ga], top[4 + 2 * gb]
                for pt in ti.static(types):
                    if ta == pt[0] and tb == pt[1]:
                        _detect_adj(X, Xg, prm, PG, cfg, top, S, Sg, t, b, cs, dt, mode, nit, toi, pt[0], pt[1])
            for i in range(nb):
                _init_adj(X, Xg, U, Ug, prm, PG, top, Sg, t, b, i, dt, nit)
            if quality == 1:
                G[t, b] = _adjoint_norm(Xg, t, b, nb)


@ti.kernel
def unpack_adjoint_kernel(X: arr(ndim=4), Xg: arr(ndim=4), prm: arr(ndim=1), PG: arr(ndim=2), top: arr(ndim=1),
                          Qg: arr(ndim=3), QDg: arr(ndim=3)):
    """Reverse of ``unpack_kernel``: the cotangents Qg (B, T+1, nq), QDg (B, T+1, nv) of the model
    coordinates into Xg (accumulated) and the COM offsets' into PG. One thread per (env, body)."""
    for b, i in ti.ndrange(X.shape[1], X.shape[2]):
        ng, nb, P = top[0], top[1], top[2]
        oa = 4 + 2 * ng + 3 * P + 2 * i
        qa, va = top[oa], top[oa + 1]
        oc = nb * 10 + 3 * i
        com = ti.Vector([prm[oc + c] for c in ti.static(range(3))])
        combar = ti.Vector([0.0, 0.0, 0.0])
        for t in range(X.shape[0]):
            x, q, v, w = _x13(X, t, b, i)
            R = _rot(q)
            wb = R.transpose() @ w
            pbar = ti.Vector([Qg[b, t, qa + c] for c in ti.static(range(3))])
            q4bar = ti.Vector([Qg[b, t, qa + 3 + c] for c in ti.static(range(4))])
            vbbar = ti.Vector([QDg[b, t, va + c] for c in ti.static(range(3))])
            wbbar = ti.Vector([QDg[b, t, va + 3 + c] for c in ti.static(range(3))])
            # p = x - R com
            Rbar = -pbar.outer_product(com)
            combar -= R.transpose() @ pbar
            # vb = R^T v - wb x com
            Rbar += v.outer_product(vbbar)
            wbbar -= com.cross(vbbar)
            combar -= vbbar.cross(wb)
            # wb = R^T w
            Rbar += w.outer_product(wbbar)
            qbar = q4bar + _drot_T(q, Rbar)
            vbar = R @ vbbar
            wbar = R @ wbbar
            for c in ti.static(range(3)):
                Xg[t, b, i, c] = Xg[t, b, i, c] + pbar[c]
                Xg[t, b, i, 7 + c] = Xg[t, b, i, 7 + c] + vbar[c]
                Xg[t, b, i, 10 + c] = Xg[t, b, i, 10 + c] + wbar[c]
            for c in ti.static(range(4)):
                Xg[t, b, i, 3 + c] = Xg[t, b, i, 3 + c] + qbar[c]
        for c in ti.static(range(3)):
            PG[b, oc + c] = PG[b, oc + c] + combar[c]
