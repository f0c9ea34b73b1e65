"""Inverse kinematics: success rate and residuals on reachable targets, honest failure."""

import numpy as np
import pytest
from reference import random_tree

import simad


def _arm(n=7):
    """A 7-dof arm with alternating axes and joint limits (independent of the shipped assets)."""
    b = simad.ModelBuilder("ik_arm")
    parent = "world"
    for i in range(n):
        body = b.add_body(f"l{i}", parent, pos=(0, 0, 0.3 if i else 0.1), mass=1, com=(0, 0, 0.15), inertia=(0.01, 0.01, 1e-3))
        b.add_joint(body, f"j{i}", "revolute", axis=(0, 0, 1) if i % 2 == 0 else (0, 1, 0), range=(-2.9, 2.9))
        parent = body
    b.add_site("tool", parent, pos=(0.05, 0, 0.1))
    return b.finalize()


def _reachable_targets(model, frame, n, seed):
    q = simad.random_configuration(model, n, np.random.default_rng(seed))
    pos, rot = simad.forward_kinematics(model, q)
    f = model.frame_id(frame)
    return pos[:, f], rot[:, f]


def test_full_pose_ik_success_rate_and_residual():
    model = _arm()
    tp, tr = _reachable_targets(model, "tool", 500, seed=1)
    res = simad.inverse_kinematics(model, "tool", tp, tr)
    assert res.success.mean() >= 0.99, f"success rate {res.success.mean():.3f}"
    ok = res.success
    pos, rot = simad.forward_kinematics(model, res.q)
    f = model.frame_id("tool")
    assert np.linalg.norm(pos[ok, f] - tp[ok], axis=1).max() < 1e-6
    cos = (np.einsum("bij,bij->b", rot[ok, f], tr[ok]) - 1) / 2
    assert np.arccos(np.clip(cos, -1, 1)).max() < 1e-6
    assert np.all(res.pos_residual[ok] < 1e-6)
    lo, hi = model.jnt_range[:, 0], model.jnt_range[:, 1]
    assert np.all(res.q >= lo - 1e-12) and np.all(res.q <= hi + 1e-12), "solution outside joint limits"


def test_position_only_ik_on_random_tree_with_free_base():
    rng = np.random.default_rng(4)
    model, _, _ = random_tree(rng, nbody=7, free_root=True)
    tp, _ = _reachable_targets(model, model.nframe - 1, 200, seed=2)
    res = simad.inverse_kinematics(model, model.nframe - 1, tp)
    assert res.success.mean() >= 0.99
    pos, _ = simad.forward_kinematics(model, res.q)
    assert np.linalg.norm(pos[res.success, -1] - tp[res.success], axis=1).max() < 1e-6


def test_unreachable_target_is_reported_not_solved():
    model = _arm()
    tp = np.array([[5.0, 0.0, 0.5], [0.0, 0.0, 0.9]])  # 5 m away: out of reach; second: reachable
    res = simad.inverse_kinematics(model, "tool", tp, restarts=3)
    assert not res.success[0] and res.pos_residual[0] > 1.0
    pos, _ = simad.forward_kinematics(model, res.q)
    # the reported residual is the real one at the returned q
    assert np.isclose(np.linalg.norm(pos[0, model.frame_id("tool")] - tp[0]), res.pos_residual[0])


def test_joint_limits_make_a_target_unreachable():
    b = simad.ModelBuilder("limited")
    l1 = b.add_body("l1", "world", mass=1, com=(0.5, 0, 0), inertia=(0.01, 0.1, 0.1))
    b.add_joint(l1, "j1", "revolute", axis=(0, 0, 1), range=(-0.5, 0.5))
    b.add_site("tip", l1, pos=(1, 0, 0))
    model = b.finalize()
    res = simad.inverse_kinematics(model, "tip", np.array([[-1.0, 0, 0], [np.cos(0.3), np.sin(0.3), 0]]))
    assert list(res.success) == [False, True]
    assert abs(res.q[1, 0] - 0.3) < 1e-9 and -0.5 <= res.q[0, 0] <= 0.5


def test_ik_is_reproducible_and_uses_q_init():
    model = _arm()
    tp, tr = _reachable_targets(model, "tool", 20, seed=5)
    a = simad.inverse_kinematics(model, "tool", tp, tr, seed=3)
    b = simad.inverse_kinematics(model, "tool", tp, tr, seed=3)
    assert np.array_equal(a.q, b.q)
    q_true = simad.random_configuration(model, 20, np.random.default_rng(5))
    c = simad.inverse_kinematics(model, "tool", tp, tr, q_init=q_true, restarts=0)
    assert c.success.all() and np.all(c.iterations == 0)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(target_pos=np.zeros((2, 2))), "target_pos"),
        (dict(target_pos=np.full((1, 3), np.inf)), "target_pos"),
        (dict(target_pos=np.zeros((1, 3)), target_rot=np.ones((1, 3, 3))), "target_rot"),
        (dict(target_pos=np.zeros((1, 3)), target_rot=np.eye(3)), "target_rot"),
        (dict(target_pos=np.zeros((2, 3)), q_init=np.zeros((3, 7))), "q_init"),
        (dict(target_pos=np.zeros((1, 3)), max_iters=0), "max_iters"),
        (dict(target_pos=np.zeros((1, 3)), damping=-1.0), "damping"),
        (dict(target_pos=np.zeros((1, 3)), frame="nope"), "frame"),
    ],
)
def test_ik_bad_input(kwargs, field):
    model = _arm()
    kwargs.setdefault("frame", "tool")
    with pytest.raises(simad.InputError) as e:
        simad.inverse_kinematics(model, **kwargs)
    assert e.value.field == field
