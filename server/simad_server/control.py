"""ControlService.Session: one bidirectional stream per controller, one reply per tick.

The session keeps the nominal controls between ticks (warm start, shifted one step after each
reply). LINEARIZATION mode returns the nominal trajectory from the measured state with its
A_t, B_t; FEEDBACK_PLAN mode runs iLQR iterations (``simad.mpc.ilqr``) and returns the plan.

Moving references (tracking): a cost reference with more rows than the horizon needs (q_ref,
qd_ref, frame_ref: more than T + 1; u_ref: more than T) is a trajectory indexed from the
session's first tick: tick n plans with rows n .. n + T (n .. n + T - 1 for u_ref), the last
row held once the trajectory ends. References of T + 1 (T) rows or without a time axis stay
fixed to the horizon's steps, as before.
"""

from __future__ import annotations

import dataclasses
import time

import grpc
import numpy as np
from simad_client.errors import WireError
from simad_client.proto import control_pb2

import simad
from simad.mpc import shift

from .errors import abort, status_of
from .service import Core, fill

TICK_FIELDS = {"q0": "tick.q", "qd0": "tick.qd", "controls": "tick.controls", "q": "tick.q", "qd": "tick.qd",
               "model_id": "start.model_id"}
START_FIELDS = {"cost": "start.cost", "dt": "start.dt", "controls": "start.controls", "integrator": "start.integrator",
                "iterations": "start.iterations", "regularization": "start.regularization",
                "limit_stiffness": "start.limit_stiffness", "limit_damping": "start.limit_damping", "model": "start.model_id"}


class _Session:
    def __init__(self, core: Core, s: control_pb2.SessionStart):
        entry = core.registry.get(s.model_id, "start.model_id")
        self.key, self.model = entry.key, entry.model
        m = self.model
        if not 1 <= s.horizon <= core.limits.max_steps:
            raise WireError("INVALID_ARGUMENT", f"expected 1 <= horizon <= {core.limits.max_steps}, got {s.horizon}", "start.horizon")
        if not (np.isfinite(s.dt) and s.dt > 0):
            raise WireError("INVALID_ARGUMENT", f"expected dt > 0, got {s.dt}", "start.dt")
        self.T, self.dt = int(s.horizon), float(s.dt)
        self.integrator = core.integrator(s.integrator, "start.integrator")
        u = core.tensor(s.controls, "start.controls", required=False)
        if u is None:
            u = np.zeros((self.T, m.nu))
        elif u.shape != (self.T, m.nu):
            raise WireError("INVALID_ARGUMENT", f"expected shape ({self.T}, {m.nu}), got {u.shape}", "start.controls")
        self.u = np.array(u, dtype=np.float64)
        self.plan_mode = s.mode == control_pb2.FEEDBACK_PLAN
        if s.mode not in (control_pb2.CONTROL_MODE_UNSPECIFIED, control_pb2.LINEARIZATION, control_pb2.FEEDBACK_PLAN):
            raise WireError("INVALID_ARGUMENT", f"unknown mode {s.mode}", "start.mode")
        self.kw = {k: getattr(s, k) for k in ("limit_stiffness", "limit_damping") if s.HasField(k)}
        for k, v in self.kw.items():
            if not (np.isfinite(v) and v >= 0):
                raise WireError("INVALID_ARGUMENT", f"expected a finite number >= 0, got {v}", f"start.{k}")
        if not (np.isfinite(s.regularization) and s.regularization >= 0):
            raise WireError("INVALID_ARGUMENT", f"expected a finite number >= 0, got {s.regularization}",
                            "start.regularization")
        self.iterations = s.iterations or 1
        if not 1 <= self.iterations <= 100:
            raise WireError("INVALID_ARGUMENT", f"expected 1 <= iterations <= 100, got {s.iterations}", "start.iterations")
        self.mu = s.regularization or 1e-6
        self.cost = core.cost(s.cost, "start.cost") if self.plan_mode else None
        self.moving: dict = {}  # reference name -> (trajectory, rows per tick)
        self.ticks = 0
        if self.plan_mode:
            if m.nu == 0:
                raise WireError("INVALID_ARGUMENT", "FEEDBACK_PLAN needs a model with actuators", "start.mode")
            for name, tail, rows in (("q_ref", 1, self.T + 1), ("qd_ref", 1, self.T + 1), ("u_ref", 1, self.T),
                                     ("frame_ref", 2, self.T + 1)):
                a = getattr(self.cost, name)
                if a is not None and np.ndim(a) == tail + 1 and np.shape(a)[0] > rows:
                    self.moving[name] = (np.asarray(a, np.float64), rows)

    def cost_at(self, n: int) -> simad.QuadraticCost:
        """The cost of tick n: moving references windowed to rows n .. n + rows - 1 (last row held)."""
        if not self.moving:
            return self.cost
        win = {name: a[np.minimum(n + np.arange(rows), len(a) - 1)] for name, (a, rows) in self.moving.items()}
        return dataclasses.replace(self.cost, **win)

    async def tick(self, core: Core, context, q, qd, u) -> control_pb2.ControlReply:
        m = self.model
        if u is not None:
            if u.shape != (self.T, m.nu):
                raise WireError("INVALID_ARGUMENT", f"expected shape ({self.T}, {m.nu}), got {u.shape}", "tick.controls")
            self.u = np.array(u, dtype=np.float64)
        if self.plan_mode:
            p = await core.run(context, "ilqr", self.key, q, qd, self.u, self.dt, self.cost_at(self.ticks),
                               iterations=self.iterations, integrator=self.integrator, mu=self.mu, **self.kw)
            self.mu = p.mu
            self.ticks += 1
            self.u = shift(p.k)
            reply = control_pb2.ControlReply()
            reply.plan.cost = p.cost
            fill(reply.plan, k=p.k, gains=p.gains, q_ref=p.q_ref, qd_ref=p.qd_ref, u0=p.k[0])
            return reply
        tq, tqd, tu, A, B = await core.run(context, "linearize_along", self.key, q, qd, self.u, self.dt,
                                           self.integrator, **self.kw)
        self.u = shift(self.u)
        reply = control_pb2.ControlReply()
        fill(reply.linearization, q=tq, qd=tqd, u=tu, a=A, b=B)
        return reply


