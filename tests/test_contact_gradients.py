"""The contact gradient's hand-written reverse pass (simad/contact_adjoint.py) against Taichi's
reverse mode of the forward's stage kernels, and every pair type's gradient against central
differences. A file of its own so that pytest-xdist can run it beside tests/test_contact.py."""

import numpy as np
import pytest

import simad
from simad.contact import Contact, contact_rollout, contact_vjp


def pose(x, y, z):
    return np.array([x, y, z, 1.0, 0, 0, 0])


def ball_on_box():
    """A ball and a box (the prewarm's pair types: plane-sphere, plane-box, sphere-box)."""
    b = simad.ModelBuilder("ball_on_box")
    b.add_geom(0, "plane", friction=0.6, restitution=0.3, name="floor")
    b.add_body("ball", 0, mass=0.5, inertia=(2e-3, 2e-3, 2e-3))
    b.add_joint("ball", "ball_free", type="free")
    b.add_geom("ball", "sphere", size=(0.05,), friction=0.4, restitution=0.6, name="ball_g")
    b.add_body("box", 0, mass=2.0, inertia=(1.1e-2, 1.3e-2, 1.6e-2))
    b.add_joint("box", "box_free", type="free")
    b.add_geom("box", "box", size=(0.12, 0.1, 0.08), friction=0.5, restitution=0.2, name="box_g")
    return b.finalize()


@pytest.mark.parametrize("mode", ["impulse"])  # smooth mode: the FD test below (keeps CI short)
def test_the_hand_written_adjoint_equals_taichis_reverse_mode(monkeypatch, mode):
    """contact_adjoint (the default: free motion, solver, time of impact and positions by hand)
    against Taichi's reverse mode of the forward stage kernels, on every gradient kind with
    random cotangents and the quality report: the same derivative, to rounding. A ball
    drops onto a tumbling, sliding box: several contacts per body (mass splitting), sticking
    and sliding friction, impacts inside a step (time of impact), a static floor."""
    from simad import contact as C

    m = ball_on_box()
    B, T, dt = 2, 150, 2e-3
    rng = np.random.default_rng(3)
    tilt = np.array([0.99, 0.08, 0.1, 0.03])
    q0 = np.tile(np.concatenate([pose(0.03, 0.01, 0.3), np.r_[0.0, 0.0, 0.12, tilt / np.linalg.norm(tilt)]]), (B, 1))
    q0[1, :3] += 0.004
    qd0 = np.tile([0.3, 0.0, -1.5, 0.0, 2.0, 0.0, 0.6, 0.1, -0.3, 0.5, -1.0, 0.8], (B, 1))
    u = rng.normal(scale=0.5, size=(B, T, 2, 6))
    qbar = rng.normal(size=(B, T + 1, m.nq))
    vbar = rng.normal(size=(B, T + 1, m.nv))
    opts = Contact(mode=mode)
    got = {}
    for which in ("taichi", "hand"):
        monkeypatch.setattr(C, "SOLVER_ADJOINT", which)
        got[which] = contact_vjp(m, q0, qd0, dt, qbar, vbar, steps=T, controls=u, contact=opts,
                                 params=list(C.CONTACT_PARAMS))
    ref, g = got["taichi"], got["hand"]
    assert ref.quality.mode_switches.min() >= 4  # contacts came and went
    np.testing.assert_array_equal(g.quality.mode_switches, ref.quality.mode_switches)
    np.testing.assert_allclose(g.quality.max_growth, ref.quality.max_growth, rtol=1e-9)
    np.testing.assert_array_equal(g.quality.max_growth_step, ref.quality.max_growth_step)
    for name in ("q0", "qd0", "controls"):
        a, b_ = getattr(ref, name), getattr(g, name)
        assert np.abs(a).max() > 0
        np.testing.assert_allclose(b_, a, rtol=0, atol=1e-11 * np.abs(a).max(), err_msg=name)
    for name, a in ref.params.items():
        np.testing.assert_allclose(g.params[name], a, rtol=0, atol=1e-11 * max(np.abs(a).max(), 1e-300), err_msg=name)
    assert np.abs(ref.params["geom_friction"]).max() > 0  # the friction cone was active



