"""Smooth contact of articulated models through the service (RolloutSpec.contact) over a real
channel on 127.0.0.1: Rollout, RolloutVjp and ValueAndGrad equal the engine bit for bit (the
geom parameter gradients included), and bad contact input gets its code and field while the
server keeps serving."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from serving import ServerThread
from simad_client import Client, WireError, codec, encode
from simad_client.proto import gradients_pb2, gradients_pb2_grpc

import simad
from simad import Contact

MJCF = """
<mujoco model="arm_floor">
  <worldbody>
    <geom name="floor" type="plane" size="2 2 0.1" friction="0.8"/>
    <body name="l1" pos="0 0 0.75">
      <joint name="j1" type="hinge" axis="0 1 0" damping="0.05"/>
      <inertial pos="0.25 0 0" mass="1" diaginertia="0.01 0.03 0.03"/>
      <geom name="upper" type="box" size="0.25 0.04 0.04" pos="0.25 0 0"/>
      <body name="l2" pos="0.5 0 0">
        <joint name="j2" type="hinge" axis="0 1 0" damping="0.05"/>
        <inertial pos="0.25 0 0" mass="0.7" diaginertia="0.01 0.02 0.02"/>
        <geom name="tip" type="sphere" size="0.08" pos="0.5 0 0" friction="0.6"/>
      </body>
    </body>
  </worldbody>
  <actuator><motor joint="j1"/><motor joint="j2"/></actuator>
</mujoco>
"""
TWO_CAPSULES = """
<mujoco model="two_capsules">
  <worldbody>
    <body name="a">
      <joint name="ja" type="hinge" axis="0 0 1"/><geom name="cap_a" type="capsule" size="0.05 0.2" mass="1"/>
    </body>
    <body name="b" pos="0 0.3 0">
      <joint name="jb" type="hinge" axis="0 0 1"/><geom name="cap_b" type="capsule" size="0.05 0.2" mass="1"/>
    </body>
  </worldbody>
