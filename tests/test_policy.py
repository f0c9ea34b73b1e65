"""MLP policies evaluated inside the fused rollout: forward against a numpy reference,
gradients (weights, initial state, controls, physical parameters) against central finite
differences in float64, checkpointing, and input validation."""

import numpy as np
import pytest
from test_rollout import rich_model

import simad
from simad import models

FD_EPS = 1e-6


def _rel(a, b):
    return abs(a - b) / max(1.0, abs(b))


@pytest.mark.parametrize("observation,squash", [("trig", True), ("raw", False)])
def test_applied_controls_equal_the_numpy_policy(rng, observation, squash):
    m = rich_model(rng, free=True)  # free base (position + unit quaternion), revolute, prismatic, welded
    pol = simad.MLPPolicy(m, (7, 5), observation=observation, squash=squash, output_scale=0.5,
                          obs_scale=rng.uniform(0.5, 1.5, simad.policy.observation_size(m, observation)), seed=3)
    pol = pol.with_weights(pol.weights + 0.2 * rng.normal(size=pol.num_params))
    B, T = 3, 15
    q0 = simad.random_configuration(m, B, rng)
    ff = 0.2 * rng.normal(size=(B, T, m.nu))
    tr = simad.rollout(m, q0, 0.3 * rng.normal(size=(B, m.nv)), ff, 0.01, policy=pol)
    np.testing.assert_allclose(tr.u, ff + pol(tr.q[:, :-1], tr.qd[:, :-1]), atol=1e-12)
    # and the policy really acts: the same rollout without it differs
    tr0 = simad.rollout(m, q0, tr.qd[:, 0], ff, 0.01)
    assert np.abs(tr0.q[:, -1] - tr.q[:, -1]).max() > 1e-4


def test_policy_only_rollout_takes_steps_instead_of_controls(rng):
    m = models.load("cartpole")
    pol = simad.MLPPolicy(m, (4,), seed=0)
    tr = simad.rollout(m, np.zeros(m.nq), np.zeros(m.nv), None, 0.01, policy=pol, steps=7)
    assert tr.q.shape == (1, 8, m.nq)
    np.testing.assert_allclose(tr.u, pol(tr.q[:, :-1], tr.qd[:, :-1]), atol=1e-13)


@pytest.mark.parametrize("name,integrator", [("rich_free", "semi_implicit_euler"), ("cartpole", "rk4"),
                                             ("rich_hinge", "semi_implicit_euler")])
def test_policy_gradients_match_central_finite_differences(rng, name, integrator):
    m = rich_model(rng, free=name == "rich_free") if name.startswith("rich") else models.load(name)
    pol = simad.MLPPolicy(m, (6, 5), seed=2, output_scale=1.0)
    pol = pol.with_weights(pol.weights + 0.3 * rng.normal(size=pol.num_params))
    B, T, dt = 2, 12, 0.01
    q0 = simad.random_configuration(m, B, rng)
    qd0 = 0.4 * rng.normal(size=(B, m.nv))
    ff = 0.3 * rng.normal(size=(B, T, m.nu))
    cost = simad.QuadraticCost(q_weight=np.ones(m.nq), qd_weight=0.1 * np.ones(m.nv), u_weight=0.5 * np.ones(m.nu),
                               terminal_q_weight=2 * np.ones(m.nq))

    def loss(w=pol.weights, q0=q0, qd0=qd0, ff=ff, mass=None):
        mm = m
        if mass is not None:
            mm = m.replace(body_mass=mass)
        g = simad.value_and_grad(mm, q0, qd0, ff, dt, cost, integrator=integrator, policy=pol.with_weights(w),
                                 params=())
        return g.loss.sum()

    g = simad.value_and_grad(m, q0, qd0, ff, dt, cost, integrator=integrator, policy=pol, params=("body_mass",))
    assert g.policy.shape == (pol.num_params,)
    checks = []
    d = rng.normal(size=pol.num_params)
    checks.append(("policy", g.policy @ d, loss(w=pol.weights + FD_EPS * d), loss(w=pol.weights - FD_EPS * d)))
    d = rng.normal(size=qd0.shape)
    checks.append(("qd0", np.sum(g.qd0 * d), loss(qd0=qd0 + FD_EPS * d), loss(qd0=qd0 - FD_EPS * d)))
    d = rng.normal(size=q0.shape)
    if name == "rich_free":
        d[:, 3:7] = 0.0  # coordinates off the unit sphere are not configurations
    checks.append(("q0", np.sum(g.q0 * d), loss(q0=q0 + FD_EPS * d), loss(q0=q0 - FD_EPS * d)))
    d = rng.normal(size=ff.shape)
    checks.append(("controls", np.sum(g.controls * d), loss(ff=ff + FD_EPS * d), loss(ff=ff - FD_EPS * d)))
    d = rng.normal(size=m.nbody)
    d[0] = 0.0
    checks.append(("body_mass", g.params["body_mass"] @ d, loss(mass=m.body_mass + FD_EPS * d),
                   loss(mass=m.body_mass - FD_EPS * d)))
    for what, analytic, lp, lm in checks:
        fd = (lp - lm) / (2 * FD_EPS)
        assert _rel(analytic, fd) < 2e-6, (what, analytic, fd)
        assert abs(fd) > 1e-6, what  # the direction really moves the loss


