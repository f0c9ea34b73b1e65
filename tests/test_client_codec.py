"""The Python client without a simad server: wire codec, request encoding, reply decoding,
stream reassembly, errors and retries; then the gRPC plumbing against an in-process fake
servicer on a loopback port (auth metadata, field trailers, retries, streaming, control sessions).
"""

from __future__ import annotations

import pickle
from concurrent import futures
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from simad_client import Client, FeedbackPlan, Linearization, WireError, _rpc, codec, encode, results
from simad_client.errors import FIELD_KEY
from simad_client.proto import (
    control_pb2,
    control_pb2_grpc,
    gradients_pb2,
    models_pb2,
    models_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
    simulation_pb2,
    simulation_pb2_grpc,
    tensor_pb2,
)

import simad

DTYPES = ["<f8", "<f4", "<i4", "<i8", "?"]
SHAPES = [(), (0,), (3,), (2, 3), (2, 0, 4), (1, 2, 3, 4), (2, 1, 1, 1, 1, 1, 1, 3)]


def sample(dtype, shape, rng):
    a = rng.normal(size=shape) * 100
    return (a > 0) if dtype == "?" else a.astype(dtype)


# -- codec ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_codec_round_trip(dtype, shape, rng):
    a = sample(dtype, shape, rng)
    t = codec.to_tensor(a)
    assert tuple(t.shape) == shape and len(t.data) == a.size * a.itemsize
    b = codec.from_tensor(tensor_pb2.Tensor.FromString(t.SerializeToString()), "x")
    assert b.dtype == np.dtype(dtype).newbyteorder("=") and b.shape == shape
    np.testing.assert_array_equal(a, b)


def test_codec_scalars_big_endian_and_views(rng):
    for value, dtype in ((2.5, np.float64), (np.float32(1.5), np.float32), (7, np.int64), (True, np.bool_)):
        back = codec.from_tensor(codec.to_tensor(value), "x")
        assert back.shape == () and back.dtype == dtype and back == value
    big = np.arange(6, dtype=">f8").reshape(2, 3)
    np.testing.assert_array_equal(codec.from_tensor(codec.to_tensor(big), "x"), big)
    strided = np.arange(24.0).reshape(4, 6)[::2, ::3]  # non-contiguous input
    np.testing.assert_array_equal(codec.from_tensor(codec.to_tensor(strided), "x"), strided)
    assert codec.to_tensor(np.arange(3, dtype=np.int16)).dtype == tensor_pb2.INT32
    assert codec.to_tensor(np.arange(3, dtype=np.uint8)).dtype == tensor_pb2.INT64  # unsigned widen
    assert codec.to_tensor(np.float16([1])).dtype == tensor_pb2.FLOAT64


def test_codec_rejects_bad_tensors():
    t = codec.to_tensor(np.zeros((2, 3)))
    t.data = t.data[:-1]
    with pytest.raises(WireError) as e:
        codec.from_tensor(t, "rollout.q0")
    assert (e.value.code, e.value.field) == ("INVALID_ARGUMENT", "rollout.q0") and "47" in e.value.message
    with pytest.raises(WireError) as e:
        codec.from_tensor(tensor_pb2.Tensor(shape=[1], data=b"\0" * 8), "q")
    assert (e.value.code, e.value.field) == ("INVALID_ARGUMENT", "q")
    with pytest.raises(WireError) as e:
        codec.from_tensor(tensor_pb2.Tensor(dtype=tensor_pb2.FLOAT64, shape=[2, -1]), "qd")
    assert (e.value.code, e.value.field) == ("INVALID_ARGUMENT", "qd")
    with pytest.raises(WireError) as e:
        codec.from_tensor(codec.to_tensor(np.zeros((10, 11))), "controls", max_elements=100)
    assert (e.value.code, e.value.field) == ("RESOURCE_EXHAUSTED", "controls")
    assert codec.from_tensor(codec.to_tensor(np.zeros((10, 10))), "controls", max_elements=100).size == 100
    assert not codec.is_set(tensor_pb2.Tensor()) and codec.is_set(codec.to_tensor(np.zeros(0)))


