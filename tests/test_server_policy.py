"""Server-side MLP policies through a real channel on 127.0.0.1: rollouts and gradients with a
policy equal the engine's bit for bit, ModelInfo carries what a client needs to size one, and
bad policies get INVALID_ARGUMENT / RESOURCE_EXHAUSTED naming the field while the server keeps
serving."""

from __future__ import annotations

import numpy as np
import pytest
from serving import ServerThread
from simad_client import Client, WireError, encode
from simad_client.policy import MLPPolicy, observation_size
from simad_client.proto import gradients_pb2

import simad
from simad import models

COST = {"q_weight": [1.0, 2.0], "q_ref": [0.0, np.pi], "qd_weight": [0.1, 0.1], "u_weight": [0.01],
        "terminal_q_weight": [5.0, 5.0]}


@pytest.fixture(scope="module")
def srv():
    with ServerThread(metrics_port=0, max_batch=64, max_steps=500, max_elements=200_000) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv):
    with Client(srv.address, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def cart(client):
    return client.load_model(builtin="cartpole"), models.load("cartpole")


def _engine_policy(model, pol: MLPPolicy) -> simad.MLPPolicy:
    return simad.MLPPolicy(model, pol.hidden, observation=pol.observation, weights=pol.weights,
                           squash=pol.squash, output_scale=pol.output_scale,
                           obs_scale=1.0 if pol.obs_scale is None else pol.obs_scale)


def test_model_info_sizes_a_policy_like_the_engine(client, cart):
    info, model = cart
    assert info.joint_types == tuple(int(t) for t in model.jnt_type)
    assert info.ctrl_range.shape == (model.nu, 2) and info.joint_range.shape == (model.njnt, 2)
    for obs in ("trig", "raw"):
        assert observation_size(info, obs) == simad.policy.observation_size(model, obs)
    quad = client.load_model(builtin="quadruped")
    assert observation_size(quad, "trig") == simad.policy.observation_size(models.load("quadruped"), "trig")
    pol = MLPPolicy.for_model(info, (16, 8), seed=4)
    np.testing.assert_array_equal(pol.weights, simad.MLPPolicy(model, (16, 8), seed=4).weights)


@pytest.mark.parametrize("squash,scale", [(True, None), (False, 0.7)])
def test_policy_rollout_and_gradients_equal_the_engine_bit_for_bit(client, cart, rng, squash, scale):
    info, model = cart
    pol = MLPPolicy.for_model(info, (8, 8), seed=1, squash=squash, output_scale=scale)
    pol = pol.with_weights(pol.weights + 0.3 * rng.standard_normal(pol.num_params))
    ep = _engine_policy(model, pol)
    B, T, dt = 4, 30, 0.02
    q0 = 0.2 * rng.standard_normal((B, model.nq))
    qd0 = 0.1 * rng.standard_normal((B, model.nv))
    tr = client.rollout(info.model_id, q0, qd0, None, dt, policy=pol, steps=T)
    ref = simad.rollout(model, q0, qd0, None, dt, policy=ep, steps=T)
    np.testing.assert_array_equal(tr.q, ref.q)
    np.testing.assert_array_equal(tr.u, ref.u)
    ff = 0.1 * rng.standard_normal((T, model.nu))
    g = client.value_and_grad(info.model_id, q0, qd0, ff, dt, COST, policy=pol, params=["body_mass"])
    r = simad.value_and_grad(model, q0, qd0, ff, dt, simad.QuadraticCost(**COST), policy=ep, params=("body_mass",))
    np.testing.assert_array_equal(g.policy, r.policy)
    np.testing.assert_array_equal(g.loss, r.loss)
    np.testing.assert_array_equal(g.q0, r.q0)
    np.testing.assert_array_equal(g.params["body_mass"], r.params["body_mass"])
    qb = rng.standard_normal((B, T + 1, model.nq))
    v = client.rollout_vjp(info.model_id, q0, qd0, None, dt, qb, policy=pol, steps=T, checkpoint_every=7)
    rv = simad.rollout_vjp(model, q0, qd0, None, dt, qb, policy=ep, steps=T, checkpoint_every=7)
    np.testing.assert_array_equal(v.policy, rv.policy)
    assert v.policy.shape == (pol.num_params,) and np.abs(v.policy).max() > 0


def _bad(pol: MLPPolicy, **changes) -> MLPPolicy:
    out = MLPPolicy(pol.sizes, pol.weights, pol.observation, pol.output_scale, pol.obs_scale, pol.squash)
    for k, v in changes.items():
        setattr(out, k, v)
    return out


def test_bad_policies_name_the_field_and_the_server_keeps_serving(client, cart, srv):
    info, model = cart
    pol = MLPPolicy.for_model(info, (4,), seed=0)
    q0, qd0 = np.zeros(model.nq), np.zeros(model.nv)
    cases = [
        (dict(weights=pol.weights[:-1]), "INVALID_ARGUMENT", "rollout.policy.weights"),
        (dict(weights=np.full(pol.num_params, np.nan)), "INVALID_ARGUMENT", "rollout.policy.weights"),
        (dict(sizes=(pol.sizes[0], 0, model.nu)), "INVALID_ARGUMENT", "rollout.policy.hidden"),
        (dict(observation="pixels"), "INVALID_ARGUMENT", "rollout.policy.observation"),
        (dict(output_scale=np.ones(3)), "INVALID_ARGUMENT", "rollout.policy.output_scale"),
        (dict(obs_scale=np.ones(2)), "INVALID_ARGUMENT", "rollout.policy.obs_scale"),
    ]
    for changes, code, field in cases:
        with pytest.raises(WireError) as e:
            client.rollout(info.model_id, q0, qd0, None, 0.01, policy=_bad(pol, **changes), steps=5)
        assert (e.value.code, e.value.field) == (code, field), changes
    # a policy too big for the batch: the per-env weight gradients would pass the element limit
    big = MLPPolicy.for_model(info, (200, 200), seed=0)
    with pytest.raises(WireError) as e:
        client.rollout_vjp(info.model_id, np.zeros((16, model.nq)), qd0, None, 0.01, policy=big, steps=5)
    assert (e.value.code, e.value.field) == ("RESOURCE_EXHAUSTED", "rollout.policy.weights")
    # a policy with feedback gains, forward mode, a missing horizon
    with pytest.raises(WireError) as e:
        client.rollout(info.model_id, q0, qd0, np.zeros((3, model.nu)), 0.01, policy=pol,
                       gains=np.zeros((3, model.nu, 2 * model.nv)), q_ref=np.zeros((3, model.nq)))
    assert (e.value.code, e.value.field) == ("INVALID_ARGUMENT", "rollout.policy")
    with pytest.raises(WireError) as e:
        client.rollout(info.model_id, q0, qd0, None, 0.01, policy=pol, steps=10_000)
    assert (e.value.code, e.value.field) == ("RESOURCE_EXHAUSTED", "rollout.steps")
    req = gradients_pb2.RolloutJvpRequest()
    encode.rollout_spec(info.model_id, q0, qd0, np.zeros((3, model.nu)), 0.01, policy=pol, out=req.rollout)
    with pytest.raises(WireError) as e:
        client._unary(client._gradients.RolloutJvp, req, 30)
    assert (e.value.code, e.value.field) == ("UNIMPLEMENTED", "rollout.policy")
    req = gradients_pb2.RolloutJvpRequest()  # forward mode differentiates controls: a steps-only spec is refused
    encode.rollout_spec(info.model_id, q0, qd0, None, 0.01, steps=3, out=req.rollout)
    with pytest.raises(WireError) as e:
        client._unary(client._gradients.RolloutJvp, req, 30)
    assert (e.value.code, e.value.field) == ("INVALID_ARGUMENT", "rollout.controls")
    # B is the largest batch of any input: one q0 row with 100 qd0 rows is B = 100 (limit 64)
    with pytest.raises(WireError) as e:
        client.rollout(info.model_id, q0, np.zeros((100, model.nv)), None, 0.01, policy=pol, steps=5)
    assert (e.value.code, e.value.field) == ("RESOURCE_EXHAUSTED", "rollout.qd0")
    # the server still serves, and a policy for another model is refused by its size
    chain = client.load_model(builtin="planar_chain_3")
    with pytest.raises(WireError) as e:
        client.rollout(chain.model_id, np.zeros(3), np.zeros(3), None, 0.01, policy=pol, steps=5)
    assert e.value.code == "INVALID_ARGUMENT" and e.value.field.startswith("rollout.policy")
    tr = client.rollout(info.model_id, q0, qd0, None, 0.01, policy=pol, steps=5)
    assert tr.q.shape == (1, 6, model.nq)
