"""Contact: analytic cases (bounce, elastic collision, sliding to rest, resting), gradients
against central finite differences where no contact mode switches inside the FD window, the
time-of-impact correction against the naive discrete gradient, stability, and bad input."""

import numpy as np
import pytest

import simad
from simad import models
from simad.contact import Contact, contact_rollout, contact_value_and_grad, contact_vjp

G = 9.81


def ball_scene(radius=0.1, e=0.8, mu=0.5, floor=True, gravity=(0, 0, -G), balls=1, floor_e=0.0, floor_mu=None):
    b = simad.ModelBuilder("balls")
    if floor:
        b.add_geom(0, "plane", friction=mu if floor_mu is None else floor_mu, restitution=floor_e, name="floor")
    for k in range(balls):
        name = f"ball{k}"
        b.add_body(name, 0, mass=1.0, inertia=np.eye(3) * 0.4 * radius**2)
        b.add_joint(name, name + "_free", type="free")
        b.add_geom(name, "sphere", size=(radius,), friction=mu, restitution=e, name=name + "_g")
    return b.finalize().replace(gravity=np.array(gravity, float))


def box_scene(mu=0.4, half=(0.1, 0.1, 0.1)):
    b = simad.ModelBuilder("box")
    b.add_geom(0, "plane", friction=mu, restitution=0.0, name="floor")
    hx, hy, hz = half
    m = 2.0
    b.add_body("box", 0, mass=m, inertia=np.diag([m * (hy**2 + hz**2) / 3, m * (hx**2 + hz**2) / 3, m * (hx**2 + hy**2) / 3]))
    b.add_joint("box", "box_free", type="free")
    b.add_geom("box", "box", size=half, friction=mu, restitution=0.0, name="box_g")
    return b.finalize()


def pose(x, y, z):
    return np.array([x, y, z, 1.0, 0, 0, 0])


# smooth contact penetrates about v_impact / (2 pi / timeconst) = 4.4 m/s / 314 /s = 1.4 cm
# smooth: the damping ratio from e is exact for an unclamped spring-dashpot; clamping the
# force at zero lets the ball leave a little early (measured apex 0.676 for e^2 h = 0.64)
@pytest.mark.parametrize("mode,tol,pen", [("impulse", 0.01, 2e-3), ("smooth", 0.08, 0.015)])
def test_a_dropped_ball_bounces_to_e_squared_h(mode, tol, pen):
    e, h, r = 0.8, 1.0, 0.1
    m = ball_scene(radius=r, e=e)
    tr = contact_rollout(m, pose(0, 0, h + r), None, 1e-3, steps=2000, contact=Contact(mode=mode))
    z = tr.q[0, :, 2] - r
    first_up = int(np.argmax(np.diff(z) > 0))
    apex = z[first_up:first_up + 900].max()
    assert apex == pytest.approx(e**2 * h, rel=tol)
    assert z.min() > -pen  # no tunnelling


def test_elastic_two_ball_collision_conserves_momentum_and_energy():
    m = ball_scene(e=1.0, floor=False, gravity=(0, 0, 0), balls=2, mu=0.0)
    m = m.replace(body_mass=np.array([0.0, 1.0, 3.0]))
    q0 = np.concatenate([pose(0, 0, 0), pose(0.5, 0.05, 0)])
    qd0 = np.array([1.0, 0, 0, 0, 0, 0, -0.5, 0, 0, 0, 0, 0])
    tr = contact_rollout(m, q0, qd0, 1e-3, steps=600)
    masses = np.array([1.0, 3.0])
    v = tr.qd[0][:, [0, 1, 2]], tr.qd[0][:, [6, 7, 8]]  # body frame == world (no rotation: no friction)
    p = masses[0] * v[0] + masses[1] * v[1]
    np.testing.assert_allclose(p[-1], p[0], atol=1e-9)
    ke = 0.5 * masses[0] * np.sum(v[0] ** 2, 1) + 0.5 * masses[1] * np.sum(v[1] ** 2, 1)
    assert not np.allclose(v[0][-1], v[0][0])  # they did collide
    assert ke[-1] == pytest.approx(ke[0], rel=1e-6)


