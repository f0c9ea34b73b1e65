"""Smooth contact of articulated models in ``simad.rollout(..., contact=...)``: a fixed-base arm
striking the floor, a floating-base robot standing on its feet, a robot pushing a free ball;
the analytic resting depth, agreement with the free-body contact engine, gradients against
central finite differences in f64 (initial state, controls, geom friction, restitution and
size), and bad input."""

import numpy as np
import pytest

import simad
from simad import Contact, models
from simad.contact import contact_rollout

G = 9.81
SMOOTH = Contact(mode="smooth", timeconst=0.02, softness=1e-3, friction_eps=1e-2)
# Gradient checks use a softer contact: with 1 mm softness the loss through an impact is so
# curved that central differences need eps ~ 1e-8 to converge to the (right) gradient
# (measured: 1.3 % off at eps = 1e-6, 1e-6 at 1e-8); at 1 cm they agree to 1e-8 at eps = 1e-6.
SOFT = Contact(mode="smooth", timeconst=0.05, softness=1e-2, friction_eps=5e-2)
ROT_Y90 = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])  # local z along the link's x


def arm(base_z=0.75, actuated=True):
    """Two links swinging about +y over a floor: a box upper arm, a capsule forearm with a
    sphere at its tip; motors on both joints."""
    b = simad.ModelBuilder("arm_floor")
    b.add_geom(0, "plane", friction=0.8, restitution=0.0, name="floor")
    b.add_body("l1", 0, pos=(0, 0, base_z), mass=1.0, com=(0.25, 0, 0), inertia=np.diag([0.01, 0.03, 0.03]))
    b.add_joint("l1", "j1", "revolute", axis=(0, 1, 0), damping=0.05)
    b.add_body("l2", "l1", pos=(0.5, 0, 0), mass=0.7, com=(0.25, 0, 0), inertia=np.diag([0.01, 0.02, 0.02]))
    b.add_joint("l2", "j2", "revolute", axis=(0, 1, 0), damping=0.05)
    b.add_geom("l1", "box", size=(0.25, 0.04, 0.04), pos=(0.25, 0, 0), friction=0.5, name="upper")
    b.add_geom("l2", "capsule", size=(0.04, 0.2), pos=(0.25, 0, 0), rot=ROT_Y90, friction=0.5, name="shank")
    b.add_geom("l2", "sphere", size=(0.08,), pos=(0.5, 0, 0), friction=0.6, restitution=0.3, name="tip")
    if actuated:
        b.add_actuator("j1", name="m1")
        b.add_actuator("j2", name="m2")
    return b.finalize()


def tip_height(m, q):
    _, p, R = simad.frame_jacobian(m, q, "l2", return_pose=True)
    return (p + R @ np.array([0.5, 0.0, 0.0]))[:, 2]


def legged(base_h=0.45):
    """A floating box base with two one-joint legs ending in spheres (a planar biped)."""
    b = simad.ModelBuilder("biped")
    b.add_geom(0, "plane", friction=1.0, name="floor")
    b.add_body("base", 0, mass=4.0, inertia=np.diag([0.05, 0.05, 0.08]))
    b.add_joint("base", "root", "free")
    b.set_qpos0("root", [0, 0, base_h, 1, 0, 0, 0])
    b.add_geom("base", "box", size=(0.2, 0.1, 0.05), name="torso")
    for side, y in (("l", 0.12), ("r", -0.12)):
        for fx in (0.15, -0.15):
            leg = f"{side}{'f' if fx > 0 else 'h'}"
            b.add_body(leg, "base", pos=(fx, y, -0.05), mass=0.3, com=(0, 0, -0.15),
                       inertia=np.diag([0.003, 0.003, 0.0005]))
            b.add_joint(leg, leg + "_hip", "revolute", axis=(0, 1, 0), damping=0.5, range=(-0.6, 0.6))
            b.add_geom(leg, "sphere", size=(0.04,), pos=(0, 0, -0.3), friction=1.0, name=leg + "_foot")
            b.add_actuator(leg + "_hip", name=leg + "_m")
    return b.finalize()


def ball_on_free_joint(r=0.1, e=0.5, mu=0.5):
    b = simad.ModelBuilder("ball")
    b.add_geom(0, "plane", friction=mu, restitution=0.0, name="floor")
    b.add_body("ball", 0, mass=1.0, inertia=np.eye(3) * 0.4 * r**2)
    b.add_joint("ball", "free", "free")
    b.add_geom("ball", "sphere", size=(r,), friction=mu, restitution=e, name="ball_g")
    return b.finalize()