def test_wire_error_pickles():
    err = WireError("INVALID_ARGUMENT", "expected shape (4, 7), got (4, 6)", "rollout.q0")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, WireError) and str(back) == str(err)
    assert (back.code, back.message, back.field) == (err.code, err.message, err.field)
    assert str(pickle.loads(pickle.dumps(WireError("NOT_FOUND", "no model")))) == "NOT_FOUND: no model"


def test_wire_error_from_rpc_error():
    class Failed(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.INVALID_ARGUMENT

        def details(self):
            return "bad"

        def trailing_metadata(self):
            return (("other", "x"), (FIELD_KEY, "rollout.dt"))

    err = _rpc.wire_error(Failed())
    assert (err.code, err.message, err.field) == ("INVALID_ARGUMENT", "bad", "rollout.dt")


# -- request encoding -------------------------------------------------------------------------
def test_tensor_inputs_are_floats():
    assert encode.tensor([0, 1], "q").dtype == tensor_pb2.FLOAT64
    assert encode.tensor(np.float32([1]), "q").dtype == tensor_pb2.FLOAT32  # floats go as given
    assert encode.tensor(np.array([True]), "q").dtype == tensor_pb2.FLOAT64
    for bad in ([[1.0], [1.0, 2.0]], ["a"], {"a": 1}):
        with pytest.raises(WireError) as e:
            encode.tensor(bad, "q0")
        assert (e.value.code, e.value.field) == ("INVALID_ARGUMENT", "q0")


COST = {"q_weight": [1.0, 2.0], "q_ref": np.zeros((5, 2)), "u_weight": np.float32([0.1]), "frames": ["tool"],
        "frame_weight": [3.0], "frame_ref": None}


def check_cost(msg: gradients_pb2.QuadraticCost):
    np.testing.assert_array_equal(codec.from_tensor(msg.q_weight, "w"), [1.0, 2.0])
    assert tuple(msg.q_ref.shape) == (5, 2) and msg.u_weight.dtype == tensor_pb2.FLOAT32
    assert list(msg.frames) == ["tool"] and tuple(msg.frame_weight.shape) == (1,)
    for unset in ("frame_ref", "terminal_q_weight", "qd_weight", "qd_ref", "u_ref", "terminal_frame_weight"):
        assert not msg.HasField(unset), unset


def test_cost_from_dict_and_objects():
    check_cost(encode.cost(COST))
    check_cost(encode.cost(SimpleNamespace(**COST)))  # any object with the attributes
    check_cost(encode.cost(simad.QuadraticCost(**{k: v for k, v in COST.items() if v is not None})))
    check_cost(encode.cost(encode.cost(COST)))  # a message passes through
    empty = encode.cost({})
    assert empty.ByteSize() == 0
    with pytest.raises(WireError) as e:
        encode.cost({"q_weigth": [1.0]})
    assert (e.value.code, e.value.field) == ("INVALID_ARGUMENT", "cost.q_weigth")
    with pytest.raises(WireError) as e:
        encode.cost({"frames": [3]})
    assert e.value.field == "cost.frames"
    with pytest.raises(WireError) as e:
        encode.cost({"frame_ref": [[1.0], [1.0, 2.0]]}, field="start.cost")
    assert e.value.field == "start.cost.frame_ref"


def test_integrator_and_mode_validation():
    assert encode.integrator("rk4") == tensor_pb2.RK4
    assert encode.integrator("semi_implicit_euler") == tensor_pb2.SEMI_IMPLICIT_EULER
    for bad in ("euler", "RK4", None, 2):
        with pytest.raises(WireError) as e:
            encode.integrator(bad)
        assert (e.value.code, e.value.field) == ("INVALID_ARGUMENT", "integrator")
    assert encode.mode("plan") == control_pb2.FEEDBACK_PLAN
    with pytest.raises(WireError) as e:
        encode.mode("mpc")
    assert e.value.field == "mode"


def test_client_validates_before_calling():
    with Client("127.0.0.1:1", timeout=0.5, retries=0) as c:  # nothing listens there
        with pytest.raises(WireError) as e:
            c.rollout("m", np.zeros(2), np.zeros(2), np.zeros((3, 1)), 0.01, "leapfrog")
        assert (e.value.code, e.value.field) == ("INVALID_ARGUMENT", "integrator")
        with pytest.raises(WireError) as e:
            c.load_model(urdf="<robot/>", builtin="arm7")
        assert e.value.field == "source"
        with pytest.raises(WireError) as e:
            c.value_and_grad("m", np.zeros(2), np.zeros(2), np.zeros((3, 1)), 0.01, {"bogus": 1})
        assert e.value.field == "cost.bogus"
        with pytest.raises(WireError) as e:
            c.rollout_vjp("m", np.zeros(2), np.zeros(2), np.zeros((3, 1)), 0.01, checkpoint_every=2.5)
        assert e.value.field == "checkpoint_every"
        with pytest.raises(WireError) as e:  # a valid request reaches the (absent) server
            c.get_model("m")
        assert e.value.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def test_rollout_spec_and_options():
    spec = encode.rollout_spec("m-1", np.zeros((4, 3)), np.zeros(3), np.zeros((10, 2)), 0.01, "rk4",
                               gains=np.zeros((10, 2, 6)), q_ref=np.zeros((10, 3)), limit_damping=5,
                               param_overrides={"body_mass": np.ones(2)})
    assert spec.model_id == "m-1" and spec.integrator == tensor_pb2.RK4 and spec.dt == 0.01
    assert spec.HasField("feedback") and not spec.feedback.HasField("qd_ref")
    assert spec.HasField("limit_damping") and not spec.HasField("limit_stiffness")
    assert tuple(spec.param_overrides["body_mass"].shape) == (2,)
    assert encode.trajectory_bytes(spec) == 8 * (4 * 11 * 6 + 4 * 10 * 2)
    open_loop = encode.rollout_spec("m", np.zeros(3), np.zeros(3), np.zeros((7, 5, 2)), 1e-3)
    assert not open_loop.HasField("feedback") and encode.trajectory_bytes(open_loop) == 8 * (7 * 6 * 6 + 7 * 5 * 2)
    assert list(encode.gradient_options("*").params) == ["*"]
    assert list(encode.gradient_options(["body_mass", "joint_damping"]).params) == ["body_mass", "joint_damping"]
    opts = encode.gradient_options((), memory_budget=2.5e8, checkpoint_every=16, clip_norm=1.0)
    assert not opts.params and opts.memory_budget_bytes == 250_000_000 and opts.checkpoint_every == 16
    assert opts.HasField("clip_norm") and not encode.gradient_options().HasField("clip_norm")


def test_model_spec_from_dict():
    spec = {"name": "pendulum", "gravity": np.array([0.0, 0.0, -9.81]),
            "bodies": [{"name": "link", "pos": (0, 0, 1), "mass": np.float64(1.5), "inertia": np.ones(3)}],
            "joints": [{"name": "hinge", "body": "link", "type": "revolute", "axis": [0, 1, 0]}],
            "actuators": [{"joint": "hinge", "ctrl_range": [-1, 1]}]}
    msg = encode.model_spec(spec)
    assert msg.name == "pendulum" and list(msg.gravity) == [0.0, 0.0, -9.81]
    assert msg.bodies[0].mass == 1.5 and list(msg.bodies[0].pos) == [0, 0, 1]
    assert msg.joints[0].type == "revolute" and list(msg.actuators[0].ctrl_range) == [-1, 1]
    with pytest.raises(WireError) as e:
        encode.model_spec({"bodies": [{"mas": 1.0}]})
    assert (e.value.code, e.value.field) == ("INVALID_ARGUMENT", "spec")


# -- reply decoding ---------------------------------------------------------------------------
def make_trajectory(B=2, T=7, nq=3, nv=2, nu=1):
    q = np.arange(B * (T + 1) * nq, dtype=float).reshape(B, T + 1, nq)
    qd = -np.arange(B * (T + 1) * nv, dtype=float).reshape(B, T + 1, nv)
    u = np.arange(B * T * nu, dtype=float).reshape(B, T, nu) * 0.5
    return q, qd, u


def make_chunks(q, qd, u, sizes):
    chunks, t0 = [], 0
    for i, n in enumerate(sizes):
        lo = 0 if t0 == 0 else t0 + 1
        chunks.append(simulation_pb2.TrajectoryChunk(
            t0=t0, q=codec.to_tensor(q[:, lo : t0 + n + 1]), qd=codec.to_tensor(qd[:, lo : t0 + n + 1]),
            u=codec.to_tensor(u[:, t0 : t0 + n]), last=i == len(sizes) - 1))
        t0 += n
    return chunks


@pytest.mark.parametrize("sizes", [[7], [1] * 7, [3, 4], [2, 2, 2, 1]])
def test_assemble_chunks(sizes):
    q, qd, u = make_trajectory()
    tr = results.assemble_chunks(make_chunks(q, qd, u, sizes))
    for got, want in ((tr.q, q), (tr.qd, qd), (tr.u, u)):
        np.testing.assert_array_equal(got, want)
    tr.q[0, 0, 0] = 99.0  # writable
    nu0 = results.assemble_chunks(make_chunks(*make_trajectory(nu=0), [3, 4]))
    assert nu0.u.shape == (2, 7, 0) and nu0.q.shape == (2, 8, 3)


def test_assemble_chunks_rejects_broken_streams():
    q, qd, u = make_trajectory()
    chunks = make_chunks(q, qd, u, [2, 2, 3])
    broken = {
        "gap": [chunks[0], chunks[2]],
        "no last": chunks[:2],
        "empty": [],
        "after last": chunks + chunks[2:],
        "late start": chunks[1:],
    }
    for name, stream in broken.items():
        with pytest.raises(WireError) as e:
            results.assemble_chunks(stream)
        assert e.value.code == "INTERNAL", name
    bad = simulation_pb2.TrajectoryChunk()
    bad.CopyFrom(chunks[0])
    bad.q.CopyFrom(codec.to_tensor(q[:, :2]))  # the first chunk needs n + 1 states
    with pytest.raises(WireError):
        results.assemble_chunks([bad, *chunks[1:]])


def test_decoded_replies_are_writable_and_optional_is_none():
    g = gradients_pb2.Gradients(q0=codec.to_tensor(np.ones((2, 3))), qd0=codec.to_tensor(np.ones((2, 2))),
                                controls=codec.to_tensor(np.ones((2, 4, 1))), norm=3.0, checkpoint_every=4)
    g.params["body_mass"].CopyFrom(codec.to_tensor(np.ones(2)))
    out = results.gradients(g)
    assert out.gains is None and out.loss is None and out.norm == 3.0 and out.checkpoint_every == 4
    out.q0[0, 0] = 5.0
    out.params["body_mass"][0] = 2.0
    info = models_pb2.ModelInfo(model_id="m-1", nq=2, body_names=["world", "a"], qpos0=codec.to_tensor(np.zeros(2)))
    info.params["body_mass"].CopyFrom(codec.to_tensor(np.ones(2)))
    m = results.model_info(info)
    assert m.body_names == ("world", "a") and m.qpos0.flags.writeable and list(m.params) == ["body_mass"]
    d = results.message_dict(server_pb2.ServerInfo(version="0.1", limits=server_pb2.Limits(max_batch=64)))
    assert d["version"] == "0.1" and d["limits"]["max_batch"] == 64 and d["tls"] is False


def test_health_codec():
    assert _rpc.health_request("") == b""
    for status, name in _rpc.HEALTH_STATUS.items():
        reply = (b"\x08" + bytes([status])) if status else b""
        assert _rpc.health_status(reply) == name
    assert _rpc.health_status(b"\x12\x02ab\x08\x01") == "SERVING"  # unknown fields skipped
    request = _rpc.health_request("simad.v1.SimulationService")
    assert request[0] == 0x0A and request[2:].decode() == "simad.v1.SimulationService"


def test_retries_only_unavailable(monkeypatch):
    monkeypatch.setattr(_rpc.time, "sleep", lambda s: None)

    class Status(grpc.RpcError):
        def __init__(self, code):
            self._code = code

        def code(self):
            return self._code

        def details(self):
            return self._code.name.lower()

        def trailing_metadata(self):
            return ()

    def flaky(failures, code=grpc.StatusCode.UNAVAILABLE):
        calls = []

        def call(left):
            calls.append(left)
            if len(calls) <= failures:
                raise Status(code)
            return "ok"

        return call, calls

    call, calls = flaky(2)
    assert _rpc.invoke(call, 10.0, retries=3) == "ok" and len(calls) == 3 and all(0 < x <= 10 for x in calls)
    call, calls = flaky(5)
    with pytest.raises(WireError, match="UNAVAILABLE"):
        _rpc.invoke(call, None, retries=3)
    assert len(calls) == 4
    call, calls = flaky(1)
    with pytest.raises(WireError):
        _rpc.invoke(call, None, retries=0)  # a non-idempotent call
    assert len(calls) == 1
    call, calls = flaky(1, grpc.StatusCode.INTERNAL)
    with pytest.raises(WireError) as e:
        _rpc.invoke(call, None, retries=3)
    assert len(calls) == 1 and e.value.code == "INTERNAL" and e.value.__suppress_context__
    assert all(_rpc.backoff(k) <= _rpc.BACKOFF_MAX for k in range(20))


# -- gRPC plumbing against a fake servicer ----------------------------------------------------
TOKEN = "s3cret"


def authorized(context) -> bool:
    if dict(context.invocation_metadata()).get("authorization") != f"Bearer {TOKEN}":
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
    return True


class FakeServer(server_pb2_grpc.ServerServiceServicer):
    def GetServerInfo(self, request, context):
        authorized(context)
        return server_pb2.ServerInfo(version="0.1.0", precision="f64", limits=server_pb2.Limits(max_steps=10_000))


class FakeModels(models_pb2_grpc.ModelServiceServicer):
    def __init__(self):
        self.calls = {"LoadModel": 0, "GetModel": 0}

    def LoadModel(self, request, context):
        self.calls["LoadModel"] += 1
        context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")

    def GetModel(self, request, context):
        self.calls["GetModel"] += 1
        if self.calls["GetModel"] < 3:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return models_pb2.ModelInfo(model_id=request.model_id, nq=3, qpos0=codec.to_tensor(np.zeros(3)))

    def DeleteModel(self, request, context):
        context.set_trailing_metadata(((FIELD_KEY, "model_id"),))
        context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model_id!r}")