def test_a_sliding_box_stops_after_v2_over_2_mu_g():
    mu, v = 0.4, 2.0
    m = box_scene(mu=mu)
    tr = contact_rollout(m, pose(0, 0, 0.1), np.array([v, 0, 0, 0, 0, 0]), 1e-3, steps=800)
    x = tr.q[0, :, 0]
    assert x[-1] == pytest.approx(v**2 / (2 * mu * G), rel=0.02)
    assert abs(tr.qd[0, -1, 0]) < 1e-6  # at rest (static friction holds)


@pytest.mark.parametrize("scene", ["ball", "box"])
def test_resting_contact_stays_put_for_10_seconds(scene):
    m = ball_scene() if scene == "ball" else box_scene()
    q0 = pose(0, 0, 0.1)
    tr = contact_rollout(m, q0, None, 2e-3, steps=5000)
    drift = np.abs(tr.q[0, :, :3] - q0[:3]).max()
    assert drift < 2e-4, drift  # the stated tolerance: 0.2 mm over 10 s
    np.testing.assert_allclose(np.abs(tr.q[0, -1, 3]), 1.0, atol=1e-6)  # no spin-up


def _fd(f, x, h):
    return np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(x.size)])


@pytest.mark.parametrize("mode", ["impulse", "smooth"])
def test_gradient_through_one_bounce_matches_finite_differences(mode):
    m = ball_scene(e=0.7, mu=0.3)
    T, dt = 300, 2e-3
    opts = Contact(mode=mode)
    q0, qd0 = pose(0, 0, 0.5), np.array([1.0, 0.2, -1.0, 0.0, 0.0, 0.0])
    wq = np.zeros((1, T + 1, 7))
    wq[0, -1, :3] = [1.0, 0.5, 2.0]
    g = contact_vjp(m, q0, qd0, dt, wq, steps=T, contact=opts)

    def loss(v):
        return np.sum(wq * contact_rollout(m, q0, v, dt, steps=T, contact=opts).q)

    np.testing.assert_allclose(g.qd0[0, :3], _fd(loss, qd0, 1e-6)[:3], rtol=2e-5, atol=1e-7)
    assert g.quality.mode_switches[0] >= 2  # touched down, took off


def test_gradient_of_stopping_distance_wrt_friction_matches_finite_differences():
    mu, v = 0.4, 2.0
    m = box_scene(mu=mu)
    T, dt = 700, 1e-3
    wq = np.zeros((1, T + 1, 7))
    wq[0, -1, 0] = 1.0
    g = contact_vjp(m, pose(0, 0, 0.1), np.array([v, 0, 0, 0, 0, 0]), dt, wq, steps=T, params=["geom_friction"])
    analytic = -v**2 / (2 * mu**2 * G)  # d/dmu of v^2 / (2 mu g); pair mu = sqrt(mu_floor mu_box)
    total = g.params["geom_friction"].sum()  # both geoms move the pair coefficient equally
    assert total == pytest.approx(analytic, rel=0.03)

    def dist(f):
        return contact_rollout(m.replace(geom_friction=np.array([f, f])), pose(0, 0, 0.1),
                               np.array([v, 0, 0, 0, 0, 0]), dt, steps=T).q[0, -1, 0]

    fd = (dist(mu + 1e-6) - dist(mu - 1e-6)) / 2e-6
    assert total == pytest.approx(fd, rel=1e-4)