# --------------------------------------------------------------------------------------------
# behaviour
# --------------------------------------------------------------------------------------------
def test_the_arm_strikes_the_floor_and_stays_above_it():
    m = arm()
    q0 = np.array([0.3, 0.5])
    u = np.zeros((800, m.nu))
    free = simad.rollout(m, q0, np.zeros(2), u, 1e-3)
    hit = simad.rollout(m, q0, np.zeros(2), u, 1e-3, contact=SMOOTH)
    z_free, z_hit = tip_height(m, free.q[0]), tip_height(m, hit.q[0])
    assert z_free.min() < -0.1  # without contact the tip passes through the floor
    assert z_hit.min() > 0.08 - 0.01  # with it, the sphere (r = 8 cm) stops within 1 cm of the surface
    np.testing.assert_array_equal(free.q[0, :50], hit.q[0, :50])  # nothing acts before the impact
    assert np.all(np.isfinite(hit.q))


def test_a_resting_sphere_sinks_to_the_analytic_depth():
    """At rest the softplus spring carries the weight: m_eff wn^2 phi(gap) = m g with m_eff = m
    for a free sphere, so phi = g (timeconst / 2 pi)^2, and gap = -s ln(exp(phi / s) - 1)."""
    r, tc, s = 0.1, 0.02, 1e-4
    m = ball_on_free_joint(r=r)
    c = Contact(mode="smooth", timeconst=tc, softness=s)
    tr = simad.rollout(m, np.array([0, 0, r, 1, 0, 0, 0.0]), np.zeros(6), np.zeros((3000, 0)), 1e-3, contact=c)
    phi = G * (tc / (2 * np.pi)) ** 2
    gap = -s * np.log(np.expm1(phi / s))
    z = tr.q[0, :, 2] - r
    assert z[-1] == pytest.approx(gap, abs=2e-6)
    assert np.ptp(z[-1000:]) < 1e-7  # settled: no drift, no jitter
    np.testing.assert_allclose(tr.q[0, -1, [0, 1]], 0.0, atol=1e-12)


def test_a_free_sphere_matches_the_free_body_engine_smooth_mode():
    """The same spring-damper law as ``contact_rollout``'s smooth mode: a ball dropped straight
    down on a free joint bounces the same in both engines (the effective mass of a sphere hit
    through its centre is m in both). The discretisations differ: the free-body engine
    evaluates the damper at the velocity after the step's gravity (so it rests 1.3e-5 m
    higher), this one at the step's start."""
    r = 0.1
    m = ball_on_free_joint(r=r, e=0.5)
    q0 = np.array([0, 0, 0.6, 1, 0, 0, 0.0])
    c = Contact(mode="smooth")
    art = simad.rollout(m, q0, np.zeros(6), np.zeros((1500, 0)), 1e-3, contact=c)
    ref = contact_rollout(m, q0, None, 1e-3, steps=1500, contact=c)
    zr, za = ref.q[0, :, 2], art.q[0, :, 2]
    assert za.min() < r  # it touched
    np.testing.assert_allclose(za, zr, atol=5e-3)
    first_up = int(np.argmax(np.diff(za) > 0))
    assert za[first_up:].max() == pytest.approx(zr[first_up:].max(), rel=0.01)  # the same bounce
    assert za[-1] == pytest.approx(zr[-1], abs=2e-5)


def test_a_floating_base_robot_stands_on_its_feet():
    m = legged()
    c = Contact(mode="smooth", timeconst=0.02, softness=1e-4, friction_eps=1e-2)
    q0 = simad.neutral(m)
    q0[2] = 0.40  # feet 1.5 cm above the floor
    T = 3000
    tr = simad.rollout(m, q0, np.zeros(m.nv), np.zeros((T, m.nu)), 1e-3, contact=c)
    z = tr.q[0, :, 2]
    # feet at base_z - 0.05 - 0.3 - 0.04 = base_z - 0.39: it lands and stands at ~0.39 m
    assert z[-1] == pytest.approx(0.39, abs=2e-3)
    assert np.ptp(z[-1000:]) < 1e-4  # standing still
    assert np.abs(tr.q[0, -1, :2]).max() < 1e-3  # did not slide away
    assert np.linalg.norm(tr.qd[0, -1]) < 1e-3


