"""Property-based fuzzing of the wire API: raw simad.v1 messages (and raw bytes) with random
field combinations against one in-process server.

Property: every call either succeeds or fails with a status the API documents for bad input
(never INTERNAL, UNKNOWN, UNAVAILABLE or a deadline: the server is up and every request here is
small); INVALID_ARGUMENT, NOT_FOUND and RESOURCE_EXHAUSTED name a field of the request in the
trailing metadata "simad-field" (and repeat it at the start of the message); and afterwards
the server answers a valid request exactly as the engine does, with its worker never restarted.

Most generated requests differ from a valid one in a few fields (see ``Faults``), so they get
past decoding into the handlers and the engine. The server bugs this fuzzing found (model text
read as a server path, INTERNAL for undecodable stream messages, non-ASCII field names,
negative seeds, huge zero-element shapes, overflowing results answered OK, late or misnamed
session-start errors) are fixed; the regression tests near the end pin each one.
"""

from __future__ import annotations

import collections
import math
import re
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving import ServerThread

import simad
from simad import models
from simad.kinematics import SERIAL_BELOW
from simad_client import codec
from simad_client.proto import (
    control_pb2,
    control_pb2_grpc,
    gradients_pb2,
    gradients_pb2_grpc,
    kinematics_pb2,
    kinematics_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    simulation_pb2,
    simulation_pb2_grpc,
    tensor_pb2,
)

# max_batch below simad's SERIAL_BELOW (16): every batch then runs the serial variant of each
# kernel, which the warm-up compiles (a parallel variant would compile inside a fuzzed call).
LIMITS = dict(max_batch=8, max_steps=64, max_elements=4096, max_queue=64)
TIMEOUT = 120.0  # s per fuzzed call: each is tiny (ms), so hitting it means a hang
assert LIMITS["max_batch"] < SERIAL_BELOW
FIELD_KEY = "simad-field"
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
C = grpc.StatusCode
REFUSED = {C.INTERNAL, C.UNKNOWN, C.UNAVAILABLE, C.DEADLINE_EXCEEDED, C.CANCELLED, C.DATA_LOSS}
NAMES_FIELD = {C.INVALID_ARGUMENT, C.NOT_FOUND, C.RESOURCE_EXHAUSTED}


# ---- the server ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api():
    with ServerThread(**LIMITS) as s, grpc.insecure_channel(s.address) as ch:
        ns = SimpleNamespace(
            server=s, channel=ch, models=models_pb2_grpc.ModelServiceStub(ch),
            kin=kinematics_pb2_grpc.KinematicsServiceStub(ch), sim=simulation_pb2_grpc.SimulationServiceStub(ch),
            grad=gradients_pb2_grpc.GradientServiceStub(ch), ctl=control_pb2_grpc.ControlServiceStub(ch))
        info = ns.models.LoadModel(models_pb2.LoadModelRequest(builtin="planar_chain_2"), timeout=300)
        gone = ns.models.LoadModel(models_pb2.LoadModelRequest(builtin="planar_chain_2"), timeout=300)
        ns.models.DeleteModel(models_pb2.DeleteModelRequest(model_id=gone.model_id), timeout=60)
        ns.info, ns.deleted_id, ns.model = info, gone.model_id, models.load("planar_chain_2")
        ns.params = {k: codec.from_tensor(v, k) for k, v in info.params.items()}
        _warm_up(ns)
        yield ns


def _t(a) -> tensor_pb2.Tensor:
    return codec.to_tensor(np.asarray(a, dtype=np.float64))


def _valid_spec(ns, B=2, T=3) -> simulation_pb2.RolloutSpec:
    m = ns.model
    return simulation_pb2.RolloutSpec(model_id=ns.info.model_id, q0=_t(np.full((B, m.nq), 0.1)), qd0=_t(np.zeros(m.nv)),
                                      controls=_t(np.full((B, T, m.nu), 0.2)), dt=0.01)


def _warm_up(ns) -> None:
    """One valid call per endpoint, so kernel compilation happens here and not inside a fuzzed
    call's deadline."""
    m, mid, t = ns.model, ns.info.model_id, 300
    spec = _valid_spec(ns)
    ns.kin.ForwardKinematics(kinematics_pb2.ForwardKinematicsRequest(model_id=mid, q=_t(np.zeros(2))), timeout=t)
    ns.kin.FrameJacobian(kinematics_pb2.FrameJacobianRequest(model_id=mid, q=_t(np.zeros(2)), frames=["link2"],
                                                             return_pose=True), timeout=t)
    ns.kin.InverseKinematics(kinematics_pb2.InverseKinematicsRequest(model_id=mid, frame="link2",
                                                                     target_pos=_t([[0.5, 0, -1.0]])), timeout=t)
    ns.sim.Rollout(simulation_pb2.RolloutRequest(rollout=spec), timeout=t)
    for integ in (1, 2):
        fb = simulation_pb2.RolloutSpec()
        fb.CopyFrom(spec)
        fb.integrator = integ
        fb.feedback.gains.CopyFrom(_t(np.zeros((3, m.nu, 2 * m.nv))))
        fb.feedback.q_ref.CopyFrom(_t(np.zeros((3, m.nq))))
        ns.sim.Rollout(simulation_pb2.RolloutRequest(rollout=fb), timeout=t)
        ns.grad.RolloutVjp(gradients_pb2.RolloutVjpRequest(rollout=fb, q_bar=_t(np.ones((2, 4, 2)))), timeout=t)
    cost = gradients_pb2.QuadraticCost(terminal_q_weight=_t(np.ones(2)), frames=["link2"], frame_weight=_t(np.ones(1)))
    ns.grad.ValueAndGrad(gradients_pb2.ValueAndGradRequest(rollout=spec, cost=cost), timeout=t)
    ns.grad.RolloutJvp(gradients_pb2.RolloutJvpRequest(rollout=spec, dq0=_t(np.ones((2, 2)))), timeout=t)
    ns.grad.Linearize(gradients_pb2.LinearizeRequest(model_id=mid, q=_t(np.zeros((2, 2))), qd=_t(np.zeros((2, 2))),
                                                     u=_t(np.zeros((2, 2))), dt=0.01), timeout=t)
    for mode in (control_pb2.LINEARIZATION, control_pb2.FEEDBACK_PLAN):
        start = control_pb2.SessionStart(model_id=mid, dt=0.01, horizon=3, mode=mode, cost=cost)
        tick = control_pb2.ControlTick(seq=1, q=_t(np.zeros(2)), qd=_t(np.zeros(2)))
        replies = list(ns.ctl.Session(iter([control_pb2.ControlRequest(start=start), control_pb2.ControlRequest(tick=tick)]),
                                      timeout=t))
        assert len(replies) == 2


# ---- the property -------------------------------------------------------------------------------
_NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


def _field_path_ok(request_cls, field: str) -> bool:
    """Whether ``field`` ("rollout.q0[1, 0]", "rollout.param_overrides[x]", "start.dt", "body")
    names a field (or a oneof) of the request message; indices and map keys are not checked.

    LoadModel: only the first component, "urdf", "mjcf", "spec" or "builtin" (what follows
    names a place in the model text or spec, e.g. "urdf.mass.value", not a message field).
    """
    desc, pos = request_cls.DESCRIPTOR, 0
    if request_cls is models_pb2.LoadModelRequest:
        field = _NAME.match(field).group(0) if _NAME.match(field) else field
    while True:
        m = _NAME.match(field, pos)
        if m is None:
            return False
        f, pos = desc.fields_by_name.get(m.group(0)), m.end()
        if f is None:
            return m.group(0) in desc.oneofs_by_name and pos == len(field)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            return field[pos:pos + 1] in ("", "[")  # param_overrides[<any name>]
        if pos < len(field) and field[pos] == "[":
            end = field.find("]", pos)
            if end < 0:
                return False
            pos = end + 1
        if pos == len(field):
            return True
        if field[pos] != "." or f.message_type is None or f.message_type.name == "Tensor":
            return False
        desc, pos = f.message_type, pos + 1