def test_time_of_impact_gives_the_right_gradient_where_the_naive_one_is_wrong():
    """A ball flies at a wall-like floor without gravity and bounces elastically: the final
    height mirrors the start, dz_T / dz_0 = -1. The naive discrete scheme says +1."""
    m = ball_scene(e=1.0, mu=0.0, gravity=(0, 0, 0))
    T, dt = 100, 1e-2
    qd0 = np.array([0, 0, -1.0, 0, 0, 0])
    wq = np.zeros((1, T + 1, 7))
    wq[0, -1, 2] = 1.0
    z0 = 0.5234

    def final(z, toi):
        return contact_rollout(m, pose(0, 0, z), qd0, dt, steps=T, contact=Contact(toi=toi)).q[0, -1, 2]

    ours = contact_vjp(m, pose(0, 0, z0), qd0, dt, wq, steps=T).q0[0, 2]
    naive = contact_vjp(m, pose(0, 0, z0), qd0, dt, wq, steps=T, contact=Contact(toi=False)).q0[0, 2]
    wide = (final(z0 + 0.05, True) - final(z0 - 0.05, True)) / 0.1  # spans several steps' worth of shift
    assert ours == pytest.approx(-1.0, abs=1e-6)
    assert wide == pytest.approx(-1.0, abs=1e-6)
    # the naive scheme's gradient follows the step-wise target -gap/dt (its own per-step
    # derivative) and has nothing to do with the mirror: far from -1
    assert abs(naive - (-1.0)) > 1.0, naive
    naive_wide = (final(z0 + 0.05, False) - final(z0 - 0.05, False)) / 0.1
    assert abs(naive - naive_wide) > 1.0  # nor does it describe its own trajectory's trend


def test_value_and_grad_with_a_built_in_cost_and_a_quality_report():
    m = ball_scene(e=0.7, mu=0.3)
    T, dt = 200, 2e-3
    cost = simad.QuadraticCost(terminal_q_weight=np.array([1.0, 1.0, 1.0, 0, 0, 0, 0]),
                               q_ref=np.array([0.6, 0.1, 0.3, 1, 0, 0, 0]))
    B = 3
    qd0 = np.tile([1.0, 0.2, -1.0, 0, 0, 0], (B, 1)) * np.array([[1.0], [1.1], [0.9]])
    g = contact_value_and_grad(m, pose(0, 0, 0.4), qd0, dt, cost, steps=T, contact=Contact(mode="smooth"), fd_check=True)
    assert g.loss.shape == (B,) and g.qd0.shape == (B, 6) and g.controls.shape == (B, T, 1, 6)
    assert np.all(g.quality.fd_rel_error < 1e-5), g.quality.fd_rel_error
    assert np.all(g.quality.max_growth > 0) and np.all(g.quality.max_growth_step >= 0)
    # the control gradient of a constant force equals the FD of the loss along it
    tr = contact_rollout(m, pose(0, 0, 0.4), qd0, dt, steps=T, contact=Contact(mode="smooth"))
    assert np.isfinite(tr.q).all()


def test_many_spheres_in_a_box_settle_without_blowing_up():
    b = simad.ModelBuilder("pile")
    b.add_geom(0, "plane", restitution=0.0, name="floor")
    for k, (ax, sgn) in enumerate([(0, 1), (0, -1), (1, 1), (1, -1)]):
        rot = np.eye(3)
        normal = np.zeros(3)
        normal[ax] = -sgn  # walls facing inwards at +-0.3
        z = np.array([0, 0, 1.0])
        x = np.cross(normal, z) if abs(normal @ z) < 0.9 else np.array([1.0, 0, 0])
        rot = np.stack([x, np.cross(normal, x), normal], 1)
        pos = np.zeros(3)
        pos[ax] = 0.3 * sgn
        b.add_geom(0, "plane", pos=pos, rot=rot, name=f"wall{k}")
    rng = np.random.default_rng(0)
    n = 12
    q0 = []
    for k in range(n):
        b.add_body(f"s{k}", 0, mass=0.2, inertia=np.eye(3) * 0.4 * 0.2 * 0.05**2)
        b.add_joint(f"s{k}", f"f{k}", type="free")
        b.add_geom(f"s{k}", "sphere", size=(0.05,), restitution=0.2, name=f"g{k}")
        q0.append(pose(*rng.uniform(-0.2, 0.2, 2), 0.1 + 0.12 * k))
    m = b.finalize()
    tr = contact_rollout(m, np.concatenate(q0), None, 2e-3, steps=1500)
    p = tr.q[0, -1].reshape(n, 7)[:, :3]
    assert np.all(np.abs(p[:, :2]) < 0.3 - 0.05 + 5e-3)  # inside the walls
    assert np.all(p[:, 2] > 0.05 - 5e-3)  # above the floor
    d = np.linalg.norm(p[:, None] - p[None], axis=-1) + np.eye(n)
    assert d.min() > 0.1 - 5e-3  # no deep overlap between spheres
    lin = tr.qd[0, -1].reshape(n, 6)[:, :3]
    assert np.abs(lin).max() < 0.3, lin  # settling (spheres may still roll)


