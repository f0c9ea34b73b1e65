"""Hand-written adjoint of the impulse solver (contact_kernels._stage_solve and _stage_apply).

Taichi's reverse mode of ``iter_kernel`` was 65 % of a contact gradient (billiards, B = 256:
17 ms a call, five times the forward): every global read of the forward becomes an atomic add
on S.grad, over a scratch too large for the cache. This kernel runs the reverse of all ``nit``
Jacobi iterations of one step in one launch, one thread per env (serial over its bodies and
candidates, so every write to S.grad is a plain add to memory the thread owns; only the shared
friction parameters take atomic adds).

The conventions are Taichi's, so the kernel slots in between ``post_kernel.grad`` and
``detect_kernel.grad``:
  * on entry S.grad holds the cotangents of the final velocities V[nit], of the last impulses
    L[nit] (from the time-of-impact stage) and of the body data D and contact records C;
  * a value the forward *stores* has its cotangent consumed and zeroed (V[it + 1], L[it + 1]);
    a value the forward *reads* has its cotangent accumulated (V[it], L[it], D, C, prm);
  * the cotangent of the impulse sums dP[it] (accumulated with atomic adds in the forward) is
    left in S.grad, where ``init_kernel.grad`` clears it.

Non-smooth points take the branch the forward took, with Taichi's tie rules: max(x, 0) passes
the cotangent only for x > 0; the friction-cone clamp, the slip-direction switch (SLIP_EPS) and
the fixed tangent of a resting contact are differentiated on the side the forward chose. The
contact counts of the mass splitting are integers (no gradient). ``tests/test_contact.py``
checks this kernel against Taichi's own reverse of the forward kernel, and both against
finite differences.
"""

import taichi as ti

from .contact_kernels import (DW, SLIP_EPS, TINY, _body_mass, _body_or_zero, _coef, _o_C, _o_D, _o_dP, _o_L, _slot,
                              _tangent, _v6, arr)


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
def _solve_adj(S: ti.template(), Sg: ti.template(), prm: ti.template(), prmg: ti.template(), top: ti.template(),
               cnt: ti.template(), b, cs, it, nit):
    """Reverse of ``_stage_solve`` for contact slot cs at iteration it (same forward, recomputed)."""
    nb, ng, P, K = top[1], top[0], top[2], top[3]
    p, k, ga, gb = _slot(top, cs)
    ba, bb = top[5 + 2 * ga], top[5 + 2 * gb]
    oV = it * nb * 6
    oc = _o_C(nb, nit) + (p * K + k) * CW_
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
            ti.atomic_add(prmg[of + ga], mubar * fb / (2.0 * mu))
            ti.atomic_add(prmg[of + gb], mubar * fa / (2.0 * mu))


CW_ = 10  # floats per contact record (contact_kernels.CW); a module constant, as Taichi wants


@ti.kernel
def iter_adjoint_kernel(prm: arr(ndim=1), prmg: arr(ndim=1), top: arr(ndim=1), S: arr(ndim=2), Sg: arr(ndim=2),
                        cnt: arr(ndim=2), cand: arr(ndim=2), ncand: arr(ndim=1), nit: ti.i32, spread: ti.i32,
                        serial: ti.template(), mode: ti.template()):
    """Reverse of the ``nit`` solver iterations (``iter_kernel`` for it = nit - 1 .. 0) of the
    step whose forward S holds. prmg, Sg: prm.grad, S.grad. One thread per env."""
    ti.loop_config(serialize=serial)
    for jb in range(S.shape[0] * spread):  # see runtime.spread
        if jb % spread != 0:
            continue
        b = jb // spread
        for r in range(nit):
            it = nit - 1 - r
            for i in range(top[1]):
                _apply_adj(S, Sg, top, b, i, it, nit)
            if ti.static(mode == 0):
                for j in range(ncand[b]):
                    _solve_adj(S, Sg, prm, prmg, top, cnt, b, cand[b, j], it, nit)