class FakeSimulation(simulation_pb2_grpc.SimulationServiceServicer):
    def __init__(self):
        self.used = []

    def Rollout(self, request, context):
        self.used.append("unary")
        q, qd, u = make_trajectory()
        return simulation_pb2.Trajectory(q=codec.to_tensor(q), qd=codec.to_tensor(qd), u=codec.to_tensor(u))

    def StreamRollout(self, request, context):
        self.used.append("stream")
        yield from make_chunks(*make_trajectory(), [3, 3, 1])


class FakeControl(control_pb2_grpc.ControlServiceServicer):
    def Session(self, request_iterator, context):
        T, nv, nu, mode = 4, 2, 1, None
        for req in request_iterator:
            if req.HasField("start"):
                mode = req.start.mode
                yield control_pb2.ControlReply(ready=control_pb2.SessionReady(nq=3, nv=nv, nu=nu, horizon=T))
                continue
            if mode is None:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "tick before start")
            q = codec.from_tensor(req.tick.q, "tick.q")
            if mode == control_pb2.FEEDBACK_PLAN:
                plan = control_pb2.FeedbackPlan(k=codec.to_tensor(np.zeros((T, nu))), cost=float(q.sum()),
                                                gains=codec.to_tensor(np.zeros((T, nu, 2 * nv))),
                                                q_ref=codec.to_tensor(np.zeros((T + 1, 3))),
                                                qd_ref=codec.to_tensor(np.zeros((T + 1, nv))),
                                                u0=codec.to_tensor(np.zeros(nu)))
                yield control_pb2.ControlReply(seq=req.tick.seq, plan=plan, server_ms=0.1)
            else:
                lin = control_pb2.Linearization(q=codec.to_tensor(np.tile(q, (T + 1, 1))),
                                                qd=codec.to_tensor(np.zeros((T + 1, nv))),
                                                u=codec.to_tensor(np.zeros((T, nu))),
                                                a=codec.to_tensor(np.zeros((T, 2 * nv, 2 * nv))),
                                                b=codec.to_tensor(np.zeros((T, 2 * nv, nu))))
                yield control_pb2.ControlReply(seq=req.tick.seq, linearization=lin, server_ms=0.2)