def _diverged(details: str) -> bool:
    """A simulation that produced NaN/inf: the field names the output ("q", "qd") with env and step."""
    return "non-finite" in details and ("env" in details or "diverged" in details)


def assert_status(err: grpc.RpcError, request_cls, note="") -> None:
    """A failure must be a documented status for bad input, naming a field of ``request_cls``."""
    code, details = err.code(), err.details() or ""
    assert code not in REFUSED, f"{code.name}: {details} {note}"
    field = dict(err.trailing_metadata() or ()).get(FIELD_KEY, "")
    if code in NAMES_FIELD:
        fieldless = code == C.RESOURCE_EXHAUSTED and ("server busy" in details or "message limit" in details)
        if not fieldless:
            assert field, f"{code.name} without {FIELD_KEY}: {details} {note}"
            assert details.startswith(field + ": "), (field, details)
            assert _field_path_ok(request_cls, field) or _diverged(details), \
                f"{code.name} names {field!r}, not a field of {request_cls.__name__}: {details} {note}"


OUTCOMES: collections.Counter = collections.Counter()  # (request type, status name): calls


def check(call, request_cls, note=""):
    """Runs ``call()``: its result, or the grpc.RpcError it failed with (after assert_status)."""
    try:
        out = call()
    except grpc.RpcError as err:
        OUTCOMES[(request_cls.__name__, err.code().name)] += 1
        assert_status(err, request_cls, note)
        return err
    OUTCOMES[(request_cls.__name__, "OK")] += 1
    return out


# ---- strategies ---------------------------------------------------------------------------------
# A request is built valid field by field, except for a few fields (drawn per request) that get
# a hostile value: so most requests differ from a working one in one or two places, and about
# a fifth of them are entirely valid (and must then succeed or fail only for numerical reasons).
ITEMSIZE = {tensor_pb2.FLOAT64: 8, tensor_pb2.FLOAT32: 4, tensor_pb2.INT32: 4, tensor_pb2.INT64: 8, tensor_pb2.BOOL: 1}
NP = {tensor_pb2.FLOAT64: "<f8", tensor_pb2.FLOAT32: "<f4", tensor_pb2.INT32: "<i4", tensor_pb2.INT64: "<i8",
      tensor_pb2.BOOL: "u1"}
BAD_DTYPES = [0, 6, 7, 99, -1, 2**31 - 1]  # 0: DTYPE_UNSPECIFIED (= absent for optional fields)
DIMS = st.one_of(st.integers(0, 4), st.sampled_from([-1, -(2**63), 10**12, 2**31, 2**62, 2**63 - 1, 65, 17]))
BAD_FLOATS = st.one_of(st.sampled_from([0.0, -0.0, -0.01, -1.0, math.nan, math.inf, -math.inf, 1e300, -1e300, 5e-324]),
                       st.floats())
BAD_ENUMS = st.sampled_from([3, 4, -1, 99, 2**31 - 1, -(2**31)])
BAD_INT64S = st.sampled_from([-1, -(2**63), 2**63 - 1, 2**31, 10**12])
TEXT = st.text(max_size=12)


class Faults:
    """Which fields of one request get a hostile value: none (2 requests in 9), one,
    two, three, or every field, chosen uniformly (a seeded draw: hypothesis' own choices lean
    towards the first fields of a list)."""

    def __init__(self, draw, fields):
        k = [0, 0, 1, 1, 1, 2, 2, 3, len(fields)][draw(st.integers(0, 8))]
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        self.bad = set(rng.permutation(list(fields))[:k].tolist())

    def __call__(self, name: str) -> bool:
        return name in self.bad