def test_bad_input_is_rejected_with_named_fields():
    m = ball_scene()
    with pytest.raises(simad.InputError) as e:
        contact_rollout(m, np.zeros(6), None, 1e-3, steps=10)
    assert e.value.field == "q0"
    with pytest.raises(simad.InputError) as e:
        contact_rollout(m, pose(0, 0, 1), np.zeros(5), 1e-3, steps=10)
    assert e.value.field == "qd0"
    with pytest.raises(simad.InputError) as e:
        contact_rollout(m, pose(0, 0, 1), None, -1e-3, steps=10)
    assert e.value.field == "dt"
    with pytest.raises(simad.InputError) as e:
        contact_rollout(m, pose(0, 0, 1), None, 1e-3, controls=np.zeros((10, 2, 6)))
    assert e.value.field == "controls"
    with pytest.raises(simad.InputError) as e:
        contact_rollout(m, pose(0, 0, 1), None, 1e-3, steps=10, contact=Contact(mode="magic"))
    assert e.value.field == "contact.mode"
    with pytest.raises(simad.InputError) as e:
        contact_rollout(m, pose(0, 0, 1), None, 1e-2, steps=10, contact=Contact(mode="smooth", timeconst=0.01))
    assert e.value.field == "contact.timeconst"
    with pytest.raises(simad.InputError) as e:
        contact_rollout(m, np.array([0, 0, 1, 0, 0, 0, 0.0]), None, 1e-3, steps=10)
    assert e.value.field == "q0"
    with pytest.raises(simad.InputError) as e:
        contact_rollout(m, np.array([0, 0, np.nan, 1, 0, 0, 0.0]), None, 1e-3, steps=10)
    assert e.value.field == "q0"
    with pytest.raises(simad.ModelError):
        contact_rollout(models.load("cartpole"), np.zeros(2), None, 1e-3, steps=10)
    with pytest.raises(simad.ModelError) as e:
        contact_rollout(m.replace(body_inertia=np.zeros((m.nbody, 3, 3))), pose(0, 0, 1), None, 1e-3, steps=2)
    assert e.value.field == "inertia"
    with pytest.raises(simad.ModelError) as e:  # a bad shape size never reaches the kernels
        b = simad.ModelBuilder("bad")
        b.add_body("x", 0, mass=1.0, inertia=np.eye(3))
        b.add_geom("x", "sphere", size=(-1.0,))
    assert e.value.field == "size"


