"""The engine calls the simulation worker runs, by name (what crosses the process boundary is a
name, a model key and picklable numpy arguments, never code)."""

from __future__ import annotations

import numpy as np

import simad
from simad import models as shipped
from simad.kinematics import SERIAL_BELOW
from simad.mpc import ilqr


WARMUP_LEVELS = ("all", "serial", "none")


def warmup(level: str = "all") -> None:
    """Compiles (or loads from the offline cache) every kernel the services use.

    ``all``: the serial variant (batches below SERIAL_BELOW) and the parallel one of each;
    ``serial``: the serial variants only (about a quarter of the cold compile time; a first
    request with B >= SERIAL_BELOW then compiles its kernel); ``none``: nothing."""
    if level not in WARMUP_LEVELS:
        raise ValueError(f"warmup level must be one of {WARMUP_LEVELS}, got {level!r}")
    for B in {"all": (1, SERIAL_BELOW), "serial": (1,), "none": ()}[level]:
        _warmup_batch(B)


def _warmup_batch(B: int) -> None:
    m = shipped.planar_chain(2)
    q, v, u = np.zeros((B, 2)), np.zeros((B, 2)), np.zeros((B, 3, 2))
    simad.forward_kinematics(m, q)
    simad.frame_jacobian(m, q, ["link1"], return_pose=True)
    simad.inverse_kinematics(m, "link2", np.tile([0.5, 0.0, -1.0], (B, 1)), max_iters=5, restarts=1)
    simad.rollout(m, q, v, u, 0.01)
    simad.rollout(m, q, v, u, 0.01, gains=np.zeros((3, 2, 4)), q_ref=np.zeros((3, 2)))
    simad.rollout_vjp(m, q, v, u, 0.01, q_bar=np.ones((B, 4, 2)))
    cost = simad.QuadraticCost(terminal_q_weight=1.0, frames=("link2",), frame_weight=np.ones(1))
    simad.value_and_grad(m, q, v, u, 0.01, cost)
    simad.linearize(m, q, v, u[:, 0], 0.01)
    simad.linearize(m, q, v, u[:, 0], 0.01, "rk4")  # its own kernel (any integrator but Euler): ~40 s cold


def smoke_test(model: simad.Model) -> None:
    """Runs a model's kernels once (FK and one step) so a broken model fails at load, not later."""
    simad.forward_kinematics(model, model.qpos0)
    simad.rollout(model, model.qpos0, np.zeros(model.nv), np.zeros((1, model.nu)), 1e-3)


def linearize_along(model, q, qd, u, dt, integrator, **kw):
    """One LINEARIZATION control tick: the nominal rollout from (q, qd) and its A_t, B_t."""
    tr = simad.rollout(model, q, qd, u[None], dt, integrator, **kw)
    T = u.shape[0]
    A, B = simad.linearize(model, tr.q[0, :T], tr.qd[0, :T], tr.u[0], dt, integrator, **kw)
    return tr.q[0], tr.qd[0], tr.u[0], A, B


def check_cost(model, cost, T: int) -> None:
    """Validates a cost against a model and horizon (raises InputError naming 'cost.<field>')."""
    cost.bind(model, 1, T)


def runtime_info() -> dict:
    cfg = simad.runtime_config()
    return {"precision": cfg.precision, "backend": cfg.arch, "compile_mode": cfg.compile}


JOBS = {
    "forward_kinematics": simad.forward_kinematics,
    "frame_jacobian": simad.frame_jacobian,
    "inverse_kinematics": simad.inverse_kinematics,
    "rollout": simad.rollout,
    "rollout_vjp": simad.rollout_vjp,
    "value_and_grad": simad.value_and_grad,
    "linearize": simad.linearize,
    "rollout_jvp": simad.rollout_jvp,
    "contact_rollout": simad.contact_rollout,
    "contact_vjp": simad.contact_vjp,
    "contact_value_and_grad": simad.contact_value_and_grad,
    "ilqr": ilqr,
    "linearize_along": linearize_along,
    "smoke_test": smoke_test,
    "check_cost": check_cost,
    "warmup": warmup,
    "runtime_info": runtime_info,
}
