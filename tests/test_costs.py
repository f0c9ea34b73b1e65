"""The built-in cost's obstacle term: value, gradient against central finite differences, and
what iLQR does with it."""

import numpy as np

import simad
from simad import models


def _setup():
    m = models.load("arm7")
    ee = m.frame_names[-1]
    T = 12
    u = np.random.default_rng(3).normal(0.0, 0.5, (T, m.nu))
    tr = simad.rollout(m, m.qpos0, np.zeros(m.nv), u, 0.01)
    p = simad.forward_kinematics(m, tr.q[0, -4])[0][m.frame_id(ee)]
    # a sphere the end effector passes through near the end of the horizon
    obs = np.array([[p[0] + 0.02, p[1], p[2] - 0.01, 0.08], [5.0, 5.0, 5.0, 0.1]])
    cost = simad.QuadraticCost(obstacle_frames=(ee, m.frame_names[-3]), obstacles=obs, obstacle_weight=[50.0, 1.0],
                               u_weight=np.full(m.nu, 1e-3))
    return m, u, cost


def test_obstacle_penalty_value_and_gradient_match_finite_differences():
    m, u, cost = _setup()
    g = simad.value_and_grad(m, m.qpos0, np.zeros(m.nv), u, 0.01, cost)
    assert g.loss[0] > 1e-4  # the penalty is active
    rng = np.random.default_rng(0)
    for _ in range(3):
        d = rng.standard_normal(u.shape)
        eps = 1e-6
        lp = simad.value_and_grad(m, m.qpos0, np.zeros(m.nv), u + eps * d, 0.01, cost).loss[0]
        lm = simad.value_and_grad(m, m.qpos0, np.zeros(m.nv), u - eps * d, 0.01, cost).loss[0]
        fd = (lp - lm) / (2 * eps)
        np.testing.assert_allclose(np.sum(g.controls[0] * d), fd, rtol=1e-6, atol=1e-9)


def test_obstacle_value_is_the_documented_formula_and_clearance():
    m, u, cost = _setup()
    tr = simad.rollout(m, m.qpos0, np.zeros(m.nv), u, 0.01)
    pos = simad.forward_kinematics(m, tr.q[0])[0][:, [m.frame_id(f) for f in cost.obstacle_frames]]
    obs = np.asarray(cost.obstacles)
    dist = np.linalg.norm(pos[:, :, None] - obs[:, :3], axis=-1)
    expect = 0.5 * np.sum(np.array([50.0, 1.0]) * np.maximum(obs[:, 3] - dist, 0) ** 2)
    expect += 0.5 * 1e-3 * np.sum(u**2)
    got = simad.value_and_grad(m, m.qpos0, np.zeros(m.nv), u, 0.01, cost).loss[0]
    np.testing.assert_allclose(got, expect, rtol=1e-12)
    b = cost.bind(m, 1, u.shape[0])
    np.testing.assert_allclose(b.clearance(tr.q[0]), (dist - obs[:, 3]).min(axis=(1, 2)), rtol=1e-12)


def test_ilqr_pushes_the_path_out_of_the_obstacle():
    m, u, cost = _setup()
    b = cost.bind(m, 1, u.shape[0])
    before = simad.rollout(m, m.qpos0, np.zeros(m.nv), u, 0.01)
    plan = simad.ilqr(m, m.qpos0, np.zeros(m.nv), u, 0.01, cost, iterations=10)
    # steps 0-3 cannot move far from the fixed start; from step 4 on the path leaves the sphere
    assert b.clearance(before.q[0][4:]).min() < -0.02
    assert b.clearance(plan.q_ref[4:]).min() > -0.005


def test_bad_obstacles_are_rejected_with_the_field():
    m, u, _ = _setup()
    for kw, field in (({"obstacles": [[0, 0, 0, -1.0]], "obstacle_frames": ("link1",)}, "cost.obstacles"),
                      ({"obstacles": [[0, 0, 0, 1.0]]}, "cost.obstacle_frames"),
                      ({"obstacles": [[0, 0, 0]], "obstacle_frames": ("link1",)}, "cost.obstacles"),
                      ({"obstacles": [[0, 0, 0, 1.0]], "obstacle_frames": ("nope",)}, "cost.obstacle_frames[0]")):
        try:
            simad.value_and_grad(m, m.qpos0, np.zeros(m.nv), u, 0.01, simad.QuadraticCost(**kw))
        except simad.InputError as e:
            assert e.field == field, (kw, e)
        else:
            raise AssertionError(f"{kw} accepted")