def test_a_stack_of_three_boxes_stands_for_10_seconds():
    """Box-box contacts (reference face, incident vertices) and the Jacobi solver with mass
    splitting hold a slightly staggered stack: the stated tolerance is 5 mm of sink and 3 mm
    of lateral drift over 10 s (8 iterations, dt = 2 ms)."""
    b = simad.ModelBuilder("stack")
    b.add_geom(0, "plane", friction=0.6, name="floor")
    h, n = 0.1, 3
    for k in range(n):
        b.add_body(f"b{k}", 0, mass=1.0, inertia=np.eye(3) * (2 * h) ** 2 / 6)
        b.add_joint(f"b{k}", f"f{k}", type="free")
        b.add_geom(f"b{k}", "box", size=(h, h, h), friction=0.6, name=f"g{k}")
    m = b.finalize()
    q0 = np.concatenate([pose(0.01 * k, 0, h + 2 * h * k + 1e-3 * k) for k in range(n)])
    tr = contact_rollout(m, q0, None, 2e-3, steps=5000)
    p = tr.q[0, -1].reshape(n, 7)
    rest = h + 2 * h * np.arange(n)
    assert np.all(np.abs(p[:, 2] - rest) < 5e-3), p[:, 2]
    assert np.all(np.abs(p[:, 0] - 0.01 * np.arange(n)) < 3e-3), p[:, 0]
    assert np.all(np.abs(p[:, 3]) > 1 - 1e-4)  # upright


def test_capsules_spheres_and_boxes_come_to_rest_on_each_other():
    """Pair types at rest: capsule-plane, sphere-box (static), box-plane, capsule-box."""
    b = simad.ModelBuilder("mix")
    b.add_geom(0, "plane", friction=0.8, name="floor")
    b.add_geom(0, "box", size=(0.2, 0.2, 0.1), pos=(2.0, 0, 0.1), friction=0.8, name="table")
    lying = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0.0]])  # capsule axis (local z) along world y
    b.add_body("cap", 0, mass=1.0, inertia=np.diag([0.01, 0.01, 0.002]))
    b.add_joint("cap", "fcap", type="free")
    b.add_geom("cap", "capsule", size=(0.05, 0.2), rot=lying, friction=0.8, name="gcap")
    b.add_body("ball", 0, mass=0.5, inertia=np.eye(3) * 0.4 * 0.5 * 0.05**2)
    b.add_joint("ball", "fball", type="free")
    b.add_geom("ball", "sphere", size=(0.05,), friction=0.8, name="gball")
    b.add_body("box", 0, mass=2.0, inertia=np.eye(3) * 2.0 * 0.2**2 / 6)
    b.add_joint("box", "fbox", type="free")
    b.add_geom("box", "box", size=(0.1, 0.1, 0.1), friction=0.8, name="gbox")
    b.add_body("cap2", 0, mass=0.5, inertia=np.diag([0.005, 0.005, 0.001]))
    b.add_joint("cap2", "fcap2", type="free")
    b.add_geom("cap2", "capsule", size=(0.03, 0.15), rot=lying, friction=0.8, name="gcap2")
    m = b.finalize()
    q0 = np.concatenate([pose(0, 0, 0.08), pose(2.0, 0, 0.27), pose(-1.0, 0, 0.12), pose(-1.0, 0, 0.26)])
    tr = contact_rollout(m, q0, None, 2e-3, steps=1500)
    p = tr.q[0, -1].reshape(4, 7)[:, :3]
    np.testing.assert_allclose(p[0, 2], 0.05, atol=2e-3)  # capsule radius above the floor
    np.testing.assert_allclose(p[1], [2.0, 0, 0.25], atol=2e-3)  # on the table top
    np.testing.assert_allclose(p[2, 2], 0.1, atol=2e-3)  # box on the floor
    np.testing.assert_allclose(p[3, 2], 0.2 + 0.03, atol=3e-3)  # capsule lying across the box
    assert np.abs(tr.qd[0, -1]).max() < 0.05