def test_policy_gradient_through_checkpoints_equals_the_full_tape(rng):
    m = models.load("cartpole")
    pol = simad.MLPPolicy(m, (8,), seed=5)
    pol = pol.with_weights(pol.weights + 0.5 * rng.normal(size=pol.num_params))
    q0, qd0 = rng.normal(size=(3, m.nq)) * 0.2, rng.normal(size=(3, m.nv)) * 0.2
    qb = rng.normal(size=(3, 41, m.nq))
    full = simad.rollout_vjp(m, q0, qd0, None, 0.01, qb, policy=pol, steps=40)
    ck = simad.rollout_vjp(m, q0, qd0, None, 0.01, qb, policy=pol, steps=40, checkpoint_every=7)
    assert ck.checkpoint_every == 7 and full.checkpoint_every == 40
    np.testing.assert_array_equal(ck.policy, full.policy)
    np.testing.assert_array_equal(ck.q0, full.q0)


def test_policy_gradient_is_clipped_with_the_rest(rng):
    m = models.load("cartpole")
    pol = simad.MLPPolicy(m, (4,), seed=1)
    qb = rng.normal(size=(2, 11, m.nq)) * 100
    g = simad.rollout_vjp(m, np.zeros((2, m.nq)), np.zeros(m.nv), None, 0.01, qb, policy=pol, steps=10)
    c = simad.rollout_vjp(m, np.zeros((2, m.nq)), np.zeros(m.nv), None, 0.01, qb, policy=pol, steps=10,
                          clip_norm=g.norm / 4)
    assert c.clipped and not g.clipped
    np.testing.assert_allclose(c.policy, g.policy / 4, rtol=1e-12)


@pytest.mark.parametrize("make,field", [
    (lambda m: simad.MLPPolicy(m, (0,)), "policy.hidden"),
    (lambda m: simad.MLPPolicy(m, "wide"), "policy.hidden"),
    (lambda m: simad.MLPPolicy(m, (4,), observation="pixels"), "policy.observation"),
    (lambda m: simad.MLPPolicy(m, (4,), output_scale=[1.0, 2.0, 3.0]), "policy.output_scale"),
    (lambda m: simad.MLPPolicy(m, (4,), obs_scale=np.nan), "policy.obs_scale"),
    (lambda m: simad.MLPPolicy(m, (4,), weights=np.zeros(3)), "policy.weights"),
    (lambda m: simad.MLPPolicy(m, (4,)).with_weights(np.full(simad.MLPPolicy(m, (4,)).num_params, np.inf)),
     "policy.weights"),
    (lambda m: simad.MLPPolicy(m, (1024,) * 8), "policy.hidden"),
    (lambda m: simad.MLPPolicy(models.planar_chain(2, actuated=False)), "policy"),
])
def test_bad_policies_name_the_field(make, field):
    with pytest.raises(simad.InputError) as e:
        make(models.load("cartpole"))
    assert e.value.field == field


def test_a_policy_must_fit_the_model_and_not_mix_with_gains():
    cart = models.load("cartpole")
    pol = simad.MLPPolicy(models.planar_chain(3), (4,))
    with pytest.raises(simad.InputError) as e:
        simad.rollout(cart, np.zeros(cart.nq), np.zeros(cart.nv), None, 0.01, policy=pol, steps=3)
    assert e.value.field == "policy"
    pol = simad.MLPPolicy(cart, (4,))
    with pytest.raises(simad.InputError) as e:
        simad.rollout(cart, np.zeros(cart.nq), np.zeros(cart.nv), np.zeros((3, cart.nu)), 0.01, policy=pol,
                      gains=np.zeros((3, cart.nu, 2 * cart.nv)), q_ref=np.zeros((3, cart.nq)))
    assert e.value.field == "policy"
    with pytest.raises(simad.InputError) as e:
        simad.rollout(cart, np.zeros(cart.nq), np.zeros(cart.nv), None, 0.01, policy=pol)
    assert e.value.field == "controls"
    with pytest.raises(simad.InputError) as e:
        simad.rollout(cart, np.zeros(cart.nq), np.zeros(cart.nv), None, 0.01, policy=pol, steps=0)
    assert e.value.field == "steps"
    with pytest.raises(simad.InputError) as e:
        simad.rollout(cart, np.zeros(cart.nq), np.zeros(cart.nv), None, 0.01, policy="mlp", steps=3)
    assert e.value.field == "policy"