@st.composite
def values(draw, n: int, dtype: int, good: str | None) -> bytes:
    """n elements of ``dtype``. ``good``: "any" (moderate numbers), "pos" (>= 0), "small" (near
    0) or "zero"; None: hostile (huge, tiny, NaN or inf somewhere, random bytes)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = good or draw(st.sampled_from(["huge", "tiny", "nan", "inf", "bytes", "neg"]))
    if kind == "bytes":
        return rng.integers(0, 256, n * ITEMSIZE[dtype], dtype=np.uint8).tobytes()
    if dtype == tensor_pb2.BOOL:
        return (rng.integers(0, 2, n, dtype=np.uint8) if kind != "zero" else np.zeros(n, np.uint8)).tobytes()
    ints = dtype in (tensor_pb2.INT32, tensor_pb2.INT64)
    a = {"any": lambda: rng.uniform(-1.5, 1.5, n), "pos": lambda: rng.uniform(0, 1.5, n), "zero": lambda: np.zeros(n),
         "small": lambda: rng.uniform(-0.2, 0.2, n), "huge": lambda: rng.uniform(-1, 1, n) * 1e300,
         "tiny": lambda: np.full(n, 5e-324), "neg": lambda: -rng.uniform(0.1, 2, n),
         "nan": lambda: rng.uniform(-1, 1, n), "inf": lambda: rng.uniform(-1, 1, n)}[kind]()
    if ints:
        a = np.round(a * 2) if kind in ("any", "pos", "small") else a
    if kind in ("nan", "inf") and n and not ints:
        a[draw(st.integers(0, n - 1))] = math.nan if kind == "nan" else draw(st.sampled_from([math.inf, -math.inf]))
    if ints:
        a = np.nan_to_num(a, nan=0, posinf=1, neginf=-1).clip(-(2**31), 2**31 - 1).astype(np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(a).astype(NP[dtype]).tobytes()


def _tensor(dtype, shape, data=b"") -> tensor_pb2.Tensor:
    t = tensor_pb2.Tensor(dtype=dtype, data=data)
    t.shape.extend(shape)
    return t


@st.composite
def tensors(draw, ok, bad: bool, *, wrong=(), good="any", optional=False):
    """A Tensor, or None (field absent). Not ``bad``: one of the valid shapes ``ok`` with good
    values (absent sometimes if ``optional``). ``bad``: a shape from ``wrong``, non-finite or
    wild values, an unknown dtype, negative, huge or too many dimensions, a byte count that does
    not match, or absent when required."""
    dtype = draw(st.sampled_from([tensor_pb2.FLOAT64] * 5 + [tensor_pb2.FLOAT32, tensor_pb2.INT32, tensor_pb2.INT64,
                                                             tensor_pb2.BOOL]))
    if not bad:
        if optional and draw(st.integers(0, 3)) == 0:
            return None
        shape = draw(st.sampled_from(list(ok)))
        if good not in ("any", "small") and dtype == tensor_pb2.BOOL:
            dtype = tensor_pb2.FLOAT64
        return _tensor(dtype, shape, draw(values(math.prod(shape), dtype, good)))
    kind = draw(st.sampled_from(["wrong", "values", "values", "dims", "bytes", "dtype", "absent"]))
    if kind == "absent":
        return None if not optional else _tensor(0, [1], b"\0" * 8)  # dtype 0 = absent; for optional: junk
    shape = list(draw(st.sampled_from(list(wrong) or list(ok)) if kind == "wrong" else st.sampled_from(list(ok))))
    if kind == "dims":
        shape = draw(st.lists(DIMS, max_size=10))
    n = math.prod(shape) if all(s >= 0 for s in shape) else -1
    t = _tensor(dtype, shape)
    if 0 <= n <= 4096:
        t.data = draw(values(n, dtype, None if kind == "values" else "any"))
    else:  # never allocate here: a few bytes only
        t.data = draw(st.binary(max_size=64))
    if kind == "bytes":
        cut = draw(st.integers(-len(t.data), 17).filter(lambda k: k != 0))
        t.data = t.data[:cut] if cut < 0 else t.data + bytes(cut)
    elif kind == "dtype":
        t.dtype = draw(st.sampled_from(BAD_DTYPES))
    return t


def put(msg, name: str, t) -> None:
    if t is not None:
        getattr(msg, name).CopyFrom(t)


def model_id(draw, ns, bad: bool) -> str:
    if not bad:
        return ns.info.model_id
    return draw(st.one_of(st.just(ns.deleted_id), st.just(""), TEXT, st.just(ns.info.model_id + "\x00"),
                          st.just(ns.info.model_id.upper())))


def number(draw, bad: bool, good, hostile=BAD_FLOATS):
    return draw(hostile if bad else good)


@st.composite
def sizes(draw, bad: bool):
    """(B, T): inside the limits, or (bad) 0 or one over."""
    B, T = draw(st.sampled_from([1, 2, 3, 5])), draw(st.sampled_from([1, 2, 3, 8]))
    if bad:
        B, T = draw(st.sampled_from([(0, T), (LIMITS["max_batch"] + 1, T), (B, 0), (B, LIMITS["max_steps"] + 1),
                                     (LIMITS["max_batch"], LIMITS["max_steps"])]))
    return B, T


ROLLOUT_FIELDS = ("model_id", "q0", "qd0", "controls", "dt", "integrator", "feedback", "limits", "overrides", "sizes")


@st.composite
def rollout_specs(draw, ns, faults=None, feedback=True):
    """(RolloutSpec, B, T). ``faults``: shared with the rest of the request; ``feedback``: add a
    valid feedback sometimes."""
    m = ns.model
    nq, nv, nu = m.nq, m.nv, m.nu
    f = faults or Faults(draw, ROLLOUT_FIELDS)
    B, T = draw(sizes(f("sizes")))
    s = simulation_pb2.RolloutSpec(model_id=model_id(draw, ns, f("model_id")),
                                   dt=number(draw, f("dt"), st.sampled_from([0.01, 0.005, 1e-3])),
                                   integrator=number(draw, f("integrator"), st.sampled_from([0, 1, 2]), BAD_ENUMS))
    put(s, "q0", draw(tensors([(nq,), (B, nq)], f("q0"), wrong=[(B + 1, nq), (nq + 1,), (), (B, 1, nq)])))
    put(s, "qd0", draw(tensors([(nv,), (B, nv), (1, nv)], f("qd0"), wrong=[(B, nv + 1), (B + 1, nv)], good="small")))
    put(s, "controls", draw(tensors([(T, nu), (B, T, nu)], f("controls"), wrong=[(B, T, nu + 1), (T,), (B + 1, T, nu)])))
    if f("feedback") or (feedback and draw(st.integers(0, 3)) == 0):
        bad = f("feedback")
        which = draw(st.sampled_from(["gains", "q_ref", "qd_ref", "all"])) if bad else ""
        put(s.feedback, "gains", draw(tensors([(T, nu, 2 * nv), (B, T, nu, 2 * nv)], which in ("gains", "all"),
                                              wrong=[(T, nu, nv)], good="small")))
        put(s.feedback, "q_ref", draw(tensors([(T, nq), (B, T, nq)], which in ("q_ref", "all"), wrong=[(T + 1, nq)])))
        put(s.feedback, "qd_ref", draw(tensors([(T, nv), (B, T, nv)], which in ("qd_ref", "all"), wrong=[(T, nv, 1)],
                                               optional=True, good="small")))
    for k in ("limit_stiffness", "limit_damping"):
        if f("limits") or draw(st.booleans()):
            setattr(s, k, number(draw, f("limits"), st.sampled_from([0.0, 10.0, 100.0, 1e3])))
    if f("overrides") or draw(st.integers(0, 3)) == 0:
        names = list(ns.params)
        for _ in range(draw(st.integers(1, 2))):
            if f("overrides"):
                name = draw(st.one_of(st.sampled_from(names + ["", "nope", "body_mass[0]", "__class__", "gravity "]), TEXT))
                shape = ns.params[name].shape if name in ns.params else (1,)
                t = draw(tensors([shape], True, wrong=[(1,) + shape, (), (7,)]))
                if t is not None:
                    s.param_overrides[name].CopyFrom(t)
            else:  # a physically valid value: the current one scaled by a positive factor
                name = draw(st.sampled_from(names))
                s.param_overrides[name].CopyFrom(_t(ns.params[name] * draw(st.floats(0.5, 1.5))))
    return s, B, T


OPTION_FIELDS = ("params", "memory", "checkpoint", "clip")


@st.composite
def gradient_options(draw, ns, T, faults):
    f = faults
    o = gradients_pb2.GradientOptions(
        memory_budget_bytes=number(draw, f("memory"), st.sampled_from([0, 2**16, 2**20]),
                                   st.sampled_from([1, 100, -1, -(2**63), 2**63 - 1])),
        checkpoint_every=number(draw, f("checkpoint"), st.integers(0, T), BAD_INT64S))
    if f("params"):
        o.params.extend(draw(st.lists(st.one_of(st.sampled_from(list(ns.params) + ["*", "nope", ""]), TEXT),
                                      min_size=1, max_size=3)))
    else:
        o.params.extend(draw(st.one_of(st.just([]), st.just(["*"]), st.lists(st.sampled_from(list(ns.params)),
                                                                            max_size=3, unique=True))))
    if f("clip") or draw(st.booleans()):
        o.clip_norm = number(draw, f("clip"), st.sampled_from([1e-3, 1.0, 1e6]))
    return o


COST_SHAPES = {  # name: (valid shapes given (B, T, nq, nv, nu, k), value kind)
    "q_weight": (lambda B, T, q, v, u, k: [(q,)], "pos"),
    "q_ref": (lambda B, T, q, v, u, k: [(q,), (T + 1, q), (B, T + 1, q)], "any"),
    "terminal_q_weight": (lambda B, T, q, v, u, k: [(q,)], "pos"),
    "qd_weight": (lambda B, T, q, v, u, k: [(v,)], "pos"),
    "qd_ref": (lambda B, T, q, v, u, k: [(v,), (T + 1, v), (B, T + 1, v)], "any"),
    "terminal_qd_weight": (lambda B, T, q, v, u, k: [(v,)], "pos"),
    "u_weight": (lambda B, T, q, v, u, k: [(u,)], "pos"),
    "u_ref": (lambda B, T, q, v, u, k: [(u,), (T, u), (B, T, u)], "any"),
    "frame_weight": (lambda B, T, q, v, u, k: [(k,)], "pos"),
    "frame_ref": (lambda B, T, q, v, u, k: [(k, 3), (T + 1, k, 3), (B, T + 1, k, 3)], "any"),
    "terminal_frame_weight": (lambda B, T, q, v, u, k: [(k,)], "pos"),
}


COST_FIELDS = tuple(COST_SHAPES) + ("frames",)


@st.composite
def costs(draw, ns, B, T, faults):
    """A QuadraticCost for B envs (B = None: a control session's single env, no batched shapes)."""
    m = ns.model
    f = faults
    if f("frames"):
        frames = draw(st.lists(st.one_of(st.sampled_from(list(m.frame_names) + ["", "nope"]), TEXT), min_size=1, max_size=3))
    else:
        frames = draw(st.lists(st.sampled_from(list(m.frame_names)), max_size=2))
    c = gradients_pb2.QuadraticCost(frames=frames)
    for name, (shapes, good) in COST_SHAPES.items():
        ok = [s for s in shapes(-1 if B is None else B, T, m.nq, m.nv, m.nu, len(frames)) if -1 not in s]
        if f(name) or draw(st.integers(0, 2)) == 0:
            put(c, name, draw(tensors(ok, f(name), wrong=[(1,) + ok[0], (ok[0][0] + 1,) + ok[0][1:], (0,)], good=good)))
    if not any(c.HasField(k) for k in COST_SHAPES):
        c.terminal_q_weight.CopyFrom(_t(np.ones(m.nq)))
    return c


def assert_finite(msg, *names) -> None:
    """The float tensors ``names`` of a response (maps: every value) hold no NaN or inf: the API
    answers a numerical failure with INVALID_ARGUMENT, never with non-finite numbers."""
    for name in names:
        value = getattr(msg, name)
        items = value.items() if hasattr(value, "items") else [(name, value)]
        for key, t in items:
            if codec.is_set(t):
                a = codec.from_tensor(t, key)
                assert a.dtype.kind != "f" or np.all(np.isfinite(a)), f"{type(msg).__name__}.{name}[{key}]: {a}"


def batch_of(spec: simulation_pb2.RolloutSpec) -> int:
    """The number of envs a (decodable) spec defines: the rows of q0, qd0 or controls."""
    rows = [t.shape[0] for t, nd in ((spec.q0, 2), (spec.qd0, 2), (spec.controls, 3)) if len(t.shape) == nd]
    return max(rows, default=1)


def _unary(rpc, req):
    return lambda: rpc(req, timeout=TIMEOUT)


def _stream(rpc, req):
    return lambda: list(rpc(req, timeout=TIMEOUT))


# ---- the fuzz tests ----------------------------------------------------------------------------
@settings(max_examples=150, **SETTINGS)
@given(data=st.data())
def test_fuzz_rollouts(api, data):
    spec, _, T = data.draw(rollout_specs(api))
    m, B = api.model, batch_of(spec)
    if data.draw(st.booleans()):
        req = simulation_pb2.RolloutRequest(rollout=spec)
        out = check(_unary(api.sim.Rollout, req), simulation_pb2.RolloutRequest, req)
        if not isinstance(out, grpc.RpcError):
            q, u = codec.from_tensor(out.q, "q"), codec.from_tensor(out.u, "u")
            assert q.shape == (B, T + 1, m.nq) and u.shape == (B, T, m.nu)
            assert_finite(out, "q", "qd", "u")
    else:
        chunk = data.draw(BAD_INT64S if data.draw(st.integers(0, 3)) == 0 else st.sampled_from([0, 1, 100, 2**20]))
        req = simulation_pb2.StreamRolloutRequest(rollout=spec, chunk_bytes=chunk)
        out = check(_stream(api.sim.StreamRollout, req), simulation_pb2.StreamRolloutRequest, req)
        if not isinstance(out, grpc.RpcError):
            assert out and out[-1].last and not any(c.last for c in out[:-1])
            assert sum(codec.from_tensor(c.u, "u").shape[1] for c in out) == T
            for c in out:
                assert_finite(c, "q", "qd", "u")


GRADIENT_FIELDS = {"vjp": ROLLOUT_FIELDS + OPTION_FIELDS + ("q_bar", "qd_bar"),
                   "value": ROLLOUT_FIELDS + OPTION_FIELDS + COST_FIELDS,
                   "jvp": ROLLOUT_FIELDS + ("dq0", "dqd0", "dcontrols")}


@settings(max_examples=150, **SETTINGS)
@given(data=st.data())
def test_fuzz_gradients(api, data):
    which = ["vjp", "value", "jvp"][data.draw(st.integers(0, 2))]
    f = Faults(data.draw, GRADIENT_FIELDS[which])
    spec, _, T = data.draw(rollout_specs(api, f, feedback=which != "jvp"))  # forward mode: open loop only
    m, B = api.model, batch_of(spec)
    if which == "vjp":
        req = gradients_pb2.RolloutVjpRequest(rollout=spec, options=data.draw(gradient_options(api, T, f)))
        put(req, "q_bar", data.draw(tensors([(B, T + 1, m.nq)], f("q_bar"), wrong=[(T + 1, m.nq), (B, T, m.nq)], optional=True)))
        put(req, "qd_bar", data.draw(tensors([(B, T + 1, m.nv)], f("qd_bar"), wrong=[(B, T + 2, m.nv)], optional=True)))
        out = check(_unary(api.grad.RolloutVjp, req), gradients_pb2.RolloutVjpRequest, req)
        if not isinstance(out, grpc.RpcError):
            assert codec.from_tensor(out.controls, "controls").shape == (B, T, m.nu)
            assert_finite(out, "q0", "qd0", "controls", "gains", "params")
            assert math.isfinite(out.norm)
    elif which == "value":
        req = gradients_pb2.ValueAndGradRequest(rollout=spec, cost=data.draw(costs(api, B, T, f)),
                                                options=data.draw(gradient_options(api, T, f)))
        out = check(_unary(api.grad.ValueAndGrad, req), gradients_pb2.ValueAndGradRequest, req)
        if not isinstance(out, grpc.RpcError):
            loss = codec.from_tensor(out.loss, "loss")
            assert loss.shape == (B,) and np.all(loss >= 0), loss
            assert_finite(out, "q0", "qd0", "controls", "gains", "params")
            assert_finite(out, "loss")
            assert math.isfinite(out.norm)
    else:
        req = gradients_pb2.RolloutJvpRequest(rollout=spec)
        put(req, "dq0", data.draw(tensors([(B, m.nv)], f("dq0"), wrong=[(B, m.nv + 1), (B + 1, m.nv)], optional=True)))
        put(req, "dqd0", data.draw(tensors([(B, m.nv)], f("dqd0"), wrong=[(m.nv, 1)], optional=True)))
        put(req, "dcontrols", data.draw(tensors([(B, T, m.nu)], f("dcontrols"), wrong=[(B, T + 1, m.nu)], optional=True)))
        out = check(_unary(api.grad.RolloutJvp, req), gradients_pb2.RolloutJvpRequest, req)
        if not isinstance(out, grpc.RpcError):
            assert codec.from_tensor(out.dq, "dq").shape == (B, T + 1, m.nv)
            assert_finite(out, "dq", "dqd")
            assert_finite(out.trajectory, "q", "qd", "u")


@settings(max_examples=150, **SETTINGS)
@given(data=st.data())
def test_fuzz_kinematics_and_linearize(api, data):
    m = api.model
    which = ["fk", "jac", "ik", "lin"][data.draw(st.integers(0, 3))]
    f = Faults(data.draw, ("model_id", "q", "sizes", "frames", "options", "targets", "dt", "integrator", "qd", "u"))
    B, T = data.draw(sizes(f("sizes")))
    mid = model_id(data.draw, api, f("model_id"))
    q = data.draw(tensors([(m.nq,), (B, m.nq)], f("q"), wrong=[(B, m.nq + 1), (), (0, m.nq)]))
    if which == "fk":
        req = kinematics_pb2.ForwardKinematicsRequest(model_id=mid)
        put(req, "q", q)
        out = check(_unary(api.kin.ForwardKinematics, req), kinematics_pb2.ForwardKinematicsRequest, req)
        if not isinstance(out, grpc.RpcError):
            assert codec.from_tensor(out.pos, "pos").shape[-2:] == (m.nframe, 3)
            assert_finite(out, "pos", "rot")
    elif which == "jac":
        names = list(m.frame_names)
        frames = data.draw(st.lists(st.one_of(st.sampled_from(names + ["", "nope"]), TEXT), max_size=3) if f("frames")
                           else st.lists(st.sampled_from(names), min_size=1, max_size=3))
        req = kinematics_pb2.FrameJacobianRequest(model_id=mid, frames=frames, return_pose=data.draw(st.booleans()))
        put(req, "q", q)
        out = check(_unary(api.kin.FrameJacobian, req), kinematics_pb2.FrameJacobianRequest, req)
        if not isinstance(out, grpc.RpcError):
            assert codec.from_tensor(out.jacobian, "jacobian").shape[-2:] == (6, m.nv)
            assert_finite(out, "jacobian", "pos", "rot")
    elif which == "ik":
        opts = f("options")
        req = kinematics_pb2.InverseKinematicsRequest(
            model_id=mid, frame=data.draw(st.one_of(st.sampled_from(["", "nope", "world"]), TEXT) if f("frames")
                                          else st.sampled_from(["link2", "tip", "link1"])),
            tol_pos=number(data.draw, opts, st.sampled_from([0.0, 1e-6, 1e-3])),
            tol_rot=number(data.draw, opts, st.sampled_from([0.0, 1e-6, 1e-3])),
            damping=number(data.draw, opts, st.sampled_from([0.0, 1e-3, 0.1])),
            max_step=number(data.draw, opts, st.sampled_from([0.0, 0.1, 0.5])),
            # bounded work: at most 50 iterations x 3 restarts, unless over the server's limits (refused)
            max_iters=data.draw(st.sampled_from([-1, 100_001, 2**31 - 1, -(2**31)]) if opts else st.integers(1, 50)),
            restarts=data.draw(st.sampled_from([-1, 1001, 2**31 - 1]) if opts else st.integers(1, 3)),
            seed=data.draw(st.integers(-(2**63), 2**63 - 1) if opts else st.integers(0, 2**63 - 1)))
        bad = f("targets")
        put(req, "target_pos", data.draw(tensors([(B, 3)], bad, wrong=[(3,), (B, 4), (B + 1, 3)], good="small")))
        rot = np.broadcast_to(np.eye(3), (B, 3, 3))
        if bad or data.draw(st.booleans()):
            put(req, "target_rot", _t(rot) if not bad else data.draw(tensors([(B, 3, 3)], True, wrong=[(3, 3), (B, 3)])))
        put(req, "q_init", data.draw(tensors([(B, m.nq)], f("q"), wrong=[(m.nq,), (B + 1, m.nq)], optional=True)))
        out = check(_unary(api.kin.InverseKinematics, req), kinematics_pb2.InverseKinematicsRequest, req)
        if not isinstance(out, grpc.RpcError):
            assert codec.from_tensor(out.q, "q").shape == (B, m.nq)
            assert_finite(out, "q")
            assert_finite(out, "pos_residual", "rot_residual")
    else:
        lead = data.draw(st.sampled_from([(B,), (B, T) if B * T <= LIMITS["max_batch"] else (T,), ()]))
        req = gradients_pb2.LinearizeRequest(model_id=mid, dt=number(data.draw, f("dt"), st.sampled_from([0.01, 1e-3])),
                                             integrator=number(data.draw, f("integrator"), st.sampled_from([0, 1, 2]), BAD_ENUMS))
        put(req, "q", data.draw(tensors([lead + (m.nq,)], f("q"), wrong=[lead + (m.nq + 1,), (B + 1, m.nq), (0, m.nq)])))
        put(req, "qd", data.draw(tensors([lead + (m.nv,)], f("qd"), wrong=[(B + 2, m.nv), lead + (1,)], good="small")))
        put(req, "u", data.draw(tensors([lead + (m.nu,)], f("u"), wrong=[(B, T + 1, m.nu), lead + (m.nu + 1,)])))
        for k in ("limit_stiffness", "limit_damping"):
            if f("options") or data.draw(st.booleans()):
                setattr(req, k, number(data.draw, f("options"), st.sampled_from([0.0, 100.0])))
        out = check(_unary(api.grad.Linearize, req), gradients_pb2.LinearizeRequest, req)
        if not isinstance(out, grpc.RpcError):
            assert codec.from_tensor(out.a, "a").shape == lead + (2 * m.nv, 2 * m.nv)
            assert_finite(out, "a", "b")


SESSION_FIELDS = ("order", "model_id", "dt", "integrator", "horizon", "controls", "mode", "iterations",
                  "regularization", "limits", "q", "qd", "tick_controls") + COST_FIELDS


@st.composite
def control_messages(draw, ns):
    m = ns.model
    f = Faults(draw, SESSION_FIELDS)
    H = draw(st.sampled_from([0, -1, LIMITS["max_steps"] + 1, 2**31 - 1]) if f("horizon") else st.integers(1, 6))
    h = max(min(H, 8), 0)
    mode = draw(st.sampled_from([3, -1, 99]) if f("mode") else st.sampled_from([0, 1, 2]))
    start = control_pb2.SessionStart(
        model_id=model_id(draw, ns, f("model_id")), dt=number(draw, f("dt"), st.sampled_from([0.01, 0.02])),
        integrator=number(draw, f("integrator"), st.sampled_from([0, 1, 2]), BAD_ENUMS), horizon=H, mode=mode,
        iterations=draw(st.sampled_from([101, -1, 2**31 - 1]) if f("iterations") else st.integers(0, 2)),
        regularization=number(draw, f("regularization"), st.sampled_from([0.0, 1e-6, 1e-2])))
    put(start, "controls", draw(tensors([(h, m.nu)], f("controls"), wrong=[(h + 1, m.nu), (h,)], optional=True, good="small")))
    if mode == 2 or any(f(k) for k in COST_FIELDS) or draw(st.booleans()):
        start.cost.CopyFrom(draw(costs(ns, None, h, f)))
    for k in ("limit_stiffness", "limit_damping"):
        if f("limits") or draw(st.booleans()):
            setattr(start, k, number(draw, f("limits"), st.sampled_from([0.0, 100.0])))
    msgs = [control_pb2.ControlRequest(start=start)]
    for _ in range(draw(st.integers(0, 3))):
        t = control_pb2.ControlTick(seq=draw(st.integers(0, 2**64 - 1)))
        put(t, "q", draw(tensors([(m.nq,)], f("q"), wrong=[(m.nq + 1,), (1, m.nq)], good="small")))
        put(t, "qd", draw(tensors([(m.nv,)], f("qd"), wrong=[(2, m.nv)], good="small")))
        put(t, "controls", draw(tensors([(h, m.nu)], f("tick_controls"), wrong=[(h, m.nu + 1)], optional=True, good="small")))
        msgs.append(control_pb2.ControlRequest(tick=t))
    if f("order"):  # a tick first, a second start, or an empty message
        k = draw(st.integers(0, len(msgs)))
        msgs.insert(k, draw(st.sampled_from([control_pb2.ControlRequest(start=start), control_pb2.ControlRequest()])))
        if draw(st.booleans()):
            msgs.pop(0)
    return msgs


@settings(max_examples=120, **SETTINGS)
@given(data=st.data())
def test_fuzz_control_sessions(api, data):
    msgs = data.draw(control_messages(api))
    out = check(lambda: list(api.ctl.Session(iter(msgs), timeout=TIMEOUT)), control_pb2.ControlRequest, msgs)
    if not isinstance(out, grpc.RpcError):  # one reply per message, ticks echo their seq
        assert len(out) == len(msgs)
        for req, rep in zip(msgs, out, strict=True):
            if req.WhichOneof("body") == "start":
                assert rep.WhichOneof("body") == "ready"
            else:
                assert rep.WhichOneof("body") in ("linearization", "plan") and rep.seq == req.tick.seq
                if rep.HasField("plan"):
                    assert_finite(rep.plan, "k", "gains", "q_ref", "qd_ref", "u0")
                    assert math.isfinite(rep.plan.cost)
                else:
                    assert_finite(rep.linearization, "q", "qd", "u", "a", "b")


NUMBERISH = st.one_of(st.sampled_from(["-1", "nan", "NaN", "inf", "-inf", "1e400", "1e-400", "", "abc", "1 2", "0x10",
                                       "1e308"]), st.floats().map(repr))
URDF_TEMPLATE = """<robot name="{name}"><link name="base"/>
<link name="a"><inertial><origin xyz="{x} 0 {z}" rpy="0 {r} 0"/><mass value="{mass}"/>
<inertia ixx="{ixx}" ixy="0" ixz="0" iyy="0.01" iyz="0" izz="{izz}"/></inertial>
<collision><geometry><{shape} {size}/></geometry></collision></link>
<joint name="j" type="{jtype}"><parent link="base"/><child link="a"/><axis xyz="{ax} 0 1"/>
<limit lower="{lo}" upper="1" effort="{effort}" velocity="1"/></joint></robot>"""
URDF_GOOD = {"x": "0", "z": "0.2", "r": "0.1", "mass": "1.5", "ixx": "0.02", "izz": "0.01", "ax": "0", "lo": "-1",
             "effort": "2"}
MJCF_TEMPLATE = ("<mujoco><worldbody><body name='b' pos='0 0 {z}'><inertial pos='0 0 0' mass='{mass}' "
                 "diaginertia='{i} 0.1 0.1'/><joint name='j' type='{jtype}' axis='0 1 0'/>"
                 "<geom type='{gtype}' size='{size}'/></body></worldbody>"
                 "<actuator><motor joint='{joint}' gear='{gear}'/></actuator></mujoco>")
MJCF_GOOD = {"z": "0.5", "mass": "1", "i": "0.1", "gear": "2"}


def _vec(draw, good, bad: bool, lengths=(0, 2, 4)) -> list:
    """``good``, or (bad) hostile floats (NaN, inf, negative, huge, ...) of one of ``lengths``."""
    if not bad:
        return list(good)
    n = draw(st.sampled_from(lengths))
    return draw(st.lists(BAD_FLOATS, min_size=n, max_size=n))


@st.composite
def model_specs(draw):
    """A chain of 1-3 bodies with revolute/prismatic joints, actuators, a site and maybe a geom;
    some fields hostile (names, parents, vectors, masses, joint types, ...)."""
    f = Faults(draw, ("names", "parent", "pos", "quat", "mass", "com", "inertia", "type", "axis", "range", "damping",
                      "actuator", "site", "geom", "gravity"))
    n = draw(st.integers(1, 3))
    spec = models_pb2.ModelSpec(name=draw(TEXT), gravity=_vec(draw, [0, 0, -9.81], f("gravity"), (2, 3, 4)))
    for i in range(n):
        name = draw(st.sampled_from(["", "world", "b0", "b1 "])) if f("names") else f"b{i}"
        parent = draw(st.sampled_from(["nope", f"b{i + 1}", f"b{i}"])) if f("parent") else (f"b{i - 1}" if i else "world")
        spec.bodies.add(name=name, parent=parent, pos=_vec(draw, [0, 0, -0.5], f("pos"), (2, 3)),
                        quat=_vec(draw, [1, 0, 0, 0], f("quat"), (0, 3, 4)),
                        mass=number(draw, f("mass"), st.sampled_from([0.5, 1.0, 2.0])),
                        com=_vec(draw, [0, 0, -0.25], f("com"), (1, 3)),
                        inertia=_vec(draw, [0.02, 0.02, 0.01], f("inertia"), (2, 3, 6, 9)))
        jtype = draw(st.sampled_from(["ball", "", "REVOLUTE", "free", "fixed"]) if f("type")
                     else st.sampled_from(["revolute", "prismatic"]))
        spec.joints.add(name=f"j{i}", body=name, type=jtype, axis=_vec(draw, [0, 1, 0], f("axis"), (0, 2, 3)),
                        range=_vec(draw, draw(st.sampled_from([[], [-1, 1]])), f("range"), (1, 2, 3)),
                        damping=number(draw, f("damping"), st.sampled_from([0.0, 0.1])))
        spec.actuators.add(joint=draw(st.sampled_from(["nope", "", f"j{i}"])) if f("actuator") else f"j{i}",
                           gear=number(draw, f("actuator"), st.sampled_from([0.0, 1.0, 2.0])),
                           ctrl_range=_vec(draw, [-1, 1], f("actuator"), (1, 2)))
    spec.sites.add(name=draw(st.sampled_from(["b0", ""])) if f("site") else "tip", body=f"b{n - 1}", pos=[0, 0, -0.5])
    if f("geom") or draw(st.booleans()):
        gtype = draw(st.sampled_from(["x", "cone", "plane"]) if f("geom") else st.sampled_from(["sphere", "box", "capsule"]))
        spec.geoms.add(body="b0", type=gtype, size=_vec(draw, [0.1, 0.1, 0.1], f("geom"), (0, 1, 2, 3, 4)),
                       friction=number(draw, f("geom"), st.sampled_from([0.5, 1.0])),
                       restitution=number(draw, f("geom"), st.sampled_from([0.0, 0.5])))
    return spec


# strings that are no model text: the server must not read them as paths of its own files
# (nothing here would block if it did: no /dev/zero)
NOT_XML = st.one_of(st.sampled_from(["", " ", "arm7.urdf", "simad/assets/arm7.urdf", "/etc/hostname", ".", "~/x.xml",
                                     "../../etc/passwd", " /dev/null"]),
                    TEXT.filter(lambda t: not t.strip().startswith("<")))


@settings(max_examples=100, **SETTINGS)
@given(data=st.data())
def test_fuzz_load_model(api, data):
    req = models_pb2.LoadModelRequest(name=data.draw(st.one_of(st.just(""), TEXT)))
    kind = data.draw(st.sampled_from(["spec", "spec", "spec", "urdf", "urdf", "mjcf", "builtin", "path", "none"]))
    req.floating_base = data.draw(st.booleans()) if kind == "urdf" else data.draw(st.integers(0, 5)) == 0
    if kind == "spec":
        req.spec.CopyFrom(data.draw(model_specs()))
    elif kind == "urdf":
        f = Faults(data.draw, tuple(URDF_GOOD) + ("name", "shape", "jtype", "truncate"))
        text = URDF_TEMPLATE.format(
            name=data.draw(st.sampled_from(["", "<", "&"])) if f("name") else "r",
            shape=data.draw(st.sampled_from(["mesh", "cone"]) if f("shape") else st.sampled_from(["box", "sphere"])),
            size=data.draw(st.sampled_from(['size="0.1 0.1 0.1"', 'radius="0.1"', 'radius="0.1" length="0.2"', 'size="a"', ""])),
            jtype=data.draw(st.sampled_from(["floating", "planar", "x"]) if f("jtype")
                            else st.sampled_from(["revolute", "prismatic", "continuous", "fixed"])),
            **{k: data.draw(NUMBERISH) if f(k) else v for k, v in URDF_GOOD.items()})
        req.urdf = text[: data.draw(st.integers(0, len(text)))] if f("truncate") else text
    elif kind == "mjcf":
        f = Faults(data.draw, tuple(MJCF_GOOD) + ("jtype", "gtype", "joint"))
        req.mjcf = MJCF_TEMPLATE.format(
            jtype=data.draw(st.sampled_from(["ball", "x"]) if f("jtype") else st.sampled_from(["hinge", "slide"])),
            gtype=data.draw(st.sampled_from(["x", "mesh"]) if f("gtype") else st.sampled_from(["sphere", "capsule"])),
            size=data.draw(st.sampled_from(["0.1", "0.1 0.2", "a", ""])), joint="nope" if f("joint") else "j",
            **{k: data.draw(NUMBERISH) if f(k) else v for k, v in MJCF_GOOD.items()})
    elif kind == "path":
        setattr(req, data.draw(st.sampled_from(["urdf", "mjcf"])), data.draw(NOT_XML))
    elif kind == "builtin":
        names = ["planar_chain_0", "planar_chain_-1", "planar_chain_1", "planar_chain_5", "planar_chain_99999999999",
                 "planar_chain_", "cartpole", "ARM7"]
        req.builtin = data.draw(st.one_of(st.sampled_from(names), TEXT))
    out = check(_unary(api.models.LoadModel, req), models_pb2.LoadModelRequest, req)
    if kind == "path" or (kind == "urdf" and not req.urdf.strip().startswith("<")):
        assert isinstance(out, grpc.RpcError) and out.code() == C.INVALID_ARGUMENT, f"loaded {req}"
    if not isinstance(out, grpc.RpcError):
        assert out.model_id.startswith("m-") and len(out.content_hash) == 64
        api.models.DeleteModel(models_pb2.DeleteModelRequest(model_id=out.model_id), timeout=TIMEOUT)


# ---- raw bytes ----------------------------------------------------------------------------------
RAW_METHODS = {
    "/simad.v1.KinematicsService/ForwardKinematics": kinematics_pb2.ForwardKinematicsRequest,
    "/simad.v1.SimulationService/Rollout": simulation_pb2.RolloutRequest,
    "/simad.v1.GradientService/ValueAndGrad": gradients_pb2.ValueAndGradRequest,
    "/simad.v1.GradientService/Linearize": gradients_pb2.LinearizeRequest,
    "/simad.v1.ModelService/GetModel": models_pb2.GetModelRequest,
    "/simad.v1.ModelService/LoadModel": models_pb2.LoadModelRequest,
}
# What grpcio's asyncio server itself answers when a unary request does not parse: the handler
# never runs, and grpc.aio reports the deserializer's exception as UNKNOWN (the synchronous
# grpc server would say INTERNAL "Exception deserializing request!"). Accepted only in exactly
# that case: the bytes must really fail to parse as the request message.
DECODE_FAILURE = "Unexpected <class 'google.protobuf.message.DecodeError'>"


def _parses(cls, body: bytes) -> bool:
    from google.protobuf.message import DecodeError

    try:
        cls.FromString(body)
        return True
    except DecodeError:
        return False


@settings(max_examples=150, **SETTINGS)
@given(method=st.sampled_from(sorted(RAW_METHODS)), body=st.one_of(
    st.binary(max_size=200),
    # valid field keys with random payloads: decode more often, so the handler is reached
    st.lists(st.tuples(st.sampled_from([0x0A, 0x12, 0x1A, 0x22, 0x08, 0x10, 0x29, 0x2A]), st.binary(max_size=40)),
             max_size=4).map(lambda parts: b"".join(bytes([k, len(v)]) + v for k, v in parts))))
def test_fuzz_raw_request_bytes(api, method, body):
    cls = RAW_METHODS[method]
    rpc = api.channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        rpc(body, timeout=TIMEOUT)
    except grpc.RpcError as err:
        if err.code() == C.UNKNOWN and (err.details() or "").startswith(DECODE_FAILURE):
            assert not _parses(cls, body), f"UNKNOWN for bytes that parse as {cls.__name__}: {body!r}"
            return
        assert _parses(cls, body), f"{err.code().name}: {err.details()} for bytes that do not parse: {body!r}"
        assert_status(err, cls, body)


def test_undecodable_control_message_is_not_an_internal_error(api):
    rpc = api.channel.stream_stream("/simad.v1.ControlService/Session", request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
    for body in (b"\xff\xff\xff", b"\x0a\x02ab"):
        assert not _parses(control_pb2.ControlRequest, body)
        with pytest.raises(grpc.RpcError) as e:
            list(rpc(iter([body]), timeout=TIMEOUT))
        assert e.value.code() == C.INVALID_ARGUMENT, e.value.details()
        assert dict(e.value.trailing_metadata())[FIELD_KEY] == "body"


def test_a_non_ascii_parameter_name_is_not_an_internal_error(api):
    spec = _valid_spec(api)
    spec.param_overrides["mass\u00e9"].CopyFrom(_t([1.0]))
    with pytest.raises(grpc.RpcError) as e:
        api.sim.Rollout(simulation_pb2.RolloutRequest(rollout=spec), timeout=TIMEOUT)
    assert e.value.code() == C.INVALID_ARGUMENT, e.value.details()
    field = dict(e.value.trailing_metadata())[FIELD_KEY]  # metadata is printable ASCII: the name is escaped
    assert field.startswith("rollout.param_overrides[mass") and field.isascii() and field.isprintable()
    assert e.value.details().startswith(field + ": ")


def test_model_text_is_never_read_as_a_path_on_the_server(api):
    path = str(models.asset_path("arm7.urdf").resolve())  # a valid URDF file the server can read
    try:
        out = api.models.LoadModel(models_pb2.LoadModelRequest(urdf=path), timeout=TIMEOUT)
    except grpc.RpcError as err:
        assert err.code() == C.INVALID_ARGUMENT, err.details()
        assert dict(err.trailing_metadata() or ()).get(FIELD_KEY, "").startswith("urdf")
        return
    api.models.DeleteModel(models_pb2.DeleteModelRequest(model_id=out.model_id), timeout=TIMEOUT)
    pytest.fail(f"the server read the file {path} and loaded it as model {out.name!r}")


def test_a_negative_ik_seed_is_not_an_internal_error(api):
    req = kinematics_pb2.InverseKinematicsRequest(model_id=api.info.model_id, frame="link2", target_pos=_t([[0.3, 0, -1]]),
                                                  max_iters=5, restarts=1, seed=-1)
    with pytest.raises(grpc.RpcError) as e:
        api.kin.InverseKinematics(req, timeout=TIMEOUT)
    assert e.value.code() == C.INVALID_ARGUMENT and dict(e.value.trailing_metadata())[FIELD_KEY] == "seed"



@pytest.mark.parametrize("shape", [[2**63 - 1, 0], [0, 2**62], [2**60, 8, 0], [2**40 + 1, 0],
                                   [2**40, 2**23, 0],
                                   [0, 2**40, 2**40]])
def test_a_zero_size_tensor_with_huge_dimensions_is_not_an_internal_error(api, shape):
    q = tensor_pb2.Tensor(dtype=tensor_pb2.FLOAT64, shape=shape, data=b"")
    with pytest.raises(grpc.RpcError) as e:
        api.kin.ForwardKinematics(kinematics_pb2.ForwardKinematicsRequest(model_id=api.info.model_id, q=q), timeout=TIMEOUT)
    assert_status(e.value, kinematics_pb2.ForwardKinematicsRequest)
    assert dict(e.value.trailing_metadata())[FIELD_KEY] == "q"


@pytest.mark.parametrize("bad, field", [
    (dict(regularization=-0.01), "start.regularization"),
    (dict(limit_stiffness=-1.0), "start.limit_stiffness"),
    (dict(limit_damping=math.nan), "start.limit_damping"),
    (dict(cost=gradients_pb2.QuadraticCost(q_weight=_t(-np.ones(2)))), "start.cost.q_weight"),
    (dict(cost=gradients_pb2.QuadraticCost(q_weight=_t(np.ones(3)))), "start.cost.q_weight"),
    pytest.param(dict(cost=gradients_pb2.QuadraticCost(q_weight=tensor_pb2.Tensor(dtype=1, shape=[2], data=bytes(15)))),
                 "start.cost.q_weight"),
], ids=["regularization", "limit_stiffness", "limit_damping", "cost_sign", "cost_shape", "cost_bytes"])
def test_a_bad_session_start_field_is_named_under_start(api, bad, field):
    kw = dict(model_id=api.info.model_id, dt=0.01, horizon=3, mode=control_pb2.FEEDBACK_PLAN,
              cost=gradients_pb2.QuadraticCost(q_weight=_t(np.ones(2))))
    start = control_pb2.SessionStart(**dict(kw, **bad))
    tick = control_pb2.ControlTick(seq=1, q=_t(np.zeros(2)), qd=_t(np.zeros(2)))
    replies = []
    with pytest.raises(grpc.RpcError) as e:
        for r in api.ctl.Session(iter([control_pb2.ControlRequest(start=start), control_pb2.ControlRequest(tick=tick)]),
                                 timeout=TIMEOUT):
            replies.append(r)
    assert e.value.code() == C.INVALID_ARGUMENT
    assert dict(e.value.trailing_metadata())[FIELD_KEY] == field
    assert replies == []  # refused at the start, not at the first tick


def _huge_cases(api):
    """name -> (request, call, what must be finite in the answer): finite inputs of ~1e300."""
    mid, q, z = api.info.model_id, _t([[0.4, -0.7]]), _t([[0.0, 0.0]])
    vjp = gradients_pb2.RolloutVjpRequest(rollout=_valid_spec(api, B=1), q_bar=_t(np.full((1, 4, 2), 1e300)))
    vjp.options.clip_norm = 1.0
    cost = gradients_pb2.QuadraticCost(u_weight=_t(np.ones(2)), u_ref=_t([1e300, 0.0]))
    start = control_pb2.SessionStart(model_id=mid, dt=0.01, horizon=3, mode=control_pb2.FEEDBACK_PLAN, cost=cost)
    tick = control_pb2.ControlTick(seq=1, q=_t(np.zeros(2)), qd=_t(np.zeros(2)))
    return {
        "linearize_qd": (lambda: api.grad.Linearize(gradients_pb2.LinearizeRequest(
            model_id=mid, q=q, qd=_t([[1e300, 0.0]]), u=z, dt=0.01), timeout=TIMEOUT), lambda r: [r.a, r.b]),
        "ik_target": (lambda: api.kin.InverseKinematics(kinematics_pb2.InverseKinematicsRequest(
            model_id=mid, frame="link2", target_pos=_t([[1e300, 0.0, 0.0]]), max_iters=5, restarts=1), timeout=TIMEOUT),
                      lambda r: [r.pos_residual, r.rot_residual]),
        "value_and_grad_loss": (lambda: api.grad.ValueAndGrad(gradients_pb2.ValueAndGradRequest(
            rollout=_valid_spec(api), cost=cost), timeout=TIMEOUT), lambda r: [r.loss, _t(r.norm)]),
        "vjp_clip_norm": (lambda: api.grad.RolloutVjp(vjp, timeout=TIMEOUT),
                          # clipped to norm 1, not to zeros
                          lambda r: [_t(r.norm), _t(np.linalg.norm(codec.from_tensor(r.controls, "c")) or math.nan)]),
        "session_plan_cost": (lambda: list(api.ctl.Session(iter([control_pb2.ControlRequest(start=start),
                                                                 control_pb2.ControlRequest(tick=tick)]), timeout=TIMEOUT))[1],
                              lambda r: [_t(r.plan.cost)]),
    }


@pytest.mark.parametrize("case", ["linearize_qd", "ik_target", "value_and_grad_loss", "vjp_clip_norm", "session_plan_cost"])
def test_huge_finite_inputs_give_finite_results(api, case):
    call, results = _huge_cases(api)[case]
    try:
        out = call()
    except grpc.RpcError as err:
        assert err.code() == C.INVALID_ARGUMENT and dict(err.trailing_metadata()).get(FIELD_KEY), err.details()
        return
    for t in results(out):
        a = codec.from_tensor(t, "result")
        assert np.all(np.isfinite(a)), a


# ---- afterwards ---------------------------------------------------------------------------------
def test_zz_the_server_still_answers_exactly_after_the_fuzzing(api):
    """Runs last (file order): a valid rollout and FK equal the engine; the worker never died."""
    m, mid = api.model, api.info.model_id
    rng = np.random.default_rng(11)
    q0, u = rng.uniform(-1, 1, (3, m.nq)), rng.uniform(-1, 1, (3, 7, m.nu))
    spec = simulation_pb2.RolloutSpec(model_id=mid, q0=_t(q0), qd0=_t(np.zeros(m.nv)), controls=_t(u), dt=0.01,
                                      integrator=tensor_pb2.RK4)
    out = api.sim.Rollout(simulation_pb2.RolloutRequest(rollout=spec), timeout=TIMEOUT)
    e = simad.rollout(m, q0, np.zeros(m.nv), u, 0.01, "rk4")
    np.testing.assert_array_equal(codec.from_tensor(out.q, "q"), e.q)
    np.testing.assert_array_equal(codec.from_tensor(out.u, "u"), e.u)
    fk = api.kin.ForwardKinematics(kinematics_pb2.ForwardKinematicsRequest(model_id=mid, q=_t(q0)), timeout=TIMEOUT)
    np.testing.assert_array_equal(codec.from_tensor(fk.pos, "pos"), simad.forward_kinematics(m, q0)[0])
    listed = api.models.ListModels(models_pb2.ListModelsRequest(), timeout=TIMEOUT).models
    assert [x.model_id for x in listed] == [mid]  # fuzzed loads were deleted again
    assert api.server.server.sim.restarts == 0
    assert api.server.server.sim.depth == 0
    # the generators reach the engine: a good share of the fuzzed calls succeeded, and every
    # request type fuzzed at length succeeded sometimes
    calls = collections.Counter()
    for (kind, _), n in OUTCOMES.items():
        calls[kind] += n
    ok = sum(n for (_, code), n in OUTCOMES.items() if code == "OK")
    assert ok >= 0.15 * sum(calls.values()), OUTCOMES
    for kind, n in calls.items():
        if n >= 80:
            assert OUTCOMES[(kind, "OK")] >= 1, (kind, {k: v for k, v in OUTCOMES.items() if k[0] == kind})
