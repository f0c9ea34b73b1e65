"""What the client returns: dataclasses of writable numpy arrays, decoded from simad.v1 replies."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from google.protobuf.message import Message

from . import codec
from .errors import WireError
from .proto import control_pb2, gradients_pb2, kinematics_pb2, models_pb2, simulation_pb2


def array(t, name: str) -> np.ndarray:
    """A decoded Tensor as a writable array (the codec's view is read-only)."""
    return np.array(codec.from_tensor(t, name), copy=True)


def optional(t, name: str) -> np.ndarray | None:
    """``array``, or None for an absent Tensor field."""
    return array(t, name) if codec.is_set(t) else None


def tensors(entries, name: str) -> dict[str, np.ndarray]:
    """A decoded ``map<string, Tensor>`` (keys sorted, for stable printing)."""
    return {key: array(entries[key], f"{name}.{key}") for key in sorted(entries)}


def message_dict(msg: Message) -> dict:
    """Every field of a message as plain Python values (sub-messages as nested dicts)."""
    out = {}
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        if isinstance(value, Message):
            value = message_dict(value)
        elif not isinstance(value, (str, bytes, int, float, bool)):
            value = [message_dict(v) if isinstance(v, Message) else v for v in value]
        out[f.name] = value
    return out


@dataclass
class ModelInfo:
    """A model stored on the server; what a client needs to build valid requests for it.

    Attributes:
        model_id: opaque id to pass to every other call. content_hash: SHA-256 hex of the model.
        name: display name. nq, nv, nu: configuration, velocity and actuator sizes. nbody:
            bodies, world included.
        body_names, joint_names, actuator_names: in model order. frame_names: bodies then
            sites, the names kinematics calls accept. param_names: differentiable parameters.
        qpos0: (nq,) default configuration (free joint: x y z m, qw qx qy qz).
        params: {name: array} the current value of every parameter in param_names.
        has_free_joint: a floating base. created_unix_ms: load time, ms since the epoch.
        joint_types: per joint, 0 fixed, 1 revolute, 2 prismatic, 3 free.
        joint_range: (njoint, 2) limits, rad or m, (-inf, inf) when unlimited.
        ctrl_range: (nu, 2) control range per actuator, (-inf, inf) when unlimited.
    """

    model_id: str
    content_hash: str
    name: str
    nq: int
    nv: int
    nu: int
    nbody: int
    body_names: tuple[str, ...]
    joint_names: tuple[str, ...]
    actuator_names: tuple[str, ...]
    frame_names: tuple[str, ...]
    param_names: tuple[str, ...]
    qpos0: np.ndarray
    params: dict[str, np.ndarray] = field(default_factory=dict)
    has_free_joint: bool = False
    created_unix_ms: int = 0
    joint_types: tuple[int, ...] = ()
    joint_range: np.ndarray | None = None
    ctrl_range: np.ndarray | None = None


def model_info(m: models_pb2.ModelInfo) -> ModelInfo:
    return ModelInfo(
        m.model_id, m.content_hash, m.name, m.nq, m.nv, m.nu, m.nbody, tuple(m.body_names), tuple(m.joint_names),
        tuple(m.actuator_names), tuple(m.frame_names), tuple(m.param_names), array(m.qpos0, "model.qpos0"),
        tensors(m.params, "model.params"), m.has_free_joint, m.created_unix_ms, tuple(m.joint_types),
        optional(m.joint_range, "model.joint_range"), optional(m.ctrl_range, "model.ctrl_range"),
    )  # fmt: skip


@dataclass
class Trajectory:
    """A batched rollout.

    Attributes:
        q: (B, T+1, nq) configurations, q[:, 0] = q0 (free joints: position m, quaternion w-first).
        qd: (B, T+1, nv) velocities, rad/s or m/s (free joints: body frame, linear then angular).
        u: (B, T, nu) controls applied at each step (feedforward + feedback), before clipping.
    """

    q: np.ndarray
    qd: np.ndarray
    u: np.ndarray


def trajectory(t: simulation_pb2.Trajectory, name: str = "trajectory") -> Trajectory:
    return Trajectory(array(t.q, f"{name}.q"), array(t.qd, f"{name}.qd"), array(t.u, f"{name}.u"))


def assemble_chunks(chunks: Iterable[simulation_pb2.TrajectoryChunk]) -> Trajectory:
    """Joins a StreamRollout's chunks into one Trajectory, checking they tile [0, T).

    The first chunk carries states 0..n (n+1 of them), every later one states t0+1..t0+n, so
    concatenating along the time axis gives (B, T+1, ...) states and (B, T, nu) controls.

    Raises:
        WireError: INTERNAL if the chunks do not start at 0, leave a gap, or end before ``last``.
    """
    parts, t_next, done = [], 0, False
    for chunk in chunks:
        if done:
            raise WireError("INTERNAL", "a chunk after the last one", "chunk.t0")
        if chunk.t0 != t_next:
            raise WireError("INTERNAL", f"expected a chunk starting at step {t_next}, got {chunk.t0}", "chunk.t0")
        q, qd, u = (array(t, f"chunk.{n}") for t, n in ((chunk.q, "q"), (chunk.qd, "qd"), (chunk.u, "u")))
        n, extra = u.shape[1] if u.ndim == 3 else -1, 1 if t_next == 0 else 0
        if n < 0 or q.ndim != 3 or qd.ndim != 3 or q.shape[1] != n + extra or qd.shape[1] != n + extra:
            raise WireError("INTERNAL", f"chunk at step {t_next}: q {q.shape}, qd {qd.shape}, u {u.shape} disagree", "chunk")
        parts.append((q, qd, u))
        t_next, done = t_next + n, chunk.last
    if not done:
        raise WireError("INTERNAL", f"the stream ended after step {t_next} without its last chunk", "chunk.last")
    return Trajectory(*(np.concatenate(arrays, axis=1) for arrays in zip(*parts, strict=True)))


@dataclass
class GradientQuality:
    """How far a contact gradient can be trusted, per env (mirrors ``simad.GradientQuality``).

    Attributes:
        mode_switches: (B,) int64, contacts that became active or inactive during the rollout.
        max_growth: (B,) the largest one-step growth factor of the state adjoint's norm.
        max_growth_step: (B,) int64, the step where it happened (-1: the adjoint stayed zero).
        fd_directional: (B,) central finite-difference derivative of the loss along a random
            unit direction of (q0, qd0, controls), or None without ``fd_check``.
        ad_directional: (B,) the same derivative from the gradient, or None.
        fd_rel_error: (B,) |fd - ad| / max(|fd|, |ad|, 1e-12), or None.
    """

    mode_switches: np.ndarray
    max_growth: np.ndarray
    max_growth_step: np.ndarray
    fd_directional: np.ndarray | None = None
    ad_directional: np.ndarray | None = None
    fd_rel_error: np.ndarray | None = None


@dataclass
class Gradients:
    """Gradients of a scalar (the loss, or <q_bar, q> + <qd_bar, qd>) with respect to the inputs.

    Attributes:
        q0: (B, nq) w.r.t. the initial configurations (coordinates). qd0: (B, nv).
        controls: (B, T, nu) w.r.t. the controls (the feedforward k_t in closed loop); contact
            gradients: (B, T, nmov, 6) w.r.t. the applied wrenches.
        gains: (B, T, nu, 2 nv) w.r.t. the feedback gains, or None in open loop.
        params: {name: array shaped like ModelInfo.params[name]}, summed over the batch.
        loss: (B,) per-env loss (``value_and_grad``, ``contact_gradient`` with a cost), else None.
        norm: global L2 norm before clipping. clipped: whether ``clip_norm`` scaled them
            (contact gradients: 0.0 and False, no clipping).
        checkpoint_every: segment length used (T: no checkpointing).
        quality: contact gradients only: a ``GradientQuality``, else None.
        policy: (P,) w.r.t. the weights of the request's ``MLPPolicy``, summed over envs, or None.
    """

    q0: np.ndarray
    qd0: np.ndarray
    controls: np.ndarray
    gains: np.ndarray | None = None
    params: dict[str, np.ndarray] = field(default_factory=dict)
    loss: np.ndarray | None = None
    norm: float = 0.0
    clipped: bool = False
    checkpoint_every: int = 0
    quality: GradientQuality | None = None
    policy: np.ndarray | None = None


def gradients(g: gradients_pb2.Gradients) -> Gradients:
    return Gradients(
        array(g.q0, "gradients.q0"), array(g.qd0, "gradients.qd0"), array(g.controls, "gradients.controls"),
        optional(g.gains, "gradients.gains"), tensors(g.params, "gradients.params"), optional(g.loss, "gradients.loss"),
        g.norm, g.clipped, g.checkpoint_every, policy=optional(g.policy, "gradients.policy"),
    )  # fmt: skip


def contact_gradients(g: gradients_pb2.ContactGradients) -> Gradients:
    """A ContactGradients reply as ``Gradients`` with ``quality`` (checkpoint_every = T, like the engine)."""
    controls = array(g.controls, "gradients.controls")
    qy = g.quality
    quality = GradientQuality(
        array(qy.mode_switches, "quality.mode_switches"), array(qy.max_growth, "quality.max_growth"),
        array(qy.max_growth_step, "quality.max_growth_step"), optional(qy.fd_directional, "quality.fd_directional"),
        optional(qy.ad_directional, "quality.ad_directional"), optional(qy.fd_rel_error, "quality.fd_rel_error"),
    )  # fmt: skip
    return Gradients(
        array(g.q0, "gradients.q0"), array(g.qd0, "gradients.qd0"), controls, None, tensors(g.params, "gradients.params"),
        optional(g.loss, "gradients.loss"), checkpoint_every=controls.shape[1] if controls.ndim == 4 else 0,
        quality=quality,
    )  # fmt: skip


@dataclass
class IKResult:
    """Inverse-kinematics solutions, one per target.

    Attributes:
        q: (B, nq) solutions (the best found when not successful).
        success: (B,) bool, within both tolerances. pos_residual: (B,) m. rot_residual: (B,) rad.
        iterations: (B,) int, iterations spent.
    """

    q: np.ndarray
    success: np.ndarray
    pos_residual: np.ndarray
    rot_residual: np.ndarray
    iterations: np.ndarray


def ik_result(r: kinematics_pb2.InverseKinematicsResponse) -> IKResult:
    return IKResult(*(array(getattr(r, n), f"ik.{n}") for n in ("q", "success", "pos_residual", "rot_residual", "iterations")))


@dataclass
class Linearization:
    """A control-session reply in "linearization" mode: the nominal plan from the measured state.

    Attributes:
        q: (T+1, nq), qd: (T+1, nv) nominal trajectory; u: (T, nu) nominal controls.
        A: (T, 2 nv, 2 nv) and B: (T, 2 nv, nu) tangent-space step Jacobians along it.
        server_ms: time the server spent on the tick (queue + compute), ms.
    """

    q: np.ndarray
    qd: np.ndarray
    u: np.ndarray
    A: np.ndarray
    B: np.ndarray
    server_ms: float = 0.0


@dataclass
class FeedbackPlan:
    """A control-session reply in "plan" mode: u_t = k_t + K_t (x_t (-) xref_t).

    Attributes:
        k: (T, nu) feedforward. gains: (T, nu, 2 nv) K_t on (q (-) q_ref, qd - qd_ref).
        q_ref: (T+1, nq), qd_ref: (T+1, nv) planned states. u0: (nu,) the control to apply now.
        cost: the plan's cost. server_ms: time the server spent on the tick, ms.
    """

    k: np.ndarray
    gains: np.ndarray
    q_ref: np.ndarray
    qd_ref: np.ndarray
    u0: np.ndarray
    cost: float = 0.0
    server_ms: float = 0.0


def control_reply(reply: control_pb2.ControlReply) -> Linearization | FeedbackPlan:
    """Decodes a tick's answer; WireError INTERNAL for any other body."""
    body = reply.WhichOneof("body")
    if body == "linearization":
        m = reply.linearization
        q, qd, u, a, b = (array(getattr(m, n), f"linearization.{n}") for n in ("q", "qd", "u", "a", "b"))
        return Linearization(q, qd, u, a, b, reply.server_ms)
    if body == "plan":
        m = reply.plan
        k, gains, q_ref, qd_ref, u0 = (array(getattr(m, n), f"plan.{n}") for n in ("k", "gains", "q_ref", "qd_ref", "u0"))
        return FeedbackPlan(k, gains, q_ref, qd_ref, u0, m.cost, reply.server_ms)
    raise WireError("INTERNAL", f"expected a linearization or a plan, got {body}", "reply")
