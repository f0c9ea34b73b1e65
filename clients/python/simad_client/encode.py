"""Request building: Python and numpy values -> simad.v1 messages, checked client-side.

Every failure is a ``WireError("INVALID_ARGUMENT", ..., field)`` naming the argument, as the
server would, so callers handle one error type whichever side caught the mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message

from . import codec
from .errors import WireError
from .proto import control_pb2, gradients_pb2, models_pb2, simulation_pb2, tensor_pb2

INTEGRATORS = {"semi_implicit_euler": tensor_pb2.SEMI_IMPLICIT_EULER, "rk4": tensor_pb2.RK4}
MODES = {"linearization": control_pb2.LINEARIZATION, "plan": control_pb2.FEEDBACK_PLAN}
CONTACT_MODES = {"impulse": simulation_pb2.IMPULSE, "smooth": simulation_pb2.SMOOTH}
CONTACT_OPTIONS = ("mode", "iterations", "toi", "baumgarte", "slop", "bounce_threshold", "timeconst", "softness",
                   "friction_eps", "broad_phase")
COST_FIELDS = (
    "q_weight", "q_ref", "terminal_q_weight", "qd_weight", "qd_ref", "terminal_qd_weight",
    "u_weight", "u_ref", "frames", "frame_weight", "frame_ref", "terminal_frame_weight",
    "obstacle_frames", "obstacles", "obstacle_weight",
)  # fmt: skip
NAME_LISTS = ("frames", "obstacle_frames")
ITEMSIZE = 8  # bytes per output element assumed when sizing a result (f64 server)


@dataclass(frozen=True)
class ContactOptions:
    """Contact options of ``Client.contact_rollout`` / ``contact_gradient`` (mirrors ``simad.Contact``;
    None = the server's default, shown in brackets). A dict with these keys, or any object with
    these attributes (e.g. a ``simad.Contact``), is accepted as well.

    Attributes:
        mode: "impulse" (exact impulses with time-of-impact correction) or "smooth" (penalty).
        iterations: Jacobi sweeps of the impulse solver, 4, 8 or 16 [8].
        toi: time-of-impact correction of positions (impulse) [True]; False is the naive scheme.
        baumgarte: fraction of the penetration beyond ``slop`` pushed out per step, [0, 1] [0.2].
        slop: m, penetration allowed without push-out, also the activation margin [1e-4].
        bounce_threshold: m/s, approach speed below which restitution is off [0.05].
        timeconst: s, contact period of the smooth spring, >= 2 dt [0.02].
        softness: m, width of the softplus on the penetration (smooth) [1e-4].
        friction_eps: m/s, slip-speed regularisation of smooth friction [1e-2].
        broad_phase: skip pairs whose bounding spheres cannot meet within the step [True];
            False runs the narrow phase on every pair (same results but for box-box pairs whose
            bounding spheres are apart while their face test reports an overlap; for checks).
    """

    mode: str = "impulse"
    iterations: int | None = None
    toi: bool | None = None
    baumgarte: float | None = None
    slop: float | None = None
    bounce_threshold: float | None = None
    timeconst: float | None = None
    softness: float | None = None
    friction_eps: float | None = None
    broad_phase: bool | None = None



def _getter(value, allowed, field: str):
    """``get(key, default)`` over a dict (unknown keys refused, naming ``field.<key>``) or over
    any object's attributes."""
    if isinstance(value, Mapping):
        unknown = sorted(set(map(str, value)) - set(allowed))
        if unknown:
            raise invalid(f"unknown key {unknown[0]!r} (expected {', '.join(allowed)})", f"{field}.{unknown[0]}")
        return value.get
    return lambda key, default=None: getattr(value, key, default)

def invalid(message: str, field: str) -> WireError:
    return WireError("INVALID_ARGUMENT", message, field)


def integrator(name: str) -> int:
    """The Integrator enum value of "semi_implicit_euler" or "rk4"."""
    if not isinstance(name, str) or name not in INTEGRATORS:
        raise invalid(f"expected one of {sorted(INTEGRATORS)}, got {name!r}", "integrator")
    return INTEGRATORS[name]


def mode(name: str) -> int:
    """The ControlMode enum value of "linearization" or "plan"."""
    if not isinstance(name, str) or name not in MODES:
        raise invalid(f"expected one of {sorted(MODES)}, got {name!r}", "mode")
    return MODES[name]


def tensor(value, field: str, out: tensor_pb2.Tensor | None = None) -> tensor_pb2.Tensor:
    """Encodes a float input: float32/float64 as given, ints, bools and lists as float64.

    Every request tensor of simad.v1 is a float field, so ``[0, 0, 1]`` must not go out as INT64.
    Failures (ragged lists, strings, objects) name ``field``.
    """
    try:
        arr = np.asarray(value)
        if arr.dtype.kind in "biu":
            arr = arr.astype(np.float64)
        return codec.to_tensor(arr, out)
    except (TypeError, ValueError) as err:
        raise invalid(f"cannot encode as a tensor: {err}", field) from None


def set_tensor(msg: Message, name: str, value, field: str) -> None:
    """Fills the Tensor field ``name`` of ``msg`` from ``value``; None leaves it unset."""
    if value is not None:
        tensor(value, field, getattr(msg, name))


def set_tensors(target, values: Mapping | None, field: str) -> None:
    """Fills a ``map<string, Tensor>`` from a dict name -> array."""
    for name, value in (values or {}).items():
        tensor(value, f"{field}.{name}", target[str(name)])


def set_optional(msg: Message, name: str, value, field: str) -> None:
    """Sets an ``optional double`` field; None leaves it absent (the server's default)."""
    if value is not None:
        setattr(msg, name, _float(value, field))


def names(value, field: str) -> tuple[list[str], bool]:
    """A frame name or a list of them -> (names, given_as_one_str)."""
    if isinstance(value, str):
        return [value], True
    try:
        items = list(value)
    except TypeError:
        raise invalid(f"expected a name or a list of names, got {type(value).__name__}", field) from None
    for item in items:
        if not isinstance(item, str):
            raise invalid(f"expected names (str), got {item!r}", field)
    return items, False


def cost(value, out: gradients_pb2.QuadraticCost | None = None, field: str = "cost") -> gradients_pb2.QuadraticCost:
    """A QuadraticCost message from a dict with its keys, or any object with those attributes.

    Args:
        value: e.g. ``{"q_weight": w, "q_ref": q_goal, "frames": ["tool"], "frame_weight": [10.0]}``
            or a ``simad.QuadraticCost``; None entries stay unset (weight 0, reference 0).
    """
    msg = out if out is not None else gradients_pb2.QuadraticCost()
    if isinstance(value, gradients_pb2.QuadraticCost):
        msg.CopyFrom(value)
        return msg
    get = _getter(value, COST_FIELDS, field)
    for key in COST_FIELDS:
        item = get(key, None)
        if key in NAME_LISTS:
            getattr(msg, key).extend(names(item, f"{field}.{key}")[0] if item is not None else ())
        else:
            set_tensor(msg, key, item, f"{field}.{key}")
    return msg


def model_spec(spec) -> models_pb2.ModelSpec:
    """A ModelSpec from a dict mirroring it (numpy arrays allowed), or a ModelSpec itself."""
    if isinstance(spec, models_pb2.ModelSpec):
        return spec
    if not isinstance(spec, Mapping):
        raise invalid(f"expected a dict mirroring ModelSpec, got {type(spec).__name__}", "spec")
    try:
        return json_format.ParseDict(_plain(spec), models_pb2.ModelSpec())
    except json_format.ParseError as err:
        raise invalid(str(err), "spec") from None


def rollout_spec(model_id: str, q0, qd0, controls, dt, integrator_name: str = "semi_implicit_euler", *,
                 gains=None, q_ref=None, qd_ref=None, limit_stiffness=None, limit_damping=None,
                 param_overrides: Mapping | None = None, policy=None, steps=None, contact=None,
                 out=None) -> simulation_pb2.RolloutSpec:
    """The RolloutSpec shared by rollout, gradient and JVP requests (arguments as ``Client.rollout``)."""
    spec = out if out is not None else simulation_pb2.RolloutSpec()
    spec.model_id = str(model_id)
    spec.integrator = integrator(integrator_name)
    spec.dt = _float(dt, "dt")
    if controls is None:
        if steps is None:
            raise invalid("required (or give steps=T)", "controls")
        spec.steps = _int(steps, "steps")
    for name, value in (("q0", q0), ("qd0", qd0), ("controls", controls)):
        if value is None:
            if name == "controls":
                continue
            raise invalid("required", name)
        set_tensor(spec, name, value, name)
    if policy is not None:
        mlp_policy(policy, spec.policy)
    if contact is not None:
        contact_options(contact, spec.contact, "contact")
        if not spec.HasField("contact"):  # all defaults: still ask for contact
            spec.contact.SetInParent()
    if gains is not None or q_ref is not None or qd_ref is not None:
        for name, value in (("gains", gains), ("q_ref", q_ref), ("qd_ref", qd_ref)):
            set_tensor(spec.feedback, name, value, name)
    set_optional(spec, "limit_stiffness", limit_stiffness, "limit_stiffness")
    set_optional(spec, "limit_damping", limit_damping, "limit_damping")
    set_tensors(spec.param_overrides, param_overrides, "param_overrides")
    return spec


def mlp_policy(policy, out: simulation_pb2.MlpPolicy | None = None) -> simulation_pb2.MlpPolicy:
    """MlpPolicy from a ``simad_client.MLPPolicy`` (or anything with its attributes: sizes or
    hidden, weights, observation, output_scale, obs_scale, squash) or the message itself."""
    msg = out if out is not None else simulation_pb2.MlpPolicy()
    if isinstance(policy, simulation_pb2.MlpPolicy):
        msg.CopyFrom(policy)
        return msg
    hidden = getattr(policy, "hidden", None)
    if hidden is None or getattr(policy, "weights", None) is None:
        raise invalid(f"expected an MLPPolicy (hidden, weights), got {type(policy).__name__}", "policy")
    try:
        msg.hidden[:] = [int(h) for h in hidden]
    except (TypeError, ValueError, OverflowError):
        raise invalid(f"expected integer layer widths, got {hidden!r}", "policy.hidden") from None
    msg.observation = str(getattr(policy, "observation", "trig"))
    msg.linear_output = not bool(getattr(policy, "squash", True))
    set_tensor(msg, "weights", policy.weights, "policy.weights")
    for name in ("output_scale", "obs_scale"):
        value = getattr(policy, name, None)
        if value is not None:
            set_tensor(msg, name, value, f"policy.{name}")
    return msg


def contact_options(value, out: simulation_pb2.ContactOptions | None = None,
                    field: str = "options") -> simulation_pb2.ContactOptions:
    """ContactOptions from None (the server's defaults), a ``ContactOptions``, a dict with its
    keys, any object with its attributes (e.g. ``simad.Contact``) or the message itself."""
    msg = out if out is not None else simulation_pb2.ContactOptions()
    if value is None:
        return msg
    if isinstance(value, simulation_pb2.ContactOptions):
        msg.CopyFrom(value)
        return msg
    get = _getter(value, CONTACT_OPTIONS, field)
    mode_name = get("mode", None)
    if mode_name is not None:
        if not isinstance(mode_name, str) or mode_name not in CONTACT_MODES:
            raise invalid(f"expected one of {sorted(CONTACT_MODES)}, got {mode_name!r}", f"{field}.mode")
        msg.mode = CONTACT_MODES[mode_name]
    iterations = get("iterations", None)
    if iterations is not None:
        n = _int(iterations, f"{field}.iterations")
        if not -(2**31) <= n < 2**31:
            raise invalid(f"expected 4, 8 or 16, got {n}", f"{field}.iterations")
        msg.iterations = n
    for key in ("toi", "broad_phase"):
        flag = get(key, None)
        if flag is not None:
            if not isinstance(flag, (bool, np.bool_)):
                raise invalid(f"expected a bool, got {flag!r}", f"{field}.{key}")
            setattr(msg, key, bool(flag))
    for key in CONTACT_OPTIONS[3:-1]:
        set_optional(msg, key, get(key, None), f"{field}.{key}")
    return msg


def contact_spec(model_id: str, q0, qd0=None, dt=1e-3, steps=None, controls=None, options=None,
                 param_overrides: Mapping | None = None, out=None) -> simulation_pb2.ContactRolloutSpec:
    """The ContactRolloutSpec of contact rollout and gradient requests (arguments as ``Client.contact_rollout``)."""
    spec = out if out is not None else simulation_pb2.ContactRolloutSpec()
    spec.model_id = str(model_id)
    spec.dt = _float(dt, "dt")
    if q0 is None:
        raise invalid("required", "q0")
    set_tensor(spec, "q0", q0, "q0")
    set_tensor(spec, "qd0", qd0, "qd0")
    set_tensor(spec, "controls", controls, "controls")
    if steps is not None:
        n = _int(steps, "steps")
        if not 0 <= n < 2**63:
            raise invalid(f"expected a positive integer, got {n}", "steps")
        spec.steps = n
    contact_options(options, spec.options)
    set_tensors(spec.param_overrides, param_overrides, "param_overrides")
    return spec


def gradient_options(params=(), memory_budget=None, checkpoint_every=None, clip_norm=None,
                     out=None) -> gradients_pb2.GradientOptions:
    """GradientOptions: ``params`` a name, names, or "*" for every parameter; None = defaults."""
    opts = out if out is not None else gradients_pb2.GradientOptions()
    if params is not None:
        opts.params.extend(names(params, "params")[0])
    if memory_budget is not None:
        opts.memory_budget_bytes = _int(memory_budget, "memory_budget", exact=False)  # bytes, rounded down
    if checkpoint_every is not None:
        opts.checkpoint_every = _int(checkpoint_every, "checkpoint_every")
    set_optional(opts, "clip_norm", clip_norm, "clip_norm")
    return opts


def trajectory_bytes(spec: simulation_pb2.RolloutSpec) -> int:
    """Expected size of the rollout's result: 8 B x (B (T+1) (nq+nv) + B T nu) elements."""
    q0, qd0, u = (tuple(t.shape) for t in (spec.q0, spec.qd0, spec.controls))
    fb = spec.feedback
    batched = [(q0, 2), (qd0, 2), (u, 3), (tuple(fb.gains.shape), 4), (tuple(fb.q_ref.shape), 3),
               (tuple(fb.qd_ref.shape), 3)]
    B = max([1] + [s[0] for s, nd in batched if len(s) == nd])
    T = u[-2] if len(u) >= 2 else spec.steps
    nq, nv, nu = (s[-1] if s else 0 for s in (q0, qd0, u))
    return ITEMSIZE * (B * (T + 1) * (nq + nv) + B * T * nu)


def number(value, field: str, kind: type = float):
    """``value`` as a float or an exact int (kind), or INVALID_ARGUMENT naming ``field``."""
    return _int(value, field) if kind is int else _float(value, field)


def _float(value, field: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise invalid(f"expected a number, got {value!r}", field) from None


def _int(value, field: str, exact: bool = True) -> int:
    try:
        out = int(value) if exact else int(float(value))
    except (TypeError, ValueError, OverflowError):
        raise invalid(f"expected an integer, got {value!r}", field) from None
    if exact and out != value:
        raise invalid(f"expected an integer, got {value!r}", field)
    return out


def _plain(value):
    """numpy arrays and scalars -> lists and Python numbers, recursively (for ParseDict)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