def health_check(request: bytes, context) -> bytes:
    return b"\x08\x01" if request == b"" else b"\x08\x03"


@pytest.fixture
def fake():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    models, sim = FakeModels(), FakeSimulation()
    server_pb2_grpc.add_ServerServiceServicer_to_server(FakeServer(), server)
    models_pb2_grpc.add_ModelServiceServicer_to_server(models, server)
    simulation_pb2_grpc.add_SimulationServiceServicer_to_server(sim, server)
    control_pb2_grpc.add_ControlServiceServicer_to_server(FakeControl(), server)
    health = grpc.unary_unary_rpc_method_handler(health_check)  # bytes in, bytes out
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": health}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield SimpleNamespace(address=f"127.0.0.1:{port}", models=models, sim=sim)
    server.stop(0)


def test_fake_auth_info_health_and_errors(fake, monkeypatch):
    monkeypatch.setattr(_rpc, "BACKOFF_FIRST", 0.001)
    with Client(fake.address, timeout=5.0) as anonymous:
        with pytest.raises(WireError) as e:
            anonymous.server_info()
        assert e.value.code == "UNAUTHENTICATED" and e.value.__cause__ is None
        assert anonymous.health() == "SERVING" and anonymous.health("nope") == "SERVICE_UNKNOWN"
    with Client(fake.address, token=TOKEN, timeout=5.0) as c:
        info = c.server_info()
        assert info["precision"] == "f64" and info["limits"]["max_steps"] == 10_000
        with pytest.raises(WireError) as e:
            c.delete_model("m-x")
        assert (e.value.code, e.value.field) == ("NOT_FOUND", "model_id") and "m-x" in e.value.message
        assert c.get_model("m-7").model_id == "m-7" and fake.models.calls["GetModel"] == 3  # retried twice
        with pytest.raises(WireError) as e:
            c.load_model(builtin="arm7")
        assert e.value.code == "UNAVAILABLE" and fake.models.calls["LoadModel"] == 1  # never retried


