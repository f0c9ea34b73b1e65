"""Contact through the service (SimulationService.ContactRollout, GradientService.ContactGradient)
over a real channel on 127.0.0.1: results equal simad.contact_rollout / contact_vjp /
contact_value_and_grad bit for bit (quality report included) in both modes, bad input gets its
status code and field, and the server keeps serving."""

from __future__ import annotations

import urllib.request

import grpc
import numpy as np
import pytest
from serving import ServerThread
from simad_client import Client, ContactOptions, WireError, codec
from simad_client.proto import simulation_pb2, simulation_pb2_grpc

import simad

# max_elements bounds the trajectory a gradient records: B (T+1) (nq+nv) = 26 B (T+1) here
LIMITS = dict(metrics_port=0, max_batch=8, max_steps=400, max_elements=20_000)
DT, T, B = 2e-3, 40, 3
MODES = ("impulse", "smooth")

# A floor, a bouncy ball and a box, as a ModelSpec (what the Models service stores) ...
SPEC = {
    "name": "ball_and_box",
    "bodies": [{"name": "ball", "parent": "world", "mass": 1.0, "inertia": [4e-3, 4e-3, 4e-3]},
               {"name": "box", "parent": "world", "mass": 2.0, "inertia": [1.3e-2, 1.3e-2, 1.3e-2]}],
    "joints": [{"name": "ball_free", "body": "ball", "type": "free"},
               {"name": "box_free", "body": "box", "type": "free"}],
    "geoms": [{"name": "floor", "body": "world", "type": "plane", "friction": 0.5},
              {"name": "ball_g", "body": "ball", "type": "sphere", "size": [0.1], "friction": 0.5, "restitution": 0.7},
              {"name": "box_g", "body": "box", "type": "box", "size": [0.1, 0.1, 0.1], "friction": 0.4}],
}


def scene() -> simad.Model:
    """... and the same scene built directly (the tests check the content hashes agree)."""
    b = simad.ModelBuilder("ball_and_box")
    b.add_body("ball", 0, mass=1.0, inertia=(4e-3, 4e-3, 4e-3))
    b.add_body("box", 0, mass=2.0, inertia=(1.3e-2, 1.3e-2, 1.3e-2))
    b.add_joint("ball", "ball_free", type="free")
    b.add_joint("box", "box_free", type="free")
    b.add_geom(0, "plane", friction=0.5, name="floor")
    b.add_geom("ball", "sphere", size=(0.1,), friction=0.5, restitution=0.7, name="ball_g")
    b.add_geom("box", "box", size=(0.1, 0.1, 0.1), friction=0.4, name="box_g")
    return b.finalize()


@pytest.fixture(scope="module")
def srv():
    with ServerThread(**LIMITS) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv):
    with Client(srv.address, timeout=600) as c:  # the first gradient call compiles its kernels
        yield c


@pytest.fixture(scope="module")
def ball_box(client):
    info = client.load_model(spec=SPEC)
    model = scene()
    assert info.content_hash == model.content_hash and info.nq == 14 and info.nv == 12 and info.nu == 0
    return info.model_id, model


def problem(seed=0):
    """B drops from just above the floor (both bodies touch down within T steps), small wrenches."""
    rng = np.random.default_rng(seed)
    q0 = np.tile([0.0, 0.0, 0.12, 1, 0, 0, 0, 0.5, 0.0, 0.13, 1, 0, 0, 0], (B, 1))
    q0[:, [0, 1, 7, 8]] += 0.05 * rng.standard_normal((B, 4))
    q0[:, 10:14] += 0.05 * rng.standard_normal((B, 4))  # a tilted box (any norm: the engine normalises)
    qd0 = 0.3 * rng.standard_normal((B, 12))
    controls = 0.5 * rng.standard_normal((B, T, 2, 6))
    return q0, qd0, controls


def assert_same(a, b):
    """Bit for bit: same dtype, shape and bytes (None stays None)."""
    if b is None:
        assert a is None
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_array_equal(a, b)