</mujoco>
"""
C = Contact(mode="smooth", timeconst=0.03, softness=2e-3, friction_eps=2e-2)
WIRE = {"mode": "smooth", "timeconst": 0.03, "softness": 2e-3, "friction_eps": 2e-2}
DT, T, B = 1e-3, 300, 3


@pytest.fixture(scope="module")
def srv():
    with ServerThread(metrics_port=0, max_batch=16, max_steps=1000, max_elements=200_000) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv):
    with Client(srv.address, timeout=300) as c:
        yield c


@pytest.fixture(scope="module")
def arm(client):
    info = client.load_model(mjcf=MJCF)
    model = simad.load_mjcf(MJCF)
    assert info.content_hash == model.content_hash
    return info.model_id, model


def problem():
    rng = np.random.default_rng(2)
    q0 = np.array([0.3, 0.5]) + 0.05 * rng.standard_normal((B, 2))
    qd0 = 0.2 * rng.standard_normal((B, 2))
    u = 0.3 * rng.standard_normal((B, T, 2))
    return q0, qd0, u


def test_rollout_with_contact_equals_the_engine_bit_for_bit(client, arm):
    mid, model = arm
    q0, qd0, u = problem()
    tr = client.rollout(mid, q0, qd0, u, DT, contact=WIRE)
    ref = simad.rollout(model, q0, qd0, u, DT, contact=C)
    np.testing.assert_array_equal(tr.q, ref.q)
    np.testing.assert_array_equal(tr.qd, ref.qd)
    assert not np.array_equal(ref.q, simad.rollout(model, q0, qd0, u, DT).q)  # the floor acted
    # a simad.Contact is sent as is; an empty dict means the defaults, in SMOOTH mode
    np.testing.assert_array_equal(client.rollout(mid, q0, qd0, u, DT, contact=C).q, ref.q)
    np.testing.assert_array_equal(client.rollout(mid, q0, qd0, u, DT, contact={}).q,
                                  simad.rollout(model, q0, qd0, u, DT, contact=Contact(mode="smooth")).q)


def test_gradients_with_contact_equal_the_engine_bit_for_bit(client, arm):
    mid, model = arm
    q0, qd0, u = problem()
    rng = np.random.default_rng(4)
    qbar, vbar = rng.standard_normal((B, T + 1, 2)), rng.standard_normal((B, T + 1, 2))
    g = client.rollout_vjp(mid, q0, qd0, u, DT, qbar, vbar, contact=WIRE, params="*")
    e = simad.rollout_vjp(model, q0, qd0, u, DT, qbar, vbar, contact=C)
    for name in ("q0", "qd0", "controls"):
        np.testing.assert_array_equal(getattr(g, name), getattr(e, name))
    for name in ("geom_size", "geom_friction", "geom_restitution", "body_mass"):
        np.testing.assert_array_equal(g.params[name], e.params[name])
    assert np.abs(e.params["geom_friction"]).max() > 0
    cost = {"q_weight": [1.0, 1.0], "q_ref": [1.0, 0.0], "u_weight": [1e-3, 1e-3]}
    gv = client.value_and_grad(mid, q0, qd0, u, DT, cost, contact=WIRE, params=["geom_size"])
    ev = simad.value_and_grad(model, q0, qd0, u, DT, simad.QuadraticCost(q_weight=np.ones(2), q_ref=np.array([1.0, 0]),
                                                                       u_weight=1e-3 * np.ones(2)),
                              contact=C, params=("geom_size",))
    np.testing.assert_array_equal(gv.loss, ev.loss)
    np.testing.assert_array_equal(gv.controls, ev.controls)
    np.testing.assert_array_equal(gv.params["geom_size"], ev.params["geom_size"])


BAD = [
    ("impulse", dict(contact={"mode": "impulse"}), "INVALID_ARGUMENT", "rollout.contact.mode"),
    ("timeconst below 2 dt", dict(contact={"mode": "smooth", "timeconst": 1e-3}), "INVALID_ARGUMENT",
     "rollout.contact.timeconst"),
    ("negative softness", dict(contact={"softness": -1.0}), "INVALID_ARGUMENT", "rollout.contact.softness"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_contact_options_get_their_field(client, arm, case):
    _, kw, code, field = case
    q0, qd0, u = problem()
    with pytest.raises(WireError) as e:
        client.rollout(arm[0], q0, qd0, u, DT, **kw)
    assert (e.value.code, e.value.field) == (code, field), e.value


def test_models_without_supported_pairs_and_forward_mode_are_refused(srv, client, arm):
    info = client.load_model(mjcf=TWO_CAPSULES)
    with pytest.raises(WireError) as e:
        client.rollout(info.model_id, np.zeros(2), np.zeros(2), np.zeros((5, 0)), DT, contact=WIRE)
    assert (e.value.code, e.value.field) == ("INVALID_ARGUMENT", "rollout.contact")
    assert "cap_a" in e.value.message and "cap_b" in e.value.message
    q0, qd0, u = problem()
    req = gradients_pb2.RolloutJvpRequest(dcontrols=codec.to_tensor(np.ones_like(u)))
    encode.rollout_spec(arm[0], q0, qd0, u, DT, contact=WIRE, out=req.rollout)
    with grpc.insecure_channel(srv.address) as ch:
        with pytest.raises(grpc.RpcError) as e:
            gradients_pb2_grpc.GradientServiceStub(ch).RolloutJvp(req, timeout=60)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert dict(e.value.trailing_metadata())["simad-field"] == "rollout.contact"
    # still serving, exactly
    tr = client.rollout(arm[0], q0, qd0, u, DT, contact=WIRE)
    np.testing.assert_array_equal(tr.q, simad.rollout(arm[1], q0, qd0, u, DT, contact=C).q)