def pusher(ball_at=(0.4, 0.2)):
    """A one-link arm turning about z (no gravity) with a hub sphere overlapping its capsule,
    and a free ball."""
    b = simad.ModelBuilder("pusher")
    b.add_body("l1", 0, mass=1.0, com=(0.25, 0, 0), inertia=np.diag([0.01, 0.03, 0.03]))
    b.add_joint("l1", "j1", "revolute", axis=(0, 0, 1))
    b.add_geom("l1", "capsule", size=(0.05, 0.25), pos=(0.25, 0, 0), rot=ROT_Y90, friction=0.3, name="link")
    b.add_geom("l1", "sphere", size=(0.06,), name="hub")
    b.add_actuator("j1", name="m1")
    b.add_body("ball", 0, mass=0.2, inertia=np.eye(3) * 0.4 * 0.2 * 0.05**2)
    b.add_joint("ball", "ball_free", "free")
    b.add_geom("ball", "sphere", size=(0.05,), friction=0.3, name="ball_g")
    m = b.finalize().replace(gravity=np.zeros(3))
    return m, np.concatenate([[0.0], [*ball_at, 0.0, 1, 0, 0, 0]])


def quadruped_standing(T):
    """The shipped quadruped on a ground plane, legs straight, feet 2 mm above the ground, a
    joint PD holding the stance (closed-loop gains)."""
    m = models.load("quadruped").with_ground(friction=1.0)
    q0 = simad.neutral(m)
    _, p, _ = simad.frame_jacobian(m, q0, "FL_foot", return_pose=True)
    q0[2] = -p[2] + 0.02 + 0.002  # foot spheres: r = 2 cm
    K = np.zeros((T, m.nu, 2 * m.nv))
    for a, d in enumerate(m.actuator_dof):
        K[:, a, d], K[:, a, m.nv + d] = -60.0, -2.0
    return m, q0, K, np.tile(q0, (T, 1))


def test_the_shipped_quadruped_stands_on_a_ground_plane():
    T = 3000
    m, q0, K, qref = quadruped_standing(T)
    assert m.geom_names[-1] == "ground" and m.ngeom == models.load("quadruped").ngeom + 1
    c = Contact(mode="smooth", timeconst=0.02, softness=1e-4, friction_eps=1e-2)
    tr = simad.rollout(m, q0, np.zeros(m.nv), np.zeros((T, m.nu)), 1e-3, gains=K, q_ref=qref, contact=c)
    z = tr.q[0, :, 2]
    assert z[-1] == pytest.approx(q0[2] - 0.002, abs=0.02)  # on its feet (legs bend a little under PD)
    assert np.ptp(z[-1000:]) < 1e-4  # settled: no sinking, no chatter
    assert np.abs(tr.qd[0, -500:]).max() < 1e-3
    assert np.abs(tr.q[0, -1, :2] - q0[:2]).max() < 5e-3  # did not walk off


def test_a_robot_pushes_a_free_ball_but_not_itself():
    """Inter-tree contact moves the ball and slows the arm; the arm's own capsule and hub
    overlap all along (one tree: no self-collision)."""
    m, q0 = pusher()
    u = np.full((600, 1), 0.5)  # torque the link round towards the ball
    tr = simad.rollout(m, q0, np.zeros(m.nv), u, 1e-3, contact=SMOOTH)
    free = simad.rollout(m, q0, np.zeros(m.nv), u, 1e-3)
    assert np.linalg.norm(tr.q[0, -1, 1:3] - q0[1:3]) > 0.05  # the ball was pushed
    assert tr.q[0, -1, 0] < free.q[0, -1, 0] - 0.01  # and the arm felt it
    # momentum about z: the torque's impulse goes to the arm and the ball together
    far, q_far = pusher(ball_at=(2.0, 0.0))
    tr_far = simad.rollout(far, q_far, np.zeros(far.nv), u, 1e-3, contact=SMOOTH)
    np.testing.assert_array_equal(tr_far.q, simad.rollout(far, q_far, np.zeros(far.nv), u, 1e-3).q)


# --------------------------------------------------------------------------------------------
# gradients (f64, central differences)
# --------------------------------------------------------------------------------------------
def _fd(f, x, eps):
    x = np.asarray(x, float)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        g[i] = (f(x + d) - f(x - d)) / (2 * eps)
    return g