@pytest.mark.parametrize("mode", ["impulse", "smooth"])
def test_inertia_com_and_gravity_gradients_match_finite_differences(mode):
    """A tumbling box lands on its corner: the gradient w.r.t. its inertia (chained through
    the inverse on the host), its centre of mass and gravity against central differences."""
    m = box_scene(mu=0.5, half=(0.15, 0.1, 0.05)).replace(body_com=np.array([[0, 0, 0], [0.01, -0.02, 0.005]]))
    T, dt = 150, 2e-3
    opts = Contact(mode=mode)
    q0 = np.array([0, 0, 0.3, 0.9, 0.3, 0.2, 0.1])
    q0[3:] /= np.linalg.norm(q0[3:])
    qd0 = np.array([0.5, 0.0, -1.0, 2.0, -1.0, 3.0])
    wq = np.zeros((1, T + 1, 7))
    wq[0, -1] = [1.0, 0.5, 2.0, 0.3, -0.2, 0.1, 0.4]
    g = contact_vjp(m, q0, qd0, dt, wq, steps=T, contact=opts, params=["body_inertia", "body_com", "gravity"])

    def loss(**p):
        return np.sum(wq * contact_rollout(m.replace(**p), q0, qd0, dt, steps=T, contact=opts).q)

    h = 1e-7  # the smooth contact's softplus (1 mm wide) is sharply curved in the COM height
    for name, idx in (("body_inertia", (1, 0, 0)), ("body_inertia", (1, 2, 2)), ("body_com", (1, 0)),
                      ("body_com", (1, 2)), ("gravity", (2,))):
        base = getattr(m, name)
        up, dn = base.copy(), base.copy()
        up[idx] += h
        dn[idx] -= h
        fd = (loss(**{name: up}) - loss(**{name: dn})) / (2 * h)
        assert g.params[name][idx] == pytest.approx(fd, rel=1e-4, abs=1e-7), (name, idx)


@pytest.mark.parametrize("qd0", [np.array([1.0, 0, 0, 0, 10.0, 0]), np.zeros(6)], ids=["rolling", "resting"])
def test_rolling_and_resting_balls_have_the_analytic_gradient(qd0):
    """A solid ball on a rough floor (static friction, impulse mode): a push dv along x ends as
    rolling at 5/7 dv, so d x_T / d vx_0 = 5/7 T dt exactly; the gradient stays bounded (an
    unregularised slip direction made it grow 2.5x per step)."""
    m = ball_scene(e=0.0, mu=0.5)
    T, dt = 200, 1e-3
    wq = np.zeros((1, T + 1, 7))
    wq[0, -1, 0] = 1.0
    g = contact_vjp(m, pose(0, 0, 0.1), qd0, dt, wq, steps=T)
    assert g.qd0[0, 0] == pytest.approx(5 / 7 * T * dt, rel=1e-9)
    assert g.quality.max_growth[0] < 1.01


def _mixed_scene(rng):
    """Floor and a wall; spheres and capsules (with offset geoms and COMs), spread out."""
    b = simad.ModelBuilder("mixed")
    b.add_geom(0, "plane", friction=0.6, restitution=0.3, name="floor")
    b.add_geom(0, "plane", pos=(1.0, 0, 0), rot=np.array([[0, 0, -1.0], [0, 1, 0], [1, 0, 0]]), name="wall")
    kinds = ["sphere"] * 6 + ["capsule"] * 4
    for k, kind in enumerate(kinds):
        name = f"b{k}"
        b.add_body(name, 0, mass=rng.uniform(0.5, 2.0), com=rng.uniform(-0.02, 0.02, 3),
                   inertia=np.eye(3) * rng.uniform(0.01, 0.03))
        b.add_joint(name, name + "_free", type="free")
        size = {"sphere": (rng.uniform(0.05, 0.1),), "capsule": (0.05, rng.uniform(0.05, 0.15))}[kind]
        b.add_geom(name, kind, size=size, pos=rng.uniform(-0.02, 0.02, 3), friction=rng.uniform(0.2, 0.8),
                   restitution=rng.uniform(0.0, 0.6), name=name + "_g")
    m = b.finalize()
    q0 = np.concatenate([pose(*rng.uniform(-0.6, 0.6, 2), rng.uniform(0.1, 0.8)) for _ in kinds])
    qd0 = rng.normal(scale=1.5, size=m.nv)
    return m, q0, qd0


