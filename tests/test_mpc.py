"""iLQR (simad.mpc): the plan is consistent with the dynamics, lowers the cost, and its
Gauss-Newton pieces (coordinate Jacobian) match finite differences."""

import numpy as np

import simad
from simad import models
from simad.mpc import coords_jacobian, ilqr, shift


def test_coords_jacobian_matches_finite_differences(rng):
    m = models.load("quadruped")  # free-floating base: quaternion coordinates
    q = simad.random_configuration(m, 3, rng)
    J = coords_jacobian(m, q)
    eps = 1e-6
    for k in range(m.nv):
        dv = np.zeros((3, m.nv))
        dv[:, k] = eps
        fd = (simad.integrate(m, q, dv) - simad.integrate(m, q, -dv)) / (2 * eps)
        np.testing.assert_allclose(J[:, :, k], fd, atol=1e-8, err_msg=f"tangent direction {k}")


def test_ilqr_swings_the_cartpole_up_and_its_plan_is_a_trajectory_of_the_dynamics():
    m = models.load("cartpole")
    T, dt = 100, 0.02
    cost = simad.QuadraticCost(q_weight=np.ones(2), u_weight=np.full(m.nu, 1e-2), terminal_q_weight=np.array([10.0, 100.0]),
                               terminal_qd_weight=np.full(m.nv, 10.0), q_ref=np.zeros(2))
    q0, qd0 = np.array([0.0, np.pi]), np.zeros(m.nv)  # hanging down; hinge 0 is upright
    u = np.zeros((T, m.nu))
    first = ilqr(m, q0, qd0, u, dt, cost, iterations=1)
    plan = ilqr(m, q0, qd0, u, dt, cost, iterations=30)
    # the running cost on the angle cannot vanish during a swing-up (measured: 665 -> 247)
    assert plan.improved and plan.cost < 0.5 * first.cost
    assert abs(plan.q_ref[-1, 1]) < 0.15, plan.q_ref[-1]  # upright
    assert np.all(np.abs(plan.qd_ref[-1]) < 0.5), plan.qd_ref[-1]  # and nearly at rest
    # the plan is the open-loop rollout of its own feedforward controls from x0
    tr = simad.rollout(m, q0, qd0, plan.k, dt)
    np.testing.assert_allclose(tr.q[0], plan.q_ref, atol=1e-10)
    # and, closed loop, a perturbed start is pulled back towards the plan by the gains
    dq = np.array([0.0, 0.05])
    open_ = simad.rollout(m, q0 + dq, qd0, plan.k, dt)
    closed = simad.rollout(m, q0 + dq, qd0, plan.k, dt, gains=plan.gains, q_ref=plan.q_ref[:T], qd_ref=plan.qd_ref[:T])
    err = lambda t: np.linalg.norm(t.q[0, -1] - plan.q_ref[-1])  # noqa: E731
    assert err(closed) < 0.5 * err(open_)


def test_ilqr_tracks_a_frame_target_with_the_arm():
    m = models.load("arm7")
    ee = m.frame_names[-1]
    target = simad.forward_kinematics(m, m.qpos0 + 0.3)[0][m.frame_id(ee)]
    cost = simad.QuadraticCost(frames=(ee,), terminal_frame_weight=np.array([100.0]), frame_ref=target[None],
                               u_weight=np.full(m.nu, 1e-4), terminal_qd_weight=np.full(m.nv, 1.0))
    first = ilqr(m, m.qpos0, np.zeros(m.nv), np.zeros((30, m.nu)), 0.01, cost, iterations=1)
    plan = ilqr(m, m.qpos0, np.zeros(m.nv), np.zeros((30, m.nu)), 0.01, cost, iterations=30)
    p_end = simad.forward_kinematics(m, plan.q_ref[-1])[0][m.frame_id(ee)]
    p_start = simad.forward_kinematics(m, m.qpos0)[0][m.frame_id(ee)]
    # the optimum trades reach against holding torque (u_ref = 0): the error shrinks fivefold
    assert np.linalg.norm(p_end - target) < 0.2 * np.linalg.norm(p_start - target)
    assert plan.cost < 0.2 * first.cost


def test_shift_and_bad_inputs():
    u = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(shift(u), [[2, 3], [4, 5], [4, 5]])
    m = models.load("cartpole")
    cost = simad.QuadraticCost()
    for kw, field in (({"iterations": 0}, "iterations"), ({"mu": -1.0}, "regularization")):
        try:
            ilqr(m, np.zeros(2), np.zeros(2), np.zeros((5, 1)), 0.01, cost, **kw)
        except simad.InputError as e:
            assert e.field == field
        else:
            raise AssertionError(f"{kw} accepted")
    try:
        ilqr(m, np.zeros(2), np.zeros(2), np.zeros((5, 2)), 0.01, cost)
    except simad.InputError as e:
        assert e.field == "controls"
    else:
        raise AssertionError("wrong control width accepted")