def _loss(tr, qbar, vbar):
    return float((tr.q * qbar).sum() + (tr.qd * vbar).sum())


def test_arm_gradients_through_the_impact_match_finite_differences():
    m = arm()
    T = 500
    rng = np.random.default_rng(3)
    q0, v0 = np.array([0.3, 0.5]), np.array([0.2, -0.1])
    u = 0.3 * rng.normal(size=(T, m.nu))
    qbar = rng.normal(size=(1, T + 1, m.nq))
    vbar = 0.1 * rng.normal(size=(1, T + 1, m.nv))
    g = simad.rollout_vjp(m, q0, v0, u, 1e-3, qbar, vbar, contact=SOFT)
    hit, free = (simad.rollout(m, q0, v0, u, 1e-3, contact=c).q for c in (SOFT, None))
    assert np.abs(hit - free).max() > 0.1  # the impact matters

    def run(mm=m, q=q0, v=v0, uu=u):
        return _loss(simad.rollout(mm, q, v, uu, 1e-3, contact=SOFT), qbar, vbar)

    np.testing.assert_allclose(g.q0[0], _fd(lambda x: run(q=x), q0, 1e-6), rtol=1e-5)
    np.testing.assert_allclose(g.qd0[0], _fd(lambda x: run(v=x), v0, 1e-6), rtol=1e-5)
    # a few controls around the impact
    for t in (100, 250, 400):
        for a in range(m.nu):
            d = np.zeros_like(u)
            d[t, a] = 1e-6
            fd = (run(uu=u + d) - run(uu=u - d)) / 2e-6
            assert g.controls[0, t, a] == pytest.approx(fd, rel=1e-5, abs=1e-8)
    for name in ("geom_friction", "geom_restitution", "geom_size"):
        base = getattr(m, name)
        fd = _fd(lambda x, n=name: run(mm=m.replace(**{n: x})), base, 1e-6)
        np.testing.assert_allclose(g.params[name], fd, rtol=1e-5, atol=1e-7)
        assert np.abs(g.params[name]).max() > 1e-3  # they matter here


