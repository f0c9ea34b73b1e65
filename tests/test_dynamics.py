"""RNEA, CRBA and ABA against Pinocchio on random trees, and against each other."""

import numpy as np
import pytest
from reference import assert_close, random_tree, to_pinocchio_q

import simad

pin = pytest.importorskip("pinocchio")
DYN_TOL = 1e-9


@pytest.mark.parametrize("seed,free_root", [(0, False), (1, True), (2, False), (3, True)])
def test_rnea_aba_mass_matrix_equal_pinocchio(seed, free_root):
    rng = np.random.default_rng(seed)
    model, pm, _ = random_tree(rng, nbody=9, free_root=free_root)
    B = 4
    q = simad.random_configuration(model, B, rng)
    qd, qdd, tau = (rng.normal(size=(B, model.nv)) for _ in range(3))
    a = simad.forward_dynamics(model, q, qd, tau)
    t = simad.inverse_dynamics(model, q, qd, qdd)
    M = simad.mass_matrix(model, q)
    data = pm.createData()
    for b in range(B):
        qp = to_pinocchio_q(model, q[b])
        assert_close(a[b], pin.aba(pm, data, qp, qd[b], tau[b]), DYN_TOL, 1e-10, f"ABA env {b}")
        assert_close(t[b], pin.rnea(pm, data, qp, qd[b], qdd[b]), DYN_TOL, 1e-10, f"RNEA env {b}")
        # M's columns from Pinocchio's RNEA: M e_k = rnea(q, 0, e_k) - rnea(q, 0, 0)
        g = pin.rnea(pm, data, qp, np.zeros(model.nv), np.zeros(model.nv))
        Mp = np.stack([pin.rnea(pm, data, qp, np.zeros(model.nv), e) - g for e in np.eye(model.nv)], 1)
        assert_close(M[b], Mp, DYN_TOL, 1e-10, f"CRBA env {b}")


def test_damping_and_armature_are_consistent_across_algorithms():
    rng = np.random.default_rng(5)
    b = simad.ModelBuilder("damped")
    parent = "world"
    for i in range(4):
        body = b.add_body(f"l{i}", parent, pos=(0, 0, -0.5 if i else 0), mass=1.0 + i, com=(0.1, 0, -0.25), inertia=(0.02, 0.03, 0.01))
        b.add_joint(body, f"j{i}", "revolute" if i % 2 == 0 else "prismatic", axis=rng.normal(size=3), damping=0.3 * i, armature=0.1 * i)
        parent = body
    model = b.finalize()
    q = simad.random_configuration(model, 3, rng)
    qd, tau = rng.normal(size=(2, 3, model.nv))
    qdd = simad.forward_dynamics(model, q, qd, tau)
    assert_close(simad.inverse_dynamics(model, q, qd, qdd), tau, 1e-10, what="RNEA(ABA(tau)) == tau")
    M = simad.mass_matrix(model, q)
    h = simad.inverse_dynamics(model, q, qd, np.zeros_like(qd))
    assert_close(np.einsum("bij,bj->bi", M, qdd) + h, tau, 1e-10, what="M qdd + h == tau")
    assert_close(M, M.transpose(0, 2, 1), 1e-14, what="M symmetric")
    assert np.all(np.linalg.eigvalsh(M) > 0)


def test_pendulum_matches_the_analytic_equation():
    """A point-ish pendulum: I_pivot qdd = -m g l sin(q) + tau."""
    m, length, ic = 2.0, 0.7, 0.01
    b = simad.ModelBuilder("pendulum")
    body = b.add_body("bob", "world", mass=m, com=(0, 0, -length), inertia=(ic, ic, ic))
    b.add_joint(body, "hinge", "revolute", axis=(0, 1, 0))
    model = b.finalize()
    q = np.array([[0.3], [-1.2], [2.5]])
    tau = np.array([[0.0], [0.4], [-1.0]])
    qdd = simad.forward_dynamics(model, q, np.zeros_like(q), tau)
    # rotation about +y by q moves the bob to (-l sin q, 0, -l cos q): gravity torque about +y is -m g l sin q
    expected = (-m * 9.81 * length * np.sin(q) + tau) / (ic + m * length * length)
    assert_close(qdd, expected, 1e-12, what="pendulum qdd")