def assert_same_gradients(g, e):
    for name in ("q0", "qd0", "controls", "loss"):
        assert_same(getattr(g, name), getattr(e, name))
    assert sorted(g.params) == sorted(e.params)
    for k in e.params:
        assert_same(g.params[k], e.params[k])
    for name in ("mode_switches", "max_growth", "max_growth_step", "fd_directional", "ad_directional", "fd_rel_error"):
        assert_same(getattr(g.quality, name), getattr(e.quality, name))
    assert g.quality.mode_switches.dtype == np.int64 and g.quality.max_growth_step.dtype == np.int64


@pytest.mark.parametrize("mode", MODES)
def test_contact_rollout_equals_the_engine_bit_for_bit(client, ball_box, mode):
    mid, model = ball_box
    q0, qd0, u = problem()
    opts = simad.Contact(mode=mode)
    tr = client.contact_rollout(mid, q0, qd0, DT, controls=u, options={"mode": mode})
    e = simad.contact_rollout(model, q0, qd0, DT, controls=u, contact=opts)
    for a, b in ((tr.q, e.q), (tr.qd, e.qd), (tr.u, e.u)):
        assert_same(a, b)
    assert tr.u.shape == (B, T, 2, 6)
    assert e.q[:, :, 2].min() < 0.1005  # the ball did reach the floor
    # unbatched start, no wrenches (steps), options as a dataclass, defaults elsewhere
    one = client.contact_rollout(mid, q0[0], None, DT, steps=T, options=ContactOptions(mode=mode))
    assert_same(one.q, simad.contact_rollout(model, q0[0], None, DT, steps=T, contact=opts).q)


def test_every_way_of_giving_options_is_the_same_call(client, ball_box):
    mid, model = ball_box
    q0, qd0, u = problem(1)
    kw = dict(iterations=4, toi=False, baumgarte=0.1, slop=2e-4, bounce_threshold=0.1)
    e = simad.contact_rollout(model, q0, qd0, DT, controls=u, contact=simad.Contact(**kw))
    for opts in (kw, ContactOptions(**kw), simad.Contact(**kw)):
        assert_same(client.contact_rollout(mid, q0, qd0, DT, controls=u, options=opts).q, e.q)
    # per-call parameters: the stored model is unchanged
    mu = np.array([0.9, 0.2, 0.3])
    tr = client.contact_rollout(mid, q0, qd0, DT, controls=u, param_overrides={"geom_friction": mu})
    assert_same(tr.q, simad.contact_rollout(model.replace(geom_friction=mu), q0, qd0, DT, controls=u).q)
    assert_same(client.contact_rollout(mid, q0, qd0, DT, controls=u).q, simad.contact_rollout(model, q0, qd0, DT, controls=u).q)


@pytest.mark.parametrize("mode", MODES)
def test_contact_vjp_equals_the_engine_bit_for_bit(client, ball_box, mode):
    mid, model = ball_box
    q0, qd0, u = problem(2)
    rng = np.random.default_rng(3)
    qb, vb = rng.standard_normal((B, T + 1, 14)), rng.standard_normal((B, T + 1, 12))
    opts = simad.Contact(mode=mode)
    g = client.contact_gradient(mid, q0, qd0, DT, qb, vb, controls=u, options={"mode": mode}, params="*",
                                fd_check=True, seed=7)
    e = simad.contact_vjp(model, q0, qd0, DT, qb, vb, controls=u, contact=opts, params=None, fd_check=True, seed=7)
    assert_same_gradients(g, e)
    assert g.loss is None and g.gains is None and g.checkpoint_every == T
    assert set(g.params) == set(simad.contact.CONTACT_PARAMS)
    assert g.quality.mode_switches.max() >= 1  # contacts did switch (in env 1)
    assert np.all(g.quality.fd_rel_error < 1e-5), g.quality.fd_rel_error
    # no fd check, named parameters, only q_bar, a custom finite-difference step
    g = client.contact_gradient(mid, q0, qd0, DT, qb, controls=u, options={"mode": mode}, params=["geom_restitution"])
    e = simad.contact_vjp(model, q0, qd0, DT, qb, controls=u, contact=opts, params=["geom_restitution"])
    assert_same_gradients(g, e)
    assert g.quality.fd_rel_error is None and list(g.params) == ["geom_restitution"]
    g = client.contact_gradient(mid, q0, qd0, DT, qb, controls=u, options={"mode": mode}, fd_check=1e-5, seed=1)
    e = simad.contact_vjp(model, q0, qd0, DT, qb, controls=u, contact=opts, params=(), fd_check=1e-5, seed=1)
    assert_same_gradients(g, e)