def test_fake_rollout_unary_and_stream(fake):
    q, qd, u = make_trajectory()
    with Client(fake.address, timeout=5.0) as c:
        args = ("m", np.zeros((2, 3)), np.zeros(2), np.zeros((7, 1)), 0.01)
        for stream in (False, True):
            tr = c.rollout(*args, stream=stream)
            np.testing.assert_array_equal(tr.q, q)
            np.testing.assert_array_equal(tr.u, u)
        assert fake.sim.used == ["unary", "stream"]
    with Client(fake.address, timeout=5.0, max_message_bytes=2 * 8 * (2 * 8 * 5 + 2 * 7)) as small:
        small.rollout(*args)  # exactly half the limit: unary
        small.rollout("m", np.zeros((2, 3)), np.zeros(2), np.zeros((8, 1)), 0.01)  # over it: streamed
    assert fake.sim.used[2:] == ["unary", "stream"]


def test_fake_control_session(fake):
    with Client(fake.address, timeout=5.0) as c:
        with c.control_session("m", 0.002, 4) as s:
            assert (s.nq, s.nv, s.nu, s.horizon) == (3, 2, 1, 4)
            for k in range(3):
                lin = s.step(np.full(3, float(k)), np.zeros(2))
                assert isinstance(lin, Linearization) and lin.A.shape == (4, 4, 4) and lin.B.shape == (4, 4, 1)
                assert lin.q[0, 0] == k and lin.server_ms == pytest.approx(0.2)
        assert s.closed
        with pytest.raises(WireError) as e:
            s.step(np.zeros(3), np.zeros(2))
        assert e.value.code == "FAILED_PRECONDITION"
        with c.control_session("m", 0.002, 4, mode="plan", cost={"q_weight": [1.0, 1.0, 1.0]}) as s:
            plan = s.step(np.ones(3), np.zeros(2))
            assert isinstance(plan, FeedbackPlan) and plan.cost == 3.0 and plan.gains.shape == (4, 1, 4)
            with pytest.raises(WireError) as e:
                s.step(np.ones(3), np.zeros(2), controls=[["x"]])  # caught client-side, session intact
            assert e.value.field == "tick.controls"
            assert s.step(np.ones(3), np.zeros(2)).u0.shape == (1,)