@pytest.mark.parametrize("mode", ["impulse", "smooth"])
def test_the_broad_phase_changes_nothing_but_the_work(mode):
    """Bounding-sphere culling only skips pairs whose contribution is exactly zero: the rollout
    (both modes) and the gradient (impulse mode; smooth mode only widens the margin, and its
    stage kernels would double this test's compile time) equal the all-pairs narrow phase bit for
    bit, through many collisions."""
    m, q0, qd0 = _mixed_scene(np.random.default_rng(3))
    q0 = np.stack([q0, q0])  # two envs, the second shifted along x
    q0[1, 0::7] += 0.05
    on, off = Contact(mode=mode), Contact(mode=mode, broad_phase=False)
    a = contact_rollout(m, q0, qd0, 2e-3, steps=300, contact=on)
    b = contact_rollout(m, q0, qd0, 2e-3, steps=300, contact=off)
    np.testing.assert_array_equal(a.q, b.q)
    assert np.abs(a.q[:, -1] - a.q[:, 0]).max() > 0.05  # things moved and collided
    if mode == "smooth":
        return
    qb = np.random.default_rng(1).normal(size=(2, 61, m.nq))
    ga = contact_vjp(m, q0, qd0, 2e-3, qb, steps=60, contact=on)
    gb = contact_vjp(m, q0, qd0, 2e-3, qb, steps=60, contact=off)
    np.testing.assert_array_equal(ga.qd0, gb.qd0)
    np.testing.assert_array_equal(ga.params["body_mass"], gb.params["body_mass"])
    np.testing.assert_array_equal(ga.quality.mode_switches, gb.quality.mode_switches)
    assert ga.quality.mode_switches.min() > 0  # contacts came and went inside the gradient's window


def test_the_sweep_finds_the_contacts_of_a_dense_pile():
    """40 spheres dropped in layers into a walled box: the sweep-and-prune candidates give the
    same motion as the all-pairs narrow phase (equal up to the summation order of simultaneous
    contacts on one body, which the sweep may visit in another order)."""
    b = simad.ModelBuilder("pile40")
    b.add_geom(0, "plane", friction=0.5, name="floor")
    for k, (ax, sgn) in enumerate([(0, 1), (0, -1), (1, 1), (1, -1)]):
        normal = np.zeros(3)
        normal[ax] = -sgn
        x = np.cross(normal, [0, 0, 1.0])
        b.add_geom(0, "plane", pos=np.eye(3)[ax] * 0.12 * sgn, rot=np.stack([x, np.cross(normal, x), normal], 1),
                   name=f"wall{k}")
    rng = np.random.default_rng(4)
    q0 = []
    for k in range(40):
        b.add_body(f"s{k}", 0, mass=0.1, inertia=np.eye(3) * 1e-5)
        b.add_joint(f"s{k}", f"f{k}", type="free")
        b.add_geom(f"s{k}", "sphere", size=(0.025,), friction=0.5, restitution=0.3, name=f"g{k}")
        layer, i = divmod(k, 9)
        q0.append(pose((i // 3 - 1) * 0.052 + rng.uniform(-2e-3, 2e-3), (i % 3 - 1) * 0.052 + rng.uniform(-2e-3, 2e-3),
                       0.026 + 0.053 * layer))
    m = b.finalize()
    q0 = np.concatenate(q0)
    on = contact_rollout(m, q0, None, 2e-3, steps=250, contact=Contact())
    off = contact_rollout(m, q0, None, 2e-3, steps=250, contact=Contact(broad_phase=False))
    assert np.abs(on.q[0, -1] - on.q[0, 0]).max() > 0.01  # the pile fell and settled onto itself
    np.testing.assert_allclose(on.q, off.q, rtol=0, atol=1e-9)