def test_contact_value_and_grad_equals_the_engine_bit_for_bit(client, ball_box):
    mid, model = ball_box
    q0, qd0, u = problem(4)
    goal = np.array([0.3, 0.0, 0.1, 1, 0, 0, 0, 0.6, 0.1, 0.1, 1, 0, 0, 0])
    cost = {"q_weight": np.full(14, 0.1), "q_ref": goal, "terminal_q_weight": np.ones(14), "qd_weight": np.full(12, 0.01),
            "frames": ["ball"], "frame_weight": [2.0], "frame_ref": [[0.2, 0.0, 0.1]]}
    g = client.contact_gradient(mid, q0, qd0, DT, cost=cost, controls=u, params=["body_mass", "gravity"],
                                fd_check=True, seed=2)
    e = simad.contact_value_and_grad(model, q0, qd0, DT, simad.QuadraticCost(**cost), controls=u,
                                     params=["body_mass", "gravity"], fd_check=True, seed=2)
    assert_same_gradients(g, e)
    assert g.loss.shape == (B,) and np.all(g.loss > 0)


MJCF = """<mujoco model="pebble">
  <worldbody>
    <geom name="floor" type="plane" size="5 5 0.1" friction="0.8"/>
    <body name="pebble" pos="0 0 0.3">
      <freejoint/>
      <geom name="pebble_g" type="sphere" size="0.05" mass="0.2" friction="0.6"/>
    </body>
  </worldbody>
</mujoco>"""


def test_an_mjcf_scene_with_a_freejoint(client):
    info = client.load_model(mjcf=MJCF)
    model = simad.load_mjcf(MJCF)
    assert info.content_hash == model.content_hash
    qd0 = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # thrown sideways: lands and rolls
    tr = client.contact_rollout(info.model_id, info.qpos0, qd0, DT, steps=150)
    e = simad.contact_rollout(model, model.qpos0, qd0, DT, steps=150)
    assert_same(tr.q, e.q)
    assert_same(tr.qd, e.qd)
    assert e.q[0, :, 2].min() < 0.051
    wq = np.zeros((1, 151, 7))
    wq[0, -1, 0] = 1.0  # final x
    g = client.contact_gradient(info.model_id, info.qpos0, qd0, DT, wq, steps=150, params=["geom_friction"])
    assert_same_gradients(g, simad.contact_vjp(model, model.qpos0, qd0, DT, wq, steps=150, params=["geom_friction"]))
    assert g.quality.mode_switches[0] >= 1  # touched down