def all_pairs_scene():
    """A box stacked on a box, a capsule on a box and on a capsule, spheres on a capsule, a sphere
    and a static box: every pair type touches within 150 steps of 2 ms (checked when written)."""
    b = simad.ModelBuilder("all_pairs")
    b.add_geom(0, "plane", friction=0.6, restitution=0.2, name="floor")
    b.add_geom(0, "box", size=(0.1, 0.1, 0.05), pos=(0.6, 0, 0.05), friction=0.3, name="table")
    along_y = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0.0]])
    along_x = np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0.0]])
    specs = [("box1", 1.0, "box", (0.1, 0.08, 0.06), None), ("box2", 0.7, "box", (0.05, 0.05, 0.05), None),
             ("ball", 0.4, "sphere", (0.05,), None), ("cap", 0.5, "capsule", (0.04, 0.1), along_y),
             ("cap2", 0.3, "capsule", (0.03, 0.06), None), ("cap3", 0.3, "capsule", (0.03, 0.08), along_x),
             ("ball3", 0.3, "sphere", (0.05,), None), ("ball4", 0.2, "sphere", (0.04,), None),
             ("ball5", 0.2, "sphere", (0.03,), None)]
    for k, (name, mass, geom, size, rot) in enumerate(specs):
        b.add_body(name, 0, mass=mass, inertia=np.diag([0.004, 0.005, 0.006]) * mass)
        b.add_joint(name, name + "_free", type="free")
        kw = {} if rot is None else {"rot": rot}
        b.add_geom(name, geom, size=size, friction=0.3 + 0.05 * k, restitution=0.5 - 0.04 * k, name=name + "_g", **kw)
    m = b.finalize()
    tilt = np.array([0.98, 0.1, 0.15, 0.05])
    tilt /= np.linalg.norm(tilt)
    up = np.array([1.0, 0, 0, 0])
    q0 = np.concatenate([np.r_[0, 0, 0.061, up], np.r_[0.02, 0.01, 0.2, tilt], np.r_[0.6, 0, 0.151, up],
                         np.r_[-0.3, 0.1, 0.041, up], np.r_[-0.06, -0.04, 0.24, tilt], np.r_[-0.3, 0.12, 0.16, up],
                         np.r_[0.3, -0.3, 0.051, up], np.r_[0.31, -0.3, 0.17, up], np.r_[-0.31, 0.03, 0.2, up]])
    qd0 = np.zeros(m.nv)
    qd0[6 * 2:6 * 2 + 6] = [0.2, 0, 0, 0, 1.0, 0]  # the ball rolls on the table
    return m, q0, qd0


def test_every_pair_types_gradient_matches_finite_differences():
    """The hand-written narrow-phase adjoints (all nine pair types) against central differences
    of size, friction, mass and initial velocity. h = 1e-8: the scene has ~50 contact switches,
    and a wider step straddles one (h = 1e-6 gave 3.8 for 8.97 on the capsule's half-length)."""
    m, q0, qd0 = all_pairs_scene()
    T, dt = 150, 2e-3
    wq = np.zeros((1, T + 1, m.nq))
    wq[0, -1] = np.random.default_rng(1).normal(size=m.nq)
    g = contact_vjp(m, q0, qd0, dt, wq, steps=T, params=["geom_size", "geom_friction", "body_mass"])
    assert g.quality.mode_switches[0] >= 20

    def loss(qd=qd0, **p):
        return np.sum(wq * contact_rollout(m.replace(**p), q0, qd, dt, steps=T).q)

    h = 1e-8
    checks = [("geom_size", (2, 0)), ("geom_size", (3, 2)), ("geom_size", (5, 1)), ("geom_size", (6, 0)),
              ("geom_size", (6, 1)), ("geom_size", (10, 0)), ("geom_friction", (3,)), ("body_mass", (5,))]
    for name, idx in checks:
        base = getattr(m, name)
        up, dn = base.copy(), base.copy()
        up[idx] += h
        dn[idx] -= h
        fd = (loss(**{name: up}) - loss(**{name: dn})) / (2 * h)
        assert g.params[name][idx] == pytest.approx(fd, rel=1e-5, abs=1e-6), (name, idx)
    e = np.zeros(m.nv)
    e[6 * 4 + 2] = h  # cap2's vertical velocity
    fd = (loss(qd=qd0 + e) - loss(qd=qd0 - e)) / (2 * h)
    assert g.qd0[0, 6 * 4 + 2] == pytest.approx(fd, rel=1e-5, abs=1e-6)


def test_smooth_contact_restitution_friction_and_mass_gradients_match_finite_differences():
    """Smooth mode's hand-written adjoint (spring-damper from the restitution, regularised
    friction, effective mass) against central differences: the ball drops onto a sliding box."""
    m = ball_on_box()
    T, dt = 150, 2e-3
    q0 = np.concatenate([pose(0.03, 0.01, 0.3), pose(0.0, 0.0, 0.08)])
    qd0 = np.array([0.3, 0.0, -1.5, 0.0, 2.0, 0.0, 0.6, 0.1, 0.0, 0.0, 0.0, 0.8])
    wq = np.zeros((1, T + 1, m.nq))
    wq[0, -1] = np.random.default_rng(2).normal(size=m.nq)
    opts = Contact(mode="smooth")
    g = contact_vjp(m, q0, qd0, dt, wq, steps=T, contact=opts, params=["geom_restitution", "geom_friction", "body_mass"])

    def loss(**p):
        return np.sum(wq * contact_rollout(m.replace(**p), q0, qd0, dt, steps=T, contact=opts).q)

    h = 1e-6
    for name, idx in (("geom_restitution", (1,)), ("geom_restitution", (0,)), ("geom_friction", (0,)),
                      ("geom_friction", (2,)), ("body_mass", (1,)), ("body_mass", (2,))):
        base = getattr(m, name)
        up, dn = base.copy(), base.copy()
        up[idx] += h
        dn[idx] -= h
        fd = (loss(**{name: up}) - loss(**{name: dn})) / (2 * h)
        assert abs(fd) > 1e-6, (name, idx)  # the parameter matters here
        assert g.params[name][idx] == pytest.approx(fd, rel=1e-5, abs=1e-8), (name, idx)
