"""The simad client: numpy in, numpy out, over gRPC (grpcio, protobuf and numpy only).

Methods mirror the engine (``simad.rollout``, ``simad.rollout_vjp``, ...) with the model
replaced by its id from ``load_model``. Every failure is a ``WireError`` (code, message, field).
"""

from __future__ import annotations

import os

import grpc
import numpy as np

from . import _rpc, encode, results
from .encode import ContactOptions
from .proto import (
    control_pb2,
    control_pb2_grpc,
    gradients_pb2,
    gradients_pb2_grpc,
    kinematics_pb2,
    kinematics_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
    simulation_pb2,
    simulation_pb2_grpc,
)
from .results import FeedbackPlan, GradientQuality, Gradients, IKResult, Linearization, ModelInfo, Trajectory
from .session import ControlSession

MIB = 1 << 20
_EULER = "semi_implicit_euler"


class Client:
    """A connection to a simad server.

    Args:
        address: "host:port".
        token: bearer token sent as ``authorization: Bearer <token>`` on every call.
        root_certificates: PEM bytes, or the path of a PEM file, of the CA that signed the
            server's certificate; given, the channel uses TLS.
        timeout: default deadline of each call, s, retries included (None: no deadline).
        retries: retries of idempotent calls (queries, rollouts, gradients) on UNAVAILABLE,
            after pauses of 0.05 s doubling (jittered, capped at 2 s). Never for load_model,
            delete_model or control sessions.
        max_message_bytes: gRPC send and receive limit; rollouts whose result would exceed
            half of it stream automatically.
        options: extra gRPC channel options, (name, value) pairs.

    Every method takes ``timeout`` (s) overriding the default deadline for that call.
    """

    def __init__(self, address: str = "127.0.0.1:50051", *, token: str | None = None,
                 root_certificates: bytes | str | os.PathLike | None = None, timeout: float | None = 30.0,
                 retries: int = 3, max_message_bytes: int = 64 * MIB, options=()):
        self.address, self.timeout, self.retries = address, timeout, max(int(retries), 0)
        self.max_message_bytes = int(max_message_bytes)
        opts = [("grpc.max_send_message_length", self.max_message_bytes),
                ("grpc.max_receive_message_length", self.max_message_bytes), *options]
        if root_certificates is None:
            self._channel = grpc.insecure_channel(address, options=opts)
        else:
            if not isinstance(root_certificates, bytes):
                with open(root_certificates, "rb") as f:
                    root_certificates = f.read()
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(address, creds, options=opts)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._server = server_pb2_grpc.ServerServiceStub(self._channel)
        self._models = models_pb2_grpc.ModelServiceStub(self._channel)
        self._kinematics = kinematics_pb2_grpc.KinematicsServiceStub(self._channel)
        self._simulation = simulation_pb2_grpc.SimulationServiceStub(self._channel)
        self._gradients = gradients_pb2_grpc.GradientServiceStub(self._channel)
        self._control = control_pb2_grpc.ControlServiceStub(self._channel)
        self._health = self._channel.unary_unary(_rpc.HEALTH_CHECK)  # bytes in, bytes out

    # -- plumbing ---------------------------------------------------------------------------
    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.address!r})"

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    @property
    def channel(self) -> grpc.Channel:
        """The underlying gRPC channel (e.g. for other services of the same server)."""
        return self._channel

    def _unary(self, rpc, request, timeout, idempotent: bool = True):
        """One unary call with the client's metadata, deadline and (if idempotent) retries."""
        deadline = self.timeout if timeout is None else timeout
        call = lambda left: rpc(request, timeout=left, metadata=self._metadata)  # noqa: E731
        return _rpc.invoke(call, deadline, self.retries if idempotent else 0)

    # -- server -----------------------------------------------------------------------------
    def server_info(self, *, timeout: float | None = None) -> dict:
        """The server's version, precision ("f64"/"f32"), backend, limits (nested dict), ..."""
        info = self._unary(self._server.GetServerInfo, server_pb2.GetServerInfoRequest(), timeout)
        return results.message_dict(info)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The standard gRPC health status: "SERVING" (after warm-up), "NOT_SERVING", ..."""
        reply = self._unary(self._health, _rpc.health_request(service), timeout)
        return _rpc.health_status(reply)

    # -- models -----------------------------------------------------------------------------
    def load_model(self, *, urdf: str | None = None, mjcf: str | None = None, spec: dict | None = None,
                   builtin: str | None = None, name: str = "", floating_base: bool = False,
                   timeout: float | None = None) -> ModelInfo:
        """Stores a model on the server; give exactly one source. Not retried.

        Args:
            urdf: URDF XML text. mjcf: MJCF XML text. builtin: "arm7", "cartpole", "quadruped",
                "planar_chain_<n>".
            spec: a dict mirroring ModelSpec: {"name", "gravity", "bodies": [{"name", "parent",
                "pos", "quat", "mass", "com", "inertia"}], "joints", "actuators", "sites", "geoms"}.
            name: display name (default: from the source). floating_base: URDF only, attach
                the root link by a free joint "root_joint".
        """
        sources = {"urdf": urdf, "mjcf": mjcf, "spec": spec, "builtin": builtin}
        given = [k for k, v in sources.items() if v is not None]
        if len(given) != 1:
            raise encode.invalid(f"give exactly one of urdf, mjcf, spec, builtin (got {given or 'none'})", "source")
        req = models_pb2.LoadModelRequest(name=name, floating_base=floating_base)
        if spec is not None:
            req.spec.CopyFrom(encode.model_spec(spec))
        else:
            setattr(req, given[0], str(sources[given[0]]))
        return results.model_info(self._unary(self._models.LoadModel, req, timeout, idempotent=False))

    def get_model(self, model_id: str, *, timeout: float | None = None) -> ModelInfo:
        """The ModelInfo of a stored model (NOT_FOUND if unknown)."""
        reply = self._unary(self._models.GetModel, models_pb2.GetModelRequest(model_id=model_id), timeout)
        return results.model_info(reply)

    def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        """Every model of the server, oldest first."""
        reply = self._unary(self._models.ListModels, models_pb2.ListModelsRequest(), timeout)
        return [results.model_info(m) for m in reply.models]

    def delete_model(self, model_id: str, *, timeout: float | None = None) -> None:
        """Deletes a model id (other ids of the same content stay). Not retried."""
        req = models_pb2.DeleteModelRequest(model_id=model_id)
        self._unary(self._models.DeleteModel, req, timeout, idempotent=False)

    # -- kinematics -------------------------------------------------------------------------
    def forward_kinematics(self, model_id: str, q, *, timeout: float | None = None):
        """World poses of every frame (bodies, then sites).

        Args:
            q: (B, nq) or (nq,) configurations (1-D: unbatched results).

        Returns:
            pos: (B, nframe, 3) m, frame origins, world frame. rot: (B, nframe, 3, 3) rotation
            matrices, columns the frame axes in world.
        """
        req = kinematics_pb2.ForwardKinematicsRequest(model_id=model_id, q=encode.tensor(q, "q"))
        r = self._unary(self._kinematics.ForwardKinematics, req, timeout)
        return results.array(r.pos, "pos"), results.array(r.rot, "rot")

    def frame_jacobian(self, model_id: str, q, frames, *, return_pose: bool = False, timeout: float | None = None):
        """Frame Jacobians, LOCAL_WORLD_ALIGNED: rows linear then angular velocity, world axes.

        Args:
            q: (B, nq) or (nq,). frames: one name, or a list of names (ModelInfo.frame_names).
            return_pose: also return the frames' world poses.

        Returns:
            J: (B, 6, nv) for one name, (B, nsel, 6, nv) for a list (no B for a 1-D q); with
            ``return_pose`` the tuple (J, pos (B[, nsel], 3) m, rot (B[, nsel], 3, 3)).
        """
        names, one = encode.names(frames, "frames")
        req = kinematics_pb2.FrameJacobianRequest(model_id=model_id, frames=names, return_pose=return_pose)
        encode.tensor(q, "q", req.q)
        r = self._unary(self._kinematics.FrameJacobian, req, timeout)
        outs = [results.array(r.jacobian, "jacobian")]
        if return_pose:
            outs += [results.array(r.pos, "pos"), results.array(r.rot, "rot")]
        if one:  # the frame axis follows the batch axis, if any
            axis = 0 if len(req.q.shape) == 1 else 1
            outs = [o.squeeze(axis) if o.ndim > axis and o.shape[axis] == 1 else o for o in outs]
        return tuple(outs) if return_pose else outs[0]

    def inverse_kinematics(self, model_id: str, frame: str, target_pos, target_rot=None, q_init=None, *,
                           tol_pos: float | None = None, tol_rot: float | None = None, max_iters: int | None = None,
                           restarts: int | None = None, damping: float | None = None, max_step: float | None = None,
                           seed: int | None = None, timeout: float | None = None) -> IKResult:
        """Damped least squares with random restarts; one solution per target.

        Args:
            frame: the frame to place. target_pos: (B, 3) m, world frame. target_rot: (B, 3, 3)
                rotation matrices, or None for position only. q_init: (B, nq) starting points
                (None: qpos0 clipped to limits).
            tol_pos, tol_rot (m, rad), max_iters, restarts, damping, max_step (rad or m), seed:
                solver options; None keeps the engine's default.
        """
        if not isinstance(frame, str):
            raise encode.invalid(f"expected one frame name, got {frame!r}", "frame")
        req = kinematics_pb2.InverseKinematicsRequest(model_id=model_id, frame=frame)
        encode.tensor(target_pos, "target_pos", req.target_pos)
        encode.set_tensor(req, "target_rot", target_rot, "target_rot")
        encode.set_tensor(req, "q_init", q_init, "q_init")
        opts = {"tol_pos": tol_pos, "tol_rot": tol_rot, "max_iters": max_iters, "restarts": restarts,
                "damping": damping, "max_step": max_step, "seed": seed}
        for key, value in opts.items():
            if value is not None:
                setattr(req, key, encode.number(value, key, type(getattr(req, key))))
        return results.ik_result(self._unary(self._kinematics.InverseKinematics, req, timeout))

    # -- simulation -------------------------------------------------------------------------
    def rollout(self, model_id: str, q0, qd0, controls, dt: float, integrator: str = _EULER, *, gains=None,
                q_ref=None, qd_ref=None, limit_stiffness: float | None = None, limit_damping: float | None = None,
                param_overrides: dict | None = None, policy=None, steps: int | None = None, contact=None,
                stream: bool | None = None, chunk_bytes: int = 0, timeout: float | None = None) -> Trajectory:
        """Simulates B envs for T steps.

        Args:
            q0: (B, nq) or (nq,) initial configurations. qd0: (B, nv) or (nv,) velocities.
            controls: (B, T, nu) or (T, nu) commands held over each step (tau = gear * clip(u,
                ctrl_range)); with ``gains``, the feedforward k_t.
            dt: step, s. integrator: "semi_implicit_euler" or "rk4".
            gains: (B, T, nu, 2 nv) or (T, nu, 2 nv) feedback K_t: u_t = k_t + K_t (x_t (-) xref_t).
            q_ref: (B, T, nq) or (T, nq), required with gains. qd_ref: (B, T, nv) or (T, nv).
            limit_stiffness (N m/rad), limit_damping (N m s/rad): soft joint limits (None:
                server defaults). param_overrides: {param name: array} for this call only.
            policy: an ``MLPPolicy`` the server evaluates inside the rollout at every step:
                u_t = controls_t + pi(x_t) (not with gains).
            steps: the horizon T when ``controls`` is None (zero feedforward, e.g. policy only).
            contact: smooth contact of the model's geoms (``simad.Contact(mode="smooth", ...)``, a
                dict with ContactOptions' keys, or the message; mode must be "smooth"): the geoms
                touch the static geometry and other kinematic trees. None: no contact.
            stream: True/False forces StreamRollout/Rollout; None streams when the result
                would exceed half of ``max_message_bytes``. chunk_bytes: chunk size (0: 1 MiB).

        Returns:
            ``Trajectory``: q (B, T+1, nq), qd (B, T+1, nv), u (B, T, nu).
        """
        spec = encode.rollout_spec(model_id, q0, qd0, controls, dt, integrator, gains=gains, q_ref=q_ref,
                                   qd_ref=qd_ref, limit_stiffness=limit_stiffness, limit_damping=limit_damping,
                                   param_overrides=param_overrides, policy=policy, steps=steps, contact=contact)
        if stream is None:
            stream = encode.trajectory_bytes(spec) > self.max_message_bytes // 2
        if not stream:
            reply = self._unary(self._simulation.Rollout, simulation_pb2.RolloutRequest(rollout=spec), timeout)
            return results.trajectory(reply)
        req = simulation_pb2.StreamRolloutRequest(rollout=spec, chunk_bytes=encode.number(chunk_bytes, "chunk_bytes", int))
        call = lambda left: results.assemble_chunks(  # noqa: E731
            self._simulation.StreamRollout(req, timeout=left, metadata=self._metadata))
        return _rpc.invoke(call, self.timeout if timeout is None else timeout, self.retries)

    def contact_rollout(self, model_id: str, q0, qd0=None, dt: float = 1e-3, *, steps: int | None = None,
                        controls=None, options=None, param_overrides: dict | None = None,
                        timeout: float | None = None) -> Trajectory:
        """Rigid bodies with contact (``simad.contact_rollout``): B envs of a free-body scene for T steps.

        Args:
            model_id: a contact scene: free bodies (free joints to the world) with sphere, box or
                capsule geoms, and static geoms on the world body (e.g. a plane).
            q0: (B, nq) or (nq,) poses, per moving body x y z (m, world) and quaternion w x y z.
            qd0: (B, nv) or (nv,) per body v (m/s) then w (rad/s), body frame (None: at rest).
            dt: step, s. steps: T (required without ``controls``).
            controls: (B, T, nmov, 6) or (T, nmov, 6) world-frame force (N, at the COM) and
                torque (N m) per moving body, held over each step (None: no applied wrenches).
            options: ``ContactOptions``, a dict with its keys, or a ``simad.Contact`` (None:
                impulse mode with time-of-impact correction, the server's defaults).
            param_overrides: {param name: array} for this call only (e.g. geom_friction).

        Returns:
            ``Trajectory``: q (B, T+1, nq), qd (B, T+1, nv), u (B, T, nmov, 6) the applied wrenches.
        """
        spec = encode.contact_spec(model_id, q0, qd0, dt, steps, controls, options, param_overrides)
        reply = self._unary(self._simulation.ContactRollout, simulation_pb2.ContactRolloutRequest(rollout=spec), timeout)
        return results.trajectory(reply)

    def contact_gradient(self, model_id: str, q0, qd0=None, dt: float = 1e-3, q_bar=None, qd_bar=None, *,
                         cost=None, steps: int | None = None, controls=None, options=None, params=(),
                         fd_check: bool | float = False, seed: int = 0, param_overrides: dict | None = None,
                         timeout: float | None = None) -> Gradients:
        """Reverse mode through a contact rollout: ``simad.contact_vjp`` (cotangents) or, given
        ``cost``, ``simad.contact_value_and_grad``, with a gradient-quality report.

        Args:
            model_id, q0, qd0, dt, steps, controls, options, param_overrides: as ``contact_rollout``.
            q_bar: (B, T+1, nq) cotangent of the configurations. qd_bar: (B, T+1, nv). None: 0.
            cost: instead of cotangents, a quadratic cost as in ``value_and_grad`` (state and
                frame terms; a scene has no actuators).
            params: parameter names to differentiate (ModelInfo.param_names), or "*" for every
                parameter the contact step depends on (body_mass, body_inertia, body_com,
                geom_size, geom_friction, geom_restitution, gravity). Default: none.
            fd_check: also check the gradient by central finite differences along a random unit
                direction of (q0, qd0, controls) per env (True: step 1e-6; a float: that step).
            seed: of that direction (>= 0).

        Returns:
            ``Gradients``: q0 (B, nq), qd0 (B, nv), controls (B, T, nmov, 6), params, loss (B,)
            with a cost (else None), and ``quality`` (a ``GradientQuality``).
        """
        req = gradients_pb2.ContactGradientRequest()
        encode.contact_spec(model_id, q0, qd0, dt, steps, controls, options, param_overrides, out=req.rollout)
        encode.set_tensor(req, "q_bar", q_bar, "q_bar")
        encode.set_tensor(req, "qd_bar", qd_bar, "qd_bar")
        if cost is not None:
            encode.cost(cost, req.cost)
        if params is not None:
            req.params.extend(encode.names(params, "params")[0])
        if isinstance(fd_check, str) or fd_check and not isinstance(fd_check, (bool, np.bool_)):
            encode.set_optional(req, "fd_step", fd_check, "fd_check")  # a float: the step (0.0: no check)
        req.fd_check = bool(fd_check)
        req.seed = encode.number(seed, "seed", int)
        return results.contact_gradients(self._unary(self._gradients.ContactGradient, req, timeout))

    # -- gradients --------------------------------------------------------------------------
    def rollout_vjp(self, model_id: str, q0, qd0, controls, dt: float, q_bar=None, qd_bar=None, *,
                    integrator: str = _EULER, gains=None, q_ref=None, qd_ref=None, params=(),
                    memory_budget: float | None = None, checkpoint_every: int | None = None,
                    clip_norm: float | None = None, limit_stiffness: float | None = None,
                    limit_damping: float | None = None, param_overrides: dict | None = None,
                    policy=None, steps: int | None = None, contact=None, timeout: float | None = None) -> Gradients:
        """Reverse mode: the gradient of sum <q_bar, q> + <qd_bar, qd> over the rollout.

        Args:
            model_id, q0, qd0, controls, dt, integrator, gains, q_ref, qd_ref, limit_*,
                param_overrides, policy, steps: as ``rollout``; with a policy, ``Gradients.policy``
                is the gradient w.r.t. its weights (summed over envs).
            q_bar: (B, T+1, nq) cotangent of the configurations. qd_bar: (B, T+1, nv). None: 0.
            params: parameter names to differentiate (ModelInfo.param_names), or "*" for all.
            memory_budget: tape bytes (None: 1 GiB); over it the rollout is checkpointed.
            checkpoint_every: force the segment length. clip_norm: scale the gradients so
                their global L2 norm is at most this.

        Returns:
            ``Gradients`` (q0, qd0, controls, gains if feedback, params, norm, clipped, ...).
        """
        req = gradients_pb2.RolloutVjpRequest()
        encode.rollout_spec(model_id, q0, qd0, controls, dt, integrator, gains=gains, q_ref=q_ref, qd_ref=qd_ref,
                            limit_stiffness=limit_stiffness, limit_damping=limit_damping,
                            param_overrides=param_overrides, policy=policy, steps=steps, contact=contact,
                            out=req.rollout)
        encode.set_tensor(req, "q_bar", q_bar, "q_bar")
        encode.set_tensor(req, "qd_bar", qd_bar, "qd_bar")
        encode.gradient_options(params, memory_budget, checkpoint_every, clip_norm, out=req.options)
        return results.gradients(self._unary(self._gradients.RolloutVjp, req, timeout))

    def value_and_grad(self, model_id: str, q0, qd0, controls, dt: float, cost, *, integrator: str = _EULER,
                       gains=None, q_ref=None, qd_ref=None, params=(), memory_budget: float | None = None,
                       checkpoint_every: int | None = None, clip_norm: float | None = None,
                       limit_stiffness: float | None = None, limit_damping: float | None = None,
                       param_overrides: dict | None = None, policy=None, steps: int | None = None,
                       contact=None, timeout: float | None = None) -> Gradients:
        """A built-in quadratic cost of the rollout and its gradient, without shipping the trajectory.

        Args:
            cost: a dict with QuadraticCost's keys (q_weight (nq,), q_ref, terminal_q_weight,
                qd_weight, qd_ref, terminal_qd_weight, u_weight, u_ref, frames (names),
                frame_weight, frame_ref (m, world), terminal_frame_weight), or any object with
                those attributes (e.g. ``simad.QuadraticCost``). None entries are 0.
            Others: as ``rollout_vjp``.

        Returns:
            ``Gradients`` with ``loss`` (B,), the gradient being of the sum over envs.
        """
        req = gradients_pb2.ValueAndGradRequest()
        encode.rollout_spec(model_id, q0, qd0, controls, dt, integrator, gains=gains, q_ref=q_ref, qd_ref=qd_ref,
                            limit_stiffness=limit_stiffness, limit_damping=limit_damping,
                            param_overrides=param_overrides, policy=policy, steps=steps, contact=contact,
                            out=req.rollout)
        encode.cost(cost, req.cost)
        encode.gradient_options(params, memory_budget, checkpoint_every, clip_norm, out=req.options)
        return results.gradients(self._unary(self._gradients.ValueAndGrad, req, timeout))

    def linearize(self, model_id: str, q, qd, u, dt: float, integrator: str = _EULER, *,
                  limit_stiffness: float | None = None, limit_damping: float | None = None,
                  timeout: float | None = None):
        """A = dx'/dx and B = dx'/du of one step at every point, exact.

        Args:
            q: (..., nq), qd: (..., nv), u: (..., nu), the same leading shape (e.g. (B, T)).
            dt, integrator, limit_*: as ``rollout``.

        Returns:
            A: (..., 2 nv, 2 nv), B: (..., 2 nv, nu); tangent space (free joints: body-frame).
        """
        req = gradients_pb2.LinearizeRequest(model_id=model_id, dt=encode.number(dt, "dt", float),
                                             integrator=encode.integrator(integrator))
        for name, value in (("q", q), ("qd", qd), ("u", u)):
            encode.tensor(value, name, getattr(req, name))
        encode.set_optional(req, "limit_stiffness", limit_stiffness, "limit_stiffness")
        encode.set_optional(req, "limit_damping", limit_damping, "limit_damping")
        r = self._unary(self._gradients.Linearize, req, timeout)
        return results.array(r.a, "a"), results.array(r.b, "b")

    def rollout_jvp(self, model_id: str, q0, qd0, controls, dt: float, dq0=None, dqd0=None, dcontrols=None,
                    integrator: str = _EULER, *, limit_stiffness: float | None = None,
                    limit_damping: float | None = None, timeout: float | None = None):
        """Forward mode of an open-loop rollout along (dq0, dqd0, dcontrols).

        Args:
            q0, qd0, controls, dt, integrator, limit_*: as ``rollout``.
            dq0: (B, nv) tangent of q0. dqd0: (B, nv). dcontrols: (B, T, nu). None: 0.

        Returns:
            (``Trajectory``, dq (B, T+1, nv), dqd (B, T+1, nv)).
        """
        req = gradients_pb2.RolloutJvpRequest()
        encode.rollout_spec(model_id, q0, qd0, controls, dt, integrator, limit_stiffness=limit_stiffness,
                            limit_damping=limit_damping, out=req.rollout)
        for name, value in (("dq0", dq0), ("dqd0", dqd0), ("dcontrols", dcontrols)):
            encode.set_tensor(req, name, value, name)
        r = self._unary(self._gradients.RolloutJvp, req, timeout)
        return results.trajectory(r.trajectory), results.array(r.dq, "dq"), results.array(r.dqd, "dqd")

    # -- control ----------------------------------------------------------------------------
    def control_session(self, model_id: str, dt: float, horizon: int, *, mode: str = "linearization",
                        controls=None, cost=None, iterations: int = 1, regularization: float = 0.0,
                        integrator: str = _EULER, limit_stiffness: float | None = None,
                        limit_damping: float | None = None, timeout: float | None = None) -> ControlSession:
        """A model-predictive-control session (bidirectional stream); use it with ``with``.

        Args:
            dt: control period and step, s. horizon: T >= 1 steps planned ahead.
            mode: "linearization" (each tick returns the nominal trajectory with A_t, B_t) or
                "plan" (each tick runs ``iterations`` iLQR iterations on ``cost`` and returns
                the feedback plan). controls: (T, nu) initial nominal controls (None: zeros).
            cost: "plan" mode's cost, as ``value_and_grad``. regularization: initial
                Levenberg-Marquardt mu (0: 1e-6).
            timeout: deadline of the whole session, s (None: none; a session is long-lived,
                so the client's default does not apply).

        Returns:
            An unopened ``ControlSession``: ``with client.control_session(...) as s: s.step(q, qd)``.
        """
        start = control_pb2.SessionStart(
            model_id=model_id, dt=encode.number(dt, "dt", float), integrator=encode.integrator(integrator),
            horizon=encode.number(horizon, "horizon", int), mode=encode.mode(mode),
            iterations=encode.number(iterations, "iterations", int),
            regularization=encode.number(regularization, "regularization", float))
        encode.set_tensor(start, "controls", controls, "start.controls")
        if cost is not None:
            encode.cost(cost, start.cost, "start.cost")
        encode.set_optional(start, "limit_stiffness", limit_stiffness, "limit_stiffness")
        encode.set_optional(start, "limit_damping", limit_damping, "limit_damping")
        return ControlSession(self._control.Session, start, metadata=self._metadata, timeout=timeout)


__all__ = ["Client", "ContactOptions", "ControlSession", "FeedbackPlan", "GradientQuality", "Gradients", "IKResult",
           "Linearization", "ModelInfo", "Trajectory"]