BAD_CASES = [
    # (name, call(client, model id, q0, qd0, controls), code, field)
    ("wrong q0 shape", lambda c, m, q, v, u: c.contact_rollout(m, q[:, :13], v, DT, controls=u), "INVALID_ARGUMENT",
     "rollout.q0"),
    ("wrong qd0 shape", lambda c, m, q, v, u: c.contact_rollout(m, q, v[:, :6], DT, controls=u), "INVALID_ARGUMENT",
     "rollout.qd0"),
    ("controls without the body axis", lambda c, m, q, v, u: c.contact_rollout(m, q, v, DT, controls=u[:, :, 0]),
     "INVALID_ARGUMENT", "rollout.controls"),
    ("controls batch mismatch", lambda c, m, q, v, u: c.contact_rollout(m, q, v, DT, controls=u[:2]),
     "INVALID_ARGUMENT", "rollout.controls"),
    ("NaN in q0", lambda c, m, q, v, u: c.contact_rollout(m, np.where(q == 1, np.nan, q), v, DT, controls=u),
     "INVALID_ARGUMENT", "rollout.q0"),
    ("inf in controls", lambda c, m, q, v, u: c.contact_rollout(m, q, v, DT, controls=np.full_like(u, np.inf)),
     "INVALID_ARGUMENT", "rollout.controls"),
    ("zero quaternion", lambda c, m, q, v, u: c.contact_rollout(m, np.where(q == 1, 0.0, q), v, DT, controls=u),
     "INVALID_ARGUMENT", "rollout.q0"),
    ("negative dt", lambda c, m, q, v, u: c.contact_rollout(m, q, v, -DT, controls=u), "INVALID_ARGUMENT", "rollout.dt"),
    ("no steps without controls", lambda c, m, q, v, u: c.contact_rollout(m, q, v, DT), "INVALID_ARGUMENT",
     "rollout.steps"),
    ("steps disagree with controls", lambda c, m, q, v, u: c.contact_rollout(m, q, v, DT, steps=T + 1, controls=u),
     "INVALID_ARGUMENT", "rollout.steps"),
    ("bad mode (client side)", lambda c, m, q, v, u: c.contact_rollout(m, q, v, DT, controls=u, options={"mode": "soft"}),
     "INVALID_ARGUMENT", "options.mode"),
    ("iterations not 4, 8, 16", lambda c, m, q, v, u: c.contact_rollout(m, q, v, DT, controls=u, options={"iterations": 5}),
     "INVALID_ARGUMENT", "rollout.options.iterations"),
    ("baumgarte over 1", lambda c, m, q, v, u: c.contact_rollout(m, q, v, DT, controls=u, options={"baumgarte": 2.0}),
     "INVALID_ARGUMENT", "rollout.options.baumgarte"),
    ("NaN slop", lambda c, m, q, v, u: c.contact_rollout(m, q, v, DT, controls=u, options={"slop": np.nan}),
     "INVALID_ARGUMENT", "rollout.options.slop"),
    ("unstable smooth spring", lambda c, m, q, v, u: c.contact_rollout(
        m, q, v, DT, controls=u, options={"mode": "smooth", "timeconst": DT}), "INVALID_ARGUMENT", "rollout.options.timeconst"),
    ("unknown model", lambda c, m, q, v, u: c.contact_rollout("m-nope", q, v, DT, controls=u), "NOT_FOUND",
     "rollout.model_id"),
    ("non-positive mass override", lambda c, m, q, v, u: c.contact_rollout(
        m, q, v, DT, controls=u, param_overrides={"body_mass": [0.0, 1.0, 0.0]}),
     "INVALID_ARGUMENT", "rollout.param_overrides[body_mass]"),
    ("singular inertia override", lambda c, m, q, v, u: c.contact_rollout(
        m, q, v, DT, controls=u, param_overrides={"body_inertia": np.zeros((3, 3, 3))}),
     "INVALID_ARGUMENT", "rollout.param_overrides[body_inertia]"),
    ("override shape", lambda c, m, q, v, u: c.contact_rollout(m, q, v, DT, controls=u,
                                                             param_overrides={"geom_friction": [0.5]}),
     "INVALID_ARGUMENT", "rollout.param_overrides[geom_friction]"),
    ("B over the limit", lambda c, m, q, v, u: c.contact_rollout(m, np.tile(q[:1], (9, 1)), None, DT, steps=2),
     "RESOURCE_EXHAUSTED", "rollout.q0"),
    ("T over the limit", lambda c, m, q, v, u: c.contact_rollout(m, q, v, DT, steps=401), "RESOURCE_EXHAUSTED",
     "rollout.steps"),
    ("gradient trajectory over the element limit", lambda c, m, q, v, u: c.contact_gradient(m, q, v, DT, steps=300),
     "RESOURCE_EXHAUSTED", "rollout.steps"),
    ("bad cotangent shape", lambda c, m, q, v, u: c.contact_gradient(m, q, v, DT, np.zeros((B, T, 14)), controls=u),
     "INVALID_ARGUMENT", "q_bar"),
    ("NaN cotangent", lambda c, m, q, v, u: c.contact_gradient(m, q, v, DT, None, np.full((B, T + 1, 12), np.nan),
                                                                controls=u), "INVALID_ARGUMENT", "qd_bar"),
    ("cost and cotangents", lambda c, m, q, v, u: c.contact_gradient(
        m, q, v, DT, np.zeros((B, T + 1, 14)), controls=u, cost={"q_weight": np.ones(14)}), "INVALID_ARGUMENT", "cost"),
    ("bad cost weight", lambda c, m, q, v, u: c.contact_gradient(m, q, v, DT, cost={"q_weight": np.ones(3)}, controls=u),
     "INVALID_ARGUMENT", "cost.q_weight"),
    ("unknown parameter", lambda c, m, q, v, u: c.contact_gradient(m, q, v, DT, controls=u, params=["body_colour"]),
     "INVALID_ARGUMENT", "params"),
    ("negative seed", lambda c, m, q, v, u: c.contact_gradient(m, q, v, DT, controls=u, fd_check=True, seed=-1),
     "INVALID_ARGUMENT", "seed"),
    ("negative finite-difference step", lambda c, m, q, v, u: c.contact_gradient(m, q, v, DT, controls=u, fd_check=-1e-6),
     "INVALID_ARGUMENT", "fd_step"),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_gets_its_code_and_field(client, ball_box, case):
    _, call, code, field = case
    q0, qd0, u = problem()
    with pytest.raises(WireError) as e:
        call(client, ball_box[0], q0, qd0, u)
    assert (e.value.code, e.value.field) == (code, field), e.value


@pytest.mark.parametrize("source", ["cartpole", "arm7"])
def test_an_articulated_model_is_not_a_contact_scene(client, source):
    info = client.load_model(builtin=source)
    for call in (lambda: client.contact_rollout(info.model_id, info.qpos0, None, DT, steps=3),
                 lambda: client.contact_gradient(info.model_id, info.qpos0, None, DT, steps=3)):
        with pytest.raises(WireError) as e:
            call()
        assert (e.value.code, e.value.field) == ("INVALID_ARGUMENT", "rollout.model_id"), e.value
        assert "not a contact scene" in e.value.message and "free joint" in e.value.message


def test_raw_requests_name_the_field_in_the_trailing_metadata(srv, ball_box):
    """What a plain gRPC user sees: the field in "simad-field" and at the start of the details."""
    mid, _ = ball_box
    q0, qd0, u = problem()
    with grpc.insecure_channel(srv.address) as ch:
        stub = simulation_pb2_grpc.SimulationServiceStub(ch)
        spec = simulation_pb2.ContactRolloutSpec(model_id=mid, q0=codec.to_tensor(q0), controls=codec.to_tensor(u), dt=DT)
        for mutate, field in ((lambda s: setattr(s.options, "mode", 7), "rollout.options.mode"),
                              (lambda s: setattr(s, "steps", -1), "rollout.steps"),
                              (lambda s: setattr(s, "dt", float("nan")), "rollout.dt"),
                              (lambda s: s.ClearField("q0"), "rollout.q0"),
                              (lambda s: setattr(s.controls, "data", s.controls.data[:-8]), "rollout.controls")):
            bad = simulation_pb2.ContactRolloutSpec()
            bad.CopyFrom(spec)
            mutate(bad)
            with pytest.raises(grpc.RpcError) as e:
                stub.ContactRollout(simulation_pb2.ContactRolloutRequest(rollout=bad), timeout=60)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
            assert dict(e.value.trailing_metadata())["simad-field"] == field
            assert e.value.details().startswith(field + ": ")


def test_zz_the_server_still_serves_exactly_and_counted_every_call(srv, client, ball_box):
    mid, model = ball_box
    q0, qd0, u = problem(5)
    assert client.health() == "SERVING"
    assert_same(client.contact_rollout(mid, q0, qd0, DT, controls=u).q, simad.contact_rollout(model, q0, qd0, DT, controls=u).q)
    assert srv.server.sim.restarts == 0  # no bad input crashed the worker
    port = srv.server.metrics_server.server_address[1]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in ('simad_calls_total{method="ContactRollout",code="OK"}', 'simad_calls_total{method="ContactGradient",code="OK"}',
                 'simad_calls_total{method="ContactRollout",code="INVALID_ARGUMENT"}',
                 'simad_calls_total{method="ContactGradient",code="RESOURCE_EXHAUSTED"}'):
        assert line in text, line