class ControlService:
    def __init__(self, core: Core):
        self.core, self.metrics = core, core.metrics

    async def Session(self, request_iterator, context):
        session, t_open = None, time.perf_counter()
        code, info = "OK", {}
        try:
            self.core.check_ready()
            async for req in request_iterator:
                t0 = time.perf_counter()
                kind = req.WhichOneof("body")
                if kind == "start":
                    if session is not None:
                        raise WireError("FAILED_PRECONDITION", "the session has already started", "start")
                    # a shared store: an id loaded through another server is loaded here first (a no-op otherwise)
                    await self.core.registry.resolve(req.start.model_id, "start.model_id")
                    session = _Session(self.core, req.start)
                    if session.plan_mode:  # the cost is checked against the model now, not at the first tick
                        try:
                            await self.core.run(context, "check_cost", session.key, session.cost_at(0), session.T)
                        except simad.InputError as e:
                            raise WireError("INVALID_ARGUMENT", str(e).split(": ", 1)[-1], f"start.{e.field}") from None
                    info.update(model=req.start.model_id, T=session.T)
                    m = session.model
                    yield control_pb2.ControlReply(ready=control_pb2.SessionReady(nq=m.nq, nv=m.nv, nu=m.nu, horizon=session.T),
                                                   server_ms=(time.perf_counter() - t0) * 1e3)
                elif kind == "tick":
                    if session is None:
                        raise WireError("FAILED_PRECONDITION", "send `start` before the first tick", "tick")
                    tk = req.tick
                    q = self.core.tensor(tk.q, "tick.q")
                    qd = self.core.tensor(tk.qd, "tick.qd")
                    u = self.core.tensor(tk.controls, "tick.controls", required=False)
                    reply = await session.tick(self.core, context, q, qd, u)
                    reply.seq = tk.seq
                    reply.server_ms = (time.perf_counter() - t0) * 1e3
                    self.metrics.observe("ControlTick", "OK", time.perf_counter() - t0)
                    yield reply
                else:
                    raise WireError("INVALID_ARGUMENT", "expected `start` or `tick`", "body")
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, grpc.aio.AbortError):
                raise
            c, msg, field = status_of(exc, TICK_FIELDS if session is not None else START_FIELDS)
            code = c.name
            await abort(context, c, msg, field)
        finally:
            self.metrics.observe("Session", code, time.perf_counter() - t_open, **info)