def test_legged_robot_gradients_match_finite_differences():
    m = legged()
    c = SOFT
    T = 300
    rng = np.random.default_rng(5)
    q0 = simad.neutral(m)
    q0[2] = 0.395
    q0[7:] = 0.1 * rng.normal(size=m.nu)
    v0 = 0.1 * rng.normal(size=m.nv)
    u = 0.5 * rng.normal(size=(T, m.nu))
    qbar = rng.normal(size=(1, T + 1, m.nq))
    vbar = 0.1 * rng.normal(size=(1, T + 1, m.nv))
    g = simad.rollout_vjp(m, q0, v0, u, 1e-3, qbar, vbar, contact=c, integrator="rk4")

    def run(q=q0, v=v0, uu=u):
        return _loss(simad.rollout(m, q, v, uu, 1e-3, contact=c, integrator="rk4"), qbar, vbar)

    np.testing.assert_allclose(g.qd0[0], _fd(lambda x: run(v=x), v0, 1e-6), rtol=1e-5, atol=1e-6)
    fdq = _fd(lambda x: run(q=x), q0, 1e-6)
    # the quaternion gradient is taken through its normalisation: compare the tangent part
    qn = q0[3:7] / np.linalg.norm(q0[3:7])
    proj = lambda v: v - qn * (qn @ v)  # noqa: E731
    np.testing.assert_allclose(g.q0[0, :3], fdq[:3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(proj(g.q0[0, 3:7]), proj(fdq[3:7]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g.q0[0, 7:], fdq[7:], rtol=1e-5, atol=1e-6)
    d = np.zeros_like(u)
    d[150, 1] = 1e-6
    assert g.controls[0, 150, 1] == pytest.approx((run(uu=u + d) - run(uu=u - d)) / 2e-6, rel=1e-5, abs=1e-8)


def slider(moving, static, moving_size, static_size, static_pos):
    """A body on two prismatic joints (x, z) and a skew revolute joint, carrying one geom with
    an offset and a tilt, against one static geom."""
    b = simad.ModelBuilder("slider")
    b.add_geom(0, static, size=static_size, pos=static_pos, friction=0.7, restitution=0.2, name="static")
    b.add_body("a", 0, pos=(0, 0, 0.5), mass=1.0, com=(0.05, 0.02, 0), inertia=np.diag([0.02, 0.03, 0.04]))
    b.add_joint("a", "x", "prismatic", axis=(1, 0, 0))
    b.add_body("c", "a", mass=0.5, com=(0.1, 0, 0), inertia=np.diag([0.01, 0.01, 0.01]))
    b.add_joint("c", "z", "prismatic", axis=(0, 0, 1))
    b.add_body("d", "c", mass=0.5, com=(0.1, 0, 0), inertia=np.diag([0.01, 0.01, 0.01]))
    b.add_joint("d", "r", "revolute", axis=(0.3, 1, 0.2))
    b.add_geom("d", moving, size=moving_size, pos=(0.1, 0.02, -0.03), rot=ROT_Y90, friction=0.5, restitution=0.4,
               name="moving")
    return b.finalize()


PAIRS = {  # moving geom, static geom, their sizes, the static geom's position, initial z, steps
    "plane-sphere": ("sphere", "plane", (0.1,), (), (0, 0, 0), -0.2, 200),
    "plane-capsule": ("capsule", "plane", (0.05, 0.15), (), (0, 0, 0), -0.2, 200),
    "plane-box": ("box", "plane", (0.1, 0.07, 0.05), (), (0, 0, 0), -0.2, 200),
    "sphere-sphere": ("sphere", "sphere", (0.1,), (0.3,), (0.1, 0, -0.3), -0.2, 200),
    "sphere-capsule": ("capsule", "sphere", (0.05, 0.15), (0.3,), (0.1, 0, -0.3), -0.2, 200),
    "capsule-sphere": ("sphere", "capsule", (0.1,), (0.1, 0.4), (0.1, 0, -0.4), -0.2, 200),
    "sphere-box": ("sphere", "box", (0.1,), (0.5, 0.4, 0.2), (0.1, 0, -0.2), -0.2, 200),
    "sphere-inside-box": ("sphere", "box", (0.1,), (0.5, 0.4, 0.2), (0.1, 0, -0.2), -0.55, 40),
    "box-sphere": ("box", "sphere", (0.1, 0.07, 0.05), (0.3,), (0.1, 0, -0.3), -0.2, 200),
    "capsule-box": ("capsule", "box", (0.05, 0.15), (0.5, 0.4, 0.2), (0.1, 0, -0.2), -0.2, 200),
}


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_every_pair_type_has_the_finite_difference_gradient(pair):
    moving, static, ms, ss, sp, z0, T = PAIRS[pair]
    m = slider(moving, static, ms, ss, sp)
    rng = np.random.default_rng(11)
    q0, v0 = np.array([0.0, z0, 0.4]), np.array([0.3, -0.5, 1.0])
    u = np.zeros((T, 0))
    qbar, vbar = rng.normal(size=(1, T + 1, 3)), 0.1 * rng.normal(size=(1, T + 1, 3))
    touched = simad.rollout(m, q0, v0, u, 1e-3, contact=SOFT).q
    assert np.abs(touched - simad.rollout(m, q0, v0, u, 1e-3).q).max() > 0.05  # the contact acted

    def run(mm=m, q=q0, v=v0):
        return _loss(simad.rollout(mm, q, v, u, 1e-3, contact=SOFT), qbar, vbar)

    g = simad.rollout_vjp(m, q0, v0, u, 1e-3, qbar, vbar, contact=SOFT)
    np.testing.assert_allclose(g.q0[0], _fd(lambda x: run(q=x), q0, 1e-6), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g.qd0[0], _fd(lambda x: run(v=x), v0, 1e-6), rtol=1e-6, atol=1e-6)
    for name in ("geom_size", "geom_friction", "geom_restitution"):
        fd = _fd(lambda x, n=name: run(mm=m.replace(**{n: x})), getattr(m, name), 1e-6)
        np.testing.assert_allclose(g.params[name], fd, rtol=1e-6, atol=1e-6)


def test_quadruped_gradients_through_four_feet_match_finite_differences():
    T = 150
    m, q0, K, qref = quadruped_standing(T)
    q0[2] -= 0.004  # feet 2 mm into the ground at the start
    rng = np.random.default_rng(9)
    u = 0.5 * rng.normal(size=(T, m.nu))
    v0 = 0.05 * rng.normal(size=m.nv)
    qbar, vbar = rng.normal(size=(1, T + 1, m.nq)), 0.1 * rng.normal(size=(1, T + 1, m.nv))
    kw = dict(gains=K, q_ref=qref, contact=SOFT)
    g = simad.rollout_vjp(m, q0, v0, u, 1e-3, qbar, vbar, **kw)

    def run(v=v0, uu=u, mm=m):
        return _loss(simad.rollout(mm, q0, v, uu, 1e-3, **kw), qbar, vbar)

    np.testing.assert_allclose(g.qd0[0], _fd(lambda x: run(v=x), v0, 1e-6), rtol=1e-6, atol=1e-6)
    for t, a in ((10, 2), (75, 7), (140, 11)):
        d = np.zeros_like(u)
        d[t, a] = 1e-6
        assert g.controls[0, t, a] == pytest.approx((run(uu=u + d) - run(uu=u - d)) / 2e-6, rel=1e-6, abs=1e-8)
    fd = _fd(lambda x: run(mm=m.replace(geom_friction=x)), m.geom_friction, 1e-6)
    np.testing.assert_allclose(g.params["geom_friction"], fd, rtol=1e-6, atol=1e-7)
    assert np.abs(fd[1:5]).min() > 0  # every foot's friction matters


def test_value_and_grad_with_contact_and_checkpointing_equals_the_full_tape():
    m = arm()
    T = 400
    u = np.zeros((T, m.nu))
    cost = simad.QuadraticCost(q_weight=np.ones(2), q_ref=np.array([1.0, 0.0]), u_weight=1e-3 * np.ones(m.nu))
    full = simad.value_and_grad(m, np.array([0.3, 0.5]), np.zeros(2), u, 1e-3, cost, contact=SMOOTH)
    seg = simad.value_and_grad(m, np.array([0.3, 0.5]), np.zeros(2), u, 1e-3, cost, contact=SMOOTH,
                               checkpoint_every=37)
    assert seg.checkpoint_every == 37
    np.testing.assert_array_equal(full.controls, seg.controls)
    np.testing.assert_array_equal(full.params["geom_friction"], seg.params["geom_friction"])
    np.testing.assert_allclose(full.loss, seg.loss, rtol=1e-14)  # summed per segment: last-bit rounding


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def test_bad_contact_input_is_rejected_with_named_fields():
    m = arm()
    u = np.zeros((10, m.nu))
    with pytest.raises(simad.InputError) as e:
        simad.rollout(m, np.zeros(2), np.zeros(2), u, 1e-3, contact=Contact(mode="impulse"))
    assert e.value.field == "contact.mode"
    with pytest.raises(simad.InputError) as e:
        simad.rollout(m, np.zeros(2), np.zeros(2), u, 1e-3, contact="smooth")
    assert e.value.field == "contact"
    with pytest.raises(simad.InputError) as e:
        simad.rollout(m, np.zeros(2), np.zeros(2), u, 1e-2, contact=Contact(mode="smooth", timeconst=0.01))
    assert e.value.field == "contact.timeconst"
    # capsule-capsule between two trees is not available: named, not silently ignored
    b = simad.ModelBuilder("two_capsules")
    for k in range(2):
        b.add_body(f"c{k}", 0, pos=(0, 0.3 * k, 0), mass=1.0, inertia=np.eye(3) * 0.01)
        b.add_joint(f"c{k}", f"j{k}", "revolute", axis=(0, 0, 1))
        b.add_geom(f"c{k}", "capsule", size=(0.05, 0.2), name=f"cap{k}")
    with pytest.raises(simad.ModelError) as e:
        simad.rollout(b.finalize(), np.zeros(2), np.zeros(2), np.zeros((5, 0)), 1e-3, contact=SMOOTH)
    assert "cap0" in str(e.value) and "cap1" in str(e.value)
    # a model without geoms
    nog = simad.ModelBuilder("bare")
    nog.add_body("l", 0, mass=1.0, inertia=np.eye(3))
    nog.add_joint("l", "j", "revolute")
    with pytest.raises(simad.ModelError):
        simad.rollout(nog.finalize(), np.zeros(1), np.zeros(1), np.zeros((5, 0)), 1e-3, contact=SMOOTH)
    # a ground plane is checked
    with pytest.raises(simad.InputError) as e:
        m.with_ground(restitution=2.0)
    assert e.value.field == "restitution"
    with pytest.raises(simad.ModelError):
        m.with_ground(name="floor")  # the arm has one already