def test_free_body_falls_with_gravity_and_spins_freely():
    b = simad.ModelBuilder("brick")
    body = b.add_body("brick", "world", mass=3.0, com=(0.1, -0.2, 0.05), inertia=(0.1, 0.2, 0.25))
    b.add_joint(body, "free", "free")
    model = b.finalize()
    rng = np.random.default_rng(1)
    q = simad.random_configuration(model, 2, rng)
    qdd = simad.forward_dynamics(model, q, np.zeros((2, 6)), np.zeros((2, 6)))
    # zero velocity: angular acceleration 0 and the COM accelerates at g (world); the body
    # origin too (no rotation), so the body-frame linear acceleration is R^T g
    R = simad.forward_kinematics(model, q)[1][:, 1]
    assert_close(qdd[:, 3:], np.zeros((2, 3)), 1e-12, what="angular acceleration")
    assert_close(qdd[:, :3], np.einsum("bji,j->bi", R, model.gravity), 1e-12, what="linear acceleration")


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda m: simad.forward_dynamics(m, np.zeros(m.nq), np.zeros(m.nv + 1), np.zeros(m.nv)), "qd"),
        (lambda m: simad.forward_dynamics(m, np.zeros((2, m.nq)), np.zeros((3, m.nv)), np.zeros((2, m.nv))), "qd"),
        (lambda m: simad.forward_dynamics(m, np.zeros(m.nq), np.zeros(m.nv), np.full(m.nv, np.nan)), "tau"),
        (lambda m: simad.inverse_dynamics(m, np.zeros(m.nq), np.zeros(m.nv), np.zeros((1, 2, m.nv))), "qdd"),
        (lambda m: simad.mass_matrix(m, np.zeros(m.nq + 2)), "q"),
    ],
)
def test_bad_input_names_the_field(call, field):
    model, _, _ = random_tree(np.random.default_rng(0), nbody=4)
    with pytest.raises(simad.InputError) as e:
        call(model)
    assert e.value.field == field


def test_kinematics_only_model_loads_but_forward_dynamics_refuses_it():
    b = simad.ModelBuilder("massless")
    body = b.add_body("l1", "world")
    b.add_joint(body, "j1", "revolute", axis=(0, 0, 1))
    model = b.finalize()
    assert simad.forward_kinematics(model, np.zeros(1))[0].shape == (2, 3)
    with pytest.raises(simad.ModelError) as e:
        simad.forward_dynamics(model, np.zeros(1), np.zeros(1), np.zeros(1))
    assert e.value.field == "body_mass"


def test_a_joint_that_moves_no_mass_is_refused_by_name_but_kinematics_works():
    """Romeo's finger joints carry massless links: M(q) is singular (Pinocchio's ABA returns
    NaN). simad names the joint instead of returning NaN; armature on the dof makes it
    well-posed again."""
    b = simad.ModelBuilder("hand")
    palm = b.add_body("palm", "world", mass=1.0, com=(0, 0, -0.1), inertia=(0.01, 0.01, 0.01))
    b.add_joint(palm, "wrist", "revolute", axis=(0, 1, 0))
    finger = b.add_body("finger", palm, pos=(0, 0, -0.2))
    b.add_joint(finger, "finger_joint", "revolute", axis=(0, 1, 0))
    tip = b.add_body("tip", finger, pos=(0, 0, -0.05))
    b.add_joint(tip, "tip_slide", "prismatic", axis=(0, 0, 1))
    model = b.finalize()
    assert model.massless_joints == ("finger_joint", "tip_slide")
    q, z = np.zeros(3), np.zeros(3)
    assert simad.forward_kinematics(model, q)[0].shape == (4, 3)
    assert np.isfinite(simad.inverse_dynamics(model, q, z, np.ones(3))).all()
    for call in (lambda m: simad.forward_dynamics(m, q, z, z), lambda m: simad.rollout(m, q, z, np.zeros((2, m.nu)), 0.01),
                 lambda m: simad.aba_derivatives(m, q, z, z), lambda m: simad.linearize(m, q, z, np.zeros(m.nu), 0.01)):
        with pytest.raises(simad.ModelError) as e:
            call(model)
        assert e.value.element == "joint 'finger_joint'" and e.value.field == "body_mass"
        assert "tip_slide" in str(e.value)
    # armature on the two dofs makes them well-posed
    fixed = model.replace(dof_armature=np.array([0.0, 1e-3, 1e-3]))
    assert fixed.massless_joints == ()
    qdd = simad.forward_dynamics(fixed, q, z, np.array([0.0, 1.0, 1.0]))
    assert_close(qdd[1:], np.array([1e3, 1e3]), 1e-6, what="armature-only dofs")


def test_a_mass_matrix_singular_at_the_configuration_is_reported_not_returned():
    """A point mass on the hinge's own axis: not massless, yet the hinge moves no inertia. The
    ABA would divide by zero; simad names the output and the first env instead of returning NaN."""
    b = simad.ModelBuilder("point_on_axis")
    link = b.add_body("link", "world", mass=1.0, com=(0, 0, 0.3))
    b.add_joint(link, "hinge", "revolute", axis=(0, 0, 1))
    model = b.finalize()
    assert model.massless_joints == ()
    with pytest.raises(simad.NonFiniteError) as e:
        simad.forward_dynamics(model, np.zeros((3, 1)), np.zeros((3, 1)), np.ones((3, 1)))
    assert e.value.field == "qdd" and e.value.env == 0
    with pytest.raises(simad.InputError) as e:
        simad.forward_dynamics(model, [np.nan], [0.0], [0.0])
    assert e.value.field == "q"
