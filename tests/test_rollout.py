"""Rollouts, their gradients, linearizations and checkpointing.

References: a step-by-step numpy loop over ``forward_dynamics`` (the rollout kernel must equal
it), MuJoCo (same MJCF model, Euler integrator), Pinocchio's ``computeABADerivatives``,
energy conservation, and central finite differences in float64 for every gradient kind.
"""

import tracemalloc

import numpy as np
import precision_runs
import pytest
from reference import random_inertia, random_rotation

import simad
from simad import models

FD_EPS = 1e-6
GRAD_RTOL = 2e-6  # |fd - analytic| / max(1, |fd|)


def rich_model(rng, free=True):
    """A tree exercising every feature: free or hinged root, revolute with limits, damping and
    armature, prismatic, springs, a fixed joint, motors with and without control ranges, a servo,
    a site."""
    b = simad.ModelBuilder("rich", gravity=(0.3, -0.2, -9.81))

    def body(name, parent):
        m, com, inertia = random_inertia(rng)
        b.add_body(name, parent, pos=rng.normal(scale=0.4, size=3), rot=random_rotation(rng), mass=m, com=com,
                   inertia=inertia)

    body("base", 0)
    if free:
        b.add_joint("base", "root", "free")
    else:
        b.add_joint("base", "root", "revolute", axis=rng.normal(size=3), anchor=rng.normal(size=3) * 0.2, damping=0.1)
    body("l1", "base")
    b.add_joint("l1", "j1", "revolute", axis=rng.normal(size=3), anchor=rng.normal(size=3) * 0.2, range=(-0.3, 0.3),
                damping=0.2, armature=0.05)
    body("l2", "l1")
    b.add_joint("l2", "j2", "prismatic", axis=rng.normal(size=3), range=(-0.1, 0.2), damping=0.3, stiffness=5.0,
                springref=0.05)
    body("l3", "base")
    b.add_joint("l3", "j3", "revolute", axis=rng.normal(size=3), armature=0.1, stiffness=2.0, springref=0.3)
    body("l4", "l3")  # welded to l3
    body("l5", "l4")
    b.add_joint("l5", "j5", "revolute", axis=rng.normal(size=3))
    b.add_actuator("j1", gear=2.0, ctrl_range=(-1.0, 1.0))
    b.add_actuator("j2", gear=0.5)
    b.add_actuator("j5", gear=1.5, ctrl_range=(-0.5, 0.5))
    b.add_actuator("j3", gear=0.8, gain=1.5, bias=(0.2, -1.5, -0.3), name="servo3")  # a position servo
    b.add_site("tip", "l5", pos=(0.1, 0.2, 0.3))
    return b.finalize()


def _problem(m, rng, B=2, T=12, closed=False):
    q0 = simad.random_configuration(m, B, rng)
    kw = dict(q0=q0, qd0=rng.normal(size=(B, m.nv)) * 0.5, controls=rng.normal(size=(B, T, m.nu)) * 0.8)
    if closed:
        kw.update(gains=rng.normal(size=(B, T, m.nu, 2 * m.nv)) * 0.3,
                  q_ref=simad.random_configuration(m, B * T, rng).reshape(B, T, m.nq),
                  qd_ref=rng.normal(size=(B, T, m.nv)))
    return kw


# ---------------------------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("free", [True, False])
def test_rollout_equals_a_stepwise_loop_over_forward_dynamics(rng, free):
    m = rich_model(rng, free)
    p = _problem(m, rng, B=3, T=25)
    dt = 0.005
    tr = simad.rollout(m, p["q0"], p["qd0"], p["controls"], dt)
    q, v = p["q0"].copy(), p["qd0"].copy()
    for t in range(25):
        u = p["controls"][:, t]
        tau = np.zeros((3, m.nv))
        for a in range(m.nu):
            uc = np.clip(u[:, a], *m.actuator_ctrlrange[a]) if m.actuator_ctrllimited[a] else u[:, a]
            d, g, b0, b1, b2 = m.actuator_dof[a], m.actuator_gear[a], *m.actuator_bias[a]
            qa = m.jnt_qadr[m.dof_jnt[d]]
            tau[:, d] += g * (m.actuator_gain[a] * uc + b0 + b1 * g * q[:, qa] + b2 * g * v[:, d])
        for j in range(m.njnt):  # soft limits
            if m.jnt_limited[j] and m.jnt_type[j] != simad.JointType.FREE:
                qa, va = m.jnt_qadr[j], m.jnt_vadr[j]
                lo, hi = m.jnt_range[j]
                over = np.where(q[:, qa] > hi, q[:, qa] - hi, np.where(q[:, qa] < lo, q[:, qa] - lo, 0.0))
                tau[:, va] += np.where(over != 0, -1e4 * over - 1e2 * v[:, va], 0.0)
        v = v + dt * simad.forward_dynamics(m, q, v, tau)
        q = simad.integrate(m, q, v, dt)
        np.testing.assert_allclose(tr.q[:, t + 1], q, atol=1e-11)
        np.testing.assert_allclose(tr.qd[:, t + 1], v, atol=1e-10)
    np.testing.assert_array_equal(tr.u, p["controls"])


def test_reused_work_buffers_leave_no_trace_between_calls(rng):
    """Rollouts of the same sizes share work buffers (``rollout._Work.get``): a call after
    another model's, a policy rollout, a closed-loop one and a diverged one equals the
    same call in a fresh buffer bit for bit."""
    import importlib

    ro = importlib.import_module("simad.rollout")  # the module (simad.rollout is the function)
    m1, m2 = rich_model(rng, True), rich_model(np.random.default_rng(99), True)
    p1, p2 = _problem(m1, rng, B=3, T=20), _problem(m2, rng, B=3, T=20, closed=True)
    dt = 0.005
    ro._work_pool.__dict__.clear()
    first = simad.rollout(m1, p1["q0"], p1["qd0"], p1["controls"], dt)
    simad.rollout(m2, dt=dt, **p2)
    with pytest.raises(simad.NonFiniteError):
        simad.rollout(m1, p1["q0"], p1["qd0"], p1["controls"] * 1e12, dt)
    again = simad.rollout(m1, p1["q0"], p1["qd0"], p1["controls"], dt)
    assert np.array_equal(first.q, again.q) and np.array_equal(first.qd, again.qd)


def test_planar_chain_matches_mujoco_over_1000_euler_steps():
    mujoco = pytest.importorskip("mujoco")
    n, T, dt = 4, 1000, 0.01
    m = models.planar_chain(n)
    mj = mujoco.MjModel.from_xml_string(models.planar_chain_mjcf(n))
    mj.opt.integrator = mujoco.mjtIntegrator.mjINT_EULER
    mj.opt.timestep = dt
    d = mujoco.MjData(mj)
    q0 = 0.1 * (np.arange(n) + 1)
    d.qpos[:] = q0
    u = 0.2 * np.sin(0.05 * np.arange(T)[:, None] + 0.7 * np.arange(n)[None, :])
    for t in range(T):
        d.ctrl[:] = u[t]
        mujoco.mj_step(mj, d)
    tr = simad.rollout(m, q0, np.zeros(n), u, dt)
    assert np.max(np.abs(tr.q[0, -1] - d.qpos)) < 1e-9
    assert np.max(np.abs(tr.qd[0, -1] - d.qvel)) < 1e-8


def _energy(m, q, v):
    pos, rot = simad.forward_kinematics(m, q)
    com = pos[:, 1 : m.nbody] + np.einsum("bkij,kj->bki", rot[:, 1 : m.nbody], m.body_com[1:])
    pe = -np.einsum("bki,k,i->b", com, m.body_mass[1:], m.gravity)
    M = simad.mass_matrix(m, q)
    return pe + 0.5 * np.einsum("bi,bij,bj->b", v, M, v)


def test_energy_is_conserved_without_damping_or_torque():
    m = models.planar_chain(3)
    q0 = np.array([[0.5, -0.3, 0.8]])
    T, dt = 2000, 0.002
    e0 = _energy(m, q0, np.zeros((1, 3)))
    rk4 = simad.rollout(m, q0, np.zeros(3), np.zeros((T, 3)), dt, "rk4")
    drift = np.abs(_energy(m, rk4.q[0], rk4.qd[0]) - e0)
    assert drift.max() < 1e-6 * abs(e0[0]) + 1e-7  # RK4: bounded, tiny
    eu = simad.rollout(m, q0, np.zeros(3), np.zeros((T, 3)), dt)
    drift_eu = np.abs(_energy(m, eu.q[0], eu.qd[0]) - e0)
    assert drift_eu.max() < 0.05 * abs(e0[0])  # symplectic Euler: bounded oscillation, no blow-up
    assert drift.max() < drift_eu.max()


def test_soft_limit_pushes_a_joint_back_into_range():
    b = simad.ModelBuilder("stop", gravity=(0, 0, 0))
    b.add_body("l", 0, mass=1.0, com=(0.5, 0, 0), inertia=np.eye(3) * 0.01)
    b.add_joint("l", "j", "revolute", axis=(0, 0, 1), range=(-0.5, 0.5))
    m = b.finalize()
    tr = simad.rollout(m, [0.0], [2.0], np.zeros((400, 0)), 0.001)
    assert tr.q[0].max() < 0.6  # stopped shortly past the bound
    assert tr.qd[0, -1, 0] < 0  # and sent back
    free = simad.rollout(m, [0.0], [2.0], np.zeros((400, 0)), 0.001, limit_stiffness=0.0, limit_damping=0.0)
    assert free.q[0, -1, 0] > 0.79


def test_control_range_clips_the_motor_and_blocks_its_gradient(rng):
    m = rich_model(rng, free=False)
    p = _problem(m, rng, B=1, T=5)
    u = p["controls"].copy()
    u[0, :, 0] = 3.0  # far outside (-1, 1)
    tr1 = simad.rollout(m, p["q0"], p["qd0"], u, 0.01)
    u2 = u.copy()
    u2[0, :, 0] = 1.0
    tr2 = simad.rollout(m, p["q0"], p["qd0"], u2, 0.01)
    np.testing.assert_array_equal(tr1.q, tr2.q)
    g = simad.rollout_vjp(m, p["q0"], p["qd0"], u, 0.01, q_bar=np.ones((1, 6, m.nq)))
    assert np.all(g.controls[0, :, 0] == 0.0)
    assert np.any(g.controls[0, :, 1] != 0.0)


# ---------------------------------------------------------------------------------------------
# gradients against central finite differences (float64)
# ---------------------------------------------------------------------------------------------
def _fd_check(f, x, grad, rng, n=5, sym=False, skip_world=False):
    worst = 0.0
    for _ in range(n):
        idx = tuple(int(rng.integers(0, s)) for s in x.shape)
        if skip_world and idx[0] == 0:
            idx = (1,) + idx[1:]
        E = np.zeros_like(x)
        E[idx] = FD_EPS
        expect = grad[idx]
        if sym:  # a symmetric parameter moves (i, j) and (j, i) together
            t = idx[:-2] + (idx[-1], idx[-2])
            E[t] = FD_EPS
            expect = grad[idx] + (grad[t] if t != idx else 0.0)
        num = (f(x + E) - f(x - E)) / (2 * FD_EPS)
        worst = max(worst, abs(num - expect) / max(1.0, abs(num)))
    return worst


@pytest.mark.parametrize("free", [True, False])
@pytest.mark.parametrize("integrator", ["semi_implicit_euler", "rk4"])
@pytest.mark.parametrize("closed", [False, True])
def test_rollout_vjp_matches_finite_differences(rng, free, integrator, closed):
    m = rich_model(rng, free)
    T, dt = 10, 0.01
    p = _problem(m, rng, B=2, T=T, closed=closed)
    wq = rng.normal(size=(2, T + 1, m.nq))
    wv = rng.normal(size=(2, T + 1, m.nv))

    def loss(model=m, **over):
        kw = dict(p, **over)
        tr = simad.rollout(model, kw.pop("q0"), kw.pop("qd0"), kw.pop("controls"), dt, integrator, **kw)
        return np.sum(tr.q * wq) + np.sum(tr.qd * wv)

    g = simad.rollout_vjp(m, p["q0"], p["qd0"], p["controls"], dt, wq, wv, integrator=integrator,
                          gains=p.get("gains"), q_ref=p.get("q_ref"), qd_ref=p.get("qd_ref"))
    errs = {
        "q0": _fd_check(lambda x: loss(q0=x), p["q0"], g.q0, rng),
        "qd0": _fd_check(lambda x: loss(qd0=x), p["qd0"], g.qd0, rng),
        "controls": _fd_check(lambda x: loss(controls=x), p["controls"], g.controls, rng),
    }
    if closed:
        errs["gains"] = _fd_check(lambda x: loss(gains=x), p["gains"], g.gains, rng)
    for name in ("body_mass", "body_com", "body_inertia", "body_pos", "dof_damping", "dof_armature", "dof_stiffness",
                 "gravity", "actuator_gear"):
        P = np.asarray(getattr(m, name), dtype=float)
        errs[name] = _fd_check(lambda x, name=name: loss(model=m.replace(**{name: x})), P, g.params[name], rng, n=3,
                               sym=name == "body_inertia", skip_world=name.startswith("body"))
    for name in ("geom_friction", "geom_size"):
        assert np.all(g.params[name] == 0.0)  # no contacts in this pipeline yet: no dependence
    bad = {k: v for k, v in errs.items() if not v < GRAD_RTOL}
    assert not bad, f"gradient mismatch vs finite differences: {bad}"


def test_value_and_grad_of_a_quadratic_cost(rng):
    m = rich_model(rng, free=True)
    T, dt = 8, 0.01
    p = _problem(m, rng, B=2, T=T)
    cost = simad.QuadraticCost(q_weight=rng.uniform(0, 1, m.nq), q_ref=rng.normal(size=(T + 1, m.nq)),
                               terminal_q_weight=rng.uniform(0, 2, m.nq), qd_weight=0.3,
                               terminal_qd_weight=rng.uniform(0, 1, m.nv), u_weight=rng.uniform(0, 1, m.nu),
                               u_ref=rng.normal(size=m.nu), frames=["tip", "l2"], frame_weight=[1.0, 0.5],
                               frame_ref=rng.normal(size=(2, 3)), terminal_frame_weight=[3.0, 0.0])

    def value(q0=p["q0"], qd0=p["qd0"], controls=p["controls"]):
        tr = simad.rollout(m, q0, qd0, controls, dt)
        pos, _ = simad.forward_kinematics(m, tr.q.reshape(-1, m.nq))
        pos = pos.reshape(2, T + 1, m.nframe, 3)[:, :, [m.frame_id("tip"), m.frame_id("l2")]]
        d = tr.q - cost.q_ref[None]
        run = 0.5 * np.sum(cost.q_weight * d[:, :T] ** 2, (1, 2)) + 0.5 * 0.3 * np.sum(tr.qd[:, :T] ** 2, (1, 2))
        run += 0.5 * np.sum(cost.u_weight * (tr.u - cost.u_ref) ** 2, (1, 2))
        fd = pos - cost.frame_ref
        run += 0.5 * np.sum(np.array([1.0, 0.5])[:, None] * fd[:, :T] ** 2, (1, 2, 3))
        term = 0.5 * np.sum(cost.terminal_q_weight * d[:, T] ** 2, 1)
        term += 0.5 * np.sum(cost.terminal_qd_weight * tr.qd[:, T] ** 2, 1)
        term += 0.5 * np.sum(np.array([3.0, 0.0])[:, None] * fd[:, T] ** 2, (1, 2))
        return run + term

    g = simad.value_and_grad(m, p["q0"], p["qd0"], p["controls"], dt, cost)
    np.testing.assert_allclose(g.loss, value(), rtol=1e-12)
    errs = [_fd_check(lambda x: value(q0=x).sum(), p["q0"], g.q0, rng),
            _fd_check(lambda x: value(qd0=x).sum(), p["qd0"], g.qd0, rng),
            _fd_check(lambda x: value(controls=x).sum(), p["controls"], g.controls, rng)]
    assert max(errs) < GRAD_RTOL, errs
    # checkpointing changes nothing, to the bit
    g2 = simad.value_and_grad(m, p["q0"], p["qd0"], p["controls"], dt, cost, checkpoint_every=3)
    assert g2.checkpoint_every == 3
    np.testing.assert_array_equal(g2.controls, g.controls)
    np.testing.assert_allclose(g2.loss, g.loss, rtol=1e-13)  # summed per segment: another order


def test_reference_problem_gradient_matches_finite_differences():
    n, T, dt = 7, 200, 0.01
    m = models.planar_chain(n)
    u = 0.2 * np.sin(0.05 * np.arange(T)[:, None] + 0.7 * np.arange(n)[None, :])
    q0 = 0.1 * (np.arange(n) + 1)
    g = simad.value_and_grad(m, q0, np.zeros(n), u, dt, simad.QuadraticCost(terminal_q_weight=2.0))
    for t, i in ((0, 0), (57, 3), (199, 6)):
        e = np.zeros_like(u)
        e[t, i] = FD_EPS
        lp = np.sum(simad.rollout(m, q0, np.zeros(n), u + e, dt).q[0, -1] ** 2)
        lm = np.sum(simad.rollout(m, q0, np.zeros(n), u - e, dt).q[0, -1] ** 2)
        assert abs((lp - lm) / (2 * FD_EPS) - g.controls[0, t, i]) < 1e-6


# ---------------------------------------------------------------------------------------------
# checkpointing
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("integrator", ["semi_implicit_euler", "rk4"])
def test_checkpointed_gradient_equals_the_full_tape(rng, integrator):
    m = rich_model(rng, free=True)
    T = 40
    p = _problem(m, rng, B=3, T=T, closed=True)
    wq = rng.normal(size=(3, T + 1, m.nq))
    args = (m, p["q0"], p["qd0"], p["controls"], 0.01, wq, None)
    kw = dict(integrator=integrator, gains=p["gains"], q_ref=p["q_ref"], qd_ref=p["qd_ref"])
    full = simad.rollout_vjp(*args, **kw)
    assert full.checkpoint_every == T
    for K in (1, 7, 39):
        ck = simad.rollout_vjp(*args, checkpoint_every=K, **kw)
        assert ck.checkpoint_every == K
        for a, b in ((ck.q0, full.q0), (ck.qd0, full.qd0), (ck.controls, full.controls), (ck.gains, full.gains)):
            assert np.max(np.abs(a - b)) <= 1e-12
        for k in (k for k in full.params if full.params[k].size):
            assert np.max(np.abs(ck.params[k] - full.params[k])) <= 1e-12 * max(1.0, np.abs(full.params[k]).max())


@pytest.mark.parametrize("integrator", ["semi_implicit_euler", "rk4"])
@pytest.mark.parametrize("free", [True, False])
def test_the_stage_tape_gives_the_recomputed_gradient(rng, integrator, free, monkeypatch):
    from simad import diff

    m = rich_model(rng, free)
    T = 15
    p = _problem(m, rng, B=3, T=T, closed=True)
    wq, wv = rng.normal(size=(3, T + 1, m.nq)), rng.normal(size=(3, T + 1, m.nv))
    args = (m, p["q0"], p["qd0"], p["controls"], 0.01, wq, wv)
    kw = dict(integrator=integrator, gains=p["gains"], q_ref=p["q_ref"], qd_ref=p["qd_ref"])
    used = []
    real = diff._stage_tape
    monkeypatch.setattr(diff, "_stage_tape", lambda *a: used.append(real(*a)) or used[-1])
    taped = simad.rollout_vjp(*args, **kw)
    assert used and used[-1] is not None and used[-1][0].shape[3] == (96 if free else 31)
    monkeypatch.setattr(diff, "TAPE_STAGES", False)
    recomputed = simad.rollout_vjp(*args, **kw)
    assert used[-1] is None
    for a, b in ((taped.q0, recomputed.q0), (taped.qd0, recomputed.qd0), (taped.controls, recomputed.controls),
                 (taped.gains, recomputed.gains)):
        assert np.max(np.abs(a - b)) <= 1e-11 * max(1.0, np.abs(b).max())  # the same arithmetic, other inlining
    for k in (k for k in recomputed.params if recomputed.params[k].size):
        assert np.max(np.abs(taped.params[k] - recomputed.params[k])) <= 1e-11 * max(1.0, np.abs(recomputed.params[k]).max())


def test_the_stage_tape_is_taken_only_within_the_memory_budget(rng):
    from simad import diff
    from simad.rollout import LIMIT_DAMPING, LIMIT_STIFFNESS, prepare

    m = rich_model(rng, True)
    T, B = 50, 4
    p = _problem(m, rng, B=B, T=T)
    inp = prepare(m, p["q0"], p["qd0"], p["controls"], 0.01, "rk4", None, None, None, LIMIT_STIFFNESS, LIMIT_DAMPING)
    tape = diff.tape_bytes(m, B, T, 1, 8)
    assert tape == B * T * 4 * (m.nbody * 96 + m.nv) * 8
    states = (T + 1) * B * (2 * (m.nq + m.nv) + 2 * m.nu) * 8
    assert diff._stage_tape(m, inp, B, T, T, np.dtype(np.float64), states + tape) is not None
    assert diff._stage_tape(m, inp, B, T, T, np.dtype(np.float64), states + tape - 1) is None
    # within a budget that holds the trajectory but not the tape: recomputed, the same gradient
    g_small = simad.rollout_vjp(m, p["q0"], p["qd0"], p["controls"], 0.01, q_bar=np.ones((B, T + 1, m.nq)),
                                integrator="rk4", memory_budget=states + tape - 1)
    g_big = simad.rollout_vjp(m, p["q0"], p["qd0"], p["controls"], 0.01, q_bar=np.ones((B, T + 1, m.nq)),
                              integrator="rk4", memory_budget=states + tape)
    assert g_small.checkpoint_every == g_big.checkpoint_every == T
    assert np.max(np.abs(g_small.controls - g_big.controls)) <= 1e-11 * max(1.0, np.abs(g_big.controls).max())


def test_100k_step_horizon_at_batch_64_stays_within_the_memory_budget():
    m = models.planar_chain(1)
    B, T = 64, 100_000
    u = np.tile(0.1 * np.sin(0.01 * np.arange(T))[None, :, None], (B, 1, 1))
    q0 = np.linspace(0.1, 0.5, B)[:, None]
    budget = 8 << 20
    full_tape = B * (T + 1) * (m.nq + m.nv) * 8
    assert full_tape > 4 * budget
    # the same kernels on a short horizon first: their compile (Python frontend) stays out of
    # the traced region, where tracemalloc would slow it several-fold
    simad.value_and_grad(m, q0, np.zeros((B, 1)), u[:, :50], 0.01, simad.QuadraticCost(terminal_q_weight=2.0),
                         checkpoint_every=10)
    tracemalloc.start()
    g = simad.value_and_grad(m, q0, np.zeros((B, 1)), u, 0.01, simad.QuadraticCost(terminal_q_weight=2.0),
                             memory_budget=budget)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert g.checkpoint_every < T
    # beyond the budget: the (B, T, nu) gradient itself and transient input checks
    assert peak < budget + 1.5 * u.nbytes < full_tape, peak
    assert np.all(np.isfinite(g.controls)) and np.any(g.controls != 0)
    full = simad.value_and_grad(m, q0, np.zeros((B, 1)), u, 0.01, simad.QuadraticCost(terminal_q_weight=2.0),
                                memory_budget=4 * full_tape)  # the whole tape (~100 MB) in one segment
    assert full.checkpoint_every == T
    assert np.max(np.abs(full.controls - g.controls)) <= 1e-12
    np.testing.assert_allclose(full.loss, g.loss, rtol=1e-13)  # summed per segment: another order


def test_memory_budget_chooses_the_segment():
    from simad.diff import choose_segment

    assert choose_segment(1000, 4, 7, 7, 7, 8, memory_budget=1 << 30) == 1000
    K = choose_segment(100_000, 64, 7, 7, 7, 8, memory_budget=64 << 20)
    assert 1 < K < 100_000
    with pytest.raises(simad.InputError, match="memory_budget"):
        choose_segment(100_000, 64, 7, 7, 7, 8, memory_budget=1000)


# ---------------------------------------------------------------------------------------------
# linearization and forward mode
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("free", [True, False])
@pytest.mark.parametrize("integrator", ["semi_implicit_euler", "rk4"])
def test_linearize_matches_finite_differences_in_the_tangent_space(rng, free, integrator):
    m = rich_model(rng, free)
    N, dt, nv = 3, 0.01, m.nv
    q = simad.random_configuration(m, N, rng)
    v = rng.normal(size=(N, nv))
    u = rng.normal(size=(N, m.nu)) * 0.8
    A, B = simad.linearize(m, q, v, u, dt, integrator)
    assert A.shape == (N, 2 * nv, 2 * nv) and B.shape == (N, 2 * nv, m.nu)

    def step(q, v, u):
        tr = simad.rollout(m, q, v, u[:, None], dt, integrator)
        return tr.q[:, 1], tr.qd[:, 1]

    q1, v1 = step(q, v, u)

    def column(dq, dv, du):
        a1, b1 = step(simad.integrate(m, q, dq), v + dv, u + du)
        a2, b2 = step(simad.integrate(m, q, -dq), v - dv, u - du)
        dqo = (simad.difference(m, q1, a1) - simad.difference(m, q1, a2)) / (2 * FD_EPS)
        return np.concatenate([dqo, (b1 - b2) / (2 * FD_EPS)], 1)

    for k in range(2 * nv):
        e = np.zeros((N, 2 * nv))
        e[:, k] = FD_EPS
        np.testing.assert_allclose(A[:, :, k], column(e[:, :nv], e[:, nv:], 0 * u), atol=2e-6)
    for k in range(m.nu):
        du = np.zeros_like(u)
        du[:, k] = FD_EPS
        np.testing.assert_allclose(B[:, :, k], column(0 * v, 0 * v, du), atol=2e-6)


def test_linearize_matches_pinocchio_aba_derivatives(rng):
    pin = pytest.importorskip("pinocchio")
    from test_robots import _load, _maps  # noqa: PLC0415

    m, pm = _load("arm7")
    m = m.replace(dof_damping=np.zeros(m.nv), dof_armature=np.zeros(m.nv))  # Pinocchio's ABA has neither
    to_pin, vmap = _maps(m, pm)
    assert np.array_equal(vmap, np.arange(m.nv)) and pm.nq == m.nq
    dt, N = 0.01, 4
    q = simad.random_configuration(m, N, rng)
    v = rng.normal(size=(N, m.nv))
    u = rng.normal(size=(N, m.nu))
    A, B = simad.linearize(m, q, v, u, dt)
    data = pm.createData()
    n = m.nv
    for i in range(N):
        tau = np.zeros(n)
        for a in range(m.nu):
            tau[m.actuator_dof[a]] += m.actuator_gear[a] * u[i, a]
        pin.computeABADerivatives(pm, data, to_pin(q[i]), v[i], tau)
        dadq, dadv, Minv = data.ddq_dq.copy(), data.ddq_dv.copy(), data.Minv.copy()
        Minv = np.triu(Minv) + np.triu(Minv, 1).T
        G = np.zeros((n, m.nu))
        for a in range(m.nu):
            G[m.actuator_dof[a], a] = m.actuator_gear[a]
        Ap = np.block([[np.eye(n) + dt * dt * dadq, dt * (np.eye(n) + dt * dadv)], [dt * dadq, np.eye(n) + dt * dadv]])
        Bp = np.vstack([dt * dt * Minv @ G, dt * Minv @ G])
        np.testing.assert_allclose(A[i], Ap, atol=1e-9)
        np.testing.assert_allclose(B[i], Bp, atol=1e-9)


def test_rollout_jvp_is_the_transpose_of_rollout_vjp(rng):
    m = rich_model(rng, free=False)
    T = 15
    p = _problem(m, rng, B=2, T=T)
    dq0, dv0, du = rng.normal(size=(2, m.nv)), rng.normal(size=(2, m.nv)), rng.normal(size=(2, T, m.nu))
    tr, dq, dv = simad.rollout_jvp(m, p["q0"], p["qd0"], p["controls"], 0.01, dq0, dv0, du)
    wq, wv = rng.normal(size=(2, T + 1, m.nq)), rng.normal(size=(2, T + 1, m.nv))
    g = simad.rollout_vjp(m, p["q0"], p["qd0"], p["controls"], 0.01, wq, wv)
    lhs = np.sum(wq * dq) + np.sum(wv * dv)  # no free joint: tangent == coordinates
    rhs = np.sum(g.q0 * dq0) + np.sum(g.qd0 * dv0) + np.sum(g.controls * du)
    assert abs(lhs - rhs) < 1e-9 * max(1.0, abs(lhs))


# ---------------------------------------------------------------------------------------------
# errors, NaN reporting, clipping
# ---------------------------------------------------------------------------------------------
def test_non_finite_rollout_names_the_first_env_step_and_field():
    m = models.planar_chain(2)
    q0 = np.zeros((3, 2))
    v0 = np.zeros((3, 2))
    v0[1] = 1e200  # env 1 overflows
    with pytest.raises(simad.NonFiniteError) as e:
        simad.rollout(m, q0, v0, np.zeros((3, 5, 2)), 0.01)
    assert e.value.env == 1 and e.value.step >= 1 and e.value.field in ("q", "qd")


def test_gradient_clipping_is_explicit_and_reported(rng):
    m = models.planar_chain(2)
    u = rng.normal(size=(1, 20, 2))
    g = simad.rollout_vjp(m, [0.1, 0.2], [0, 0], u, 0.01, q_bar=np.ones((1, 21, 2)))
    c = simad.rollout_vjp(m, [0.1, 0.2], [0, 0], u, 0.01, q_bar=np.ones((1, 21, 2)), clip_norm=g.norm / 10)
    assert not g.clipped and c.clipped and c.norm == pytest.approx(g.norm)
    np.testing.assert_allclose(c.controls, g.controls / 10, rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(controls=np.zeros((5, 3))), "controls"),
        (dict(dt=0.0), "dt"),
        (dict(dt=float("nan")), "dt"),
        (dict(integrator="leapfrog"), "integrator"),
        (dict(q0=np.zeros(3)), "q0"),
        (dict(qd0=np.full(2, np.nan)), "qd0"),
        (dict(gains=np.zeros((5, 2, 4))), "q_ref"),
        (dict(gains=np.zeros((5, 2, 3)), q_ref=np.zeros((5, 2))), "gains"),
        (dict(controls=np.zeros((2_000_000_000 // 16, 2))), "controls"),
    ],
)
def test_bad_rollout_input_names_the_field(kwargs, field):
    m = models.planar_chain(2)
    args = dict(q0=np.zeros(2), qd0=np.zeros(2), controls=np.zeros((5, 2)), dt=0.01)
    args.update(kwargs)
    with pytest.raises(simad.InputError) as e:
        simad.rollout(m, args.pop("q0"), args.pop("qd0"), args.pop("controls"), args.pop("dt"), **args)
    assert e.value.field == field


def test_bad_gradient_input_names_the_field():
    m = models.planar_chain(2)
    a = (m, np.zeros(2), np.zeros(2), np.zeros((5, 2)), 0.01)
    for kw, field in ((dict(q_bar=np.zeros((1, 5, 2))), "q_bar"), (dict(params=["mass"]), "params"),
                      (dict(checkpoint_every=0), "checkpoint_every"), (dict(clip_norm=-1.0), "clip_norm"),
                      (dict(memory_budget=10), "memory_budget")):
        with pytest.raises(simad.InputError) as e:
            simad.rollout_vjp(*a, **kw)
        assert e.value.field == field
    with pytest.raises(simad.InputError) as e:
        simad.value_and_grad(*a, simad.QuadraticCost(q_weight=np.ones(3)))
    assert e.value.field == "cost.q_weight"
    with pytest.raises(simad.InputError) as e:
        simad.linearize(m, np.zeros((4, 2)), np.zeros((3, 2)), np.zeros((4, 2)), 0.01)
    assert e.value.field == "qd"


# ---------------------------------------------------------------------------------------------
# the same gradients in float32 and under Taichi's debug mode (fresh processes: both are
# process-wide runtime settings)
# ---------------------------------------------------------------------------------------------
def test_float32_and_debug_mode_agree_with_float64(tmp_path):
    # debug: bounds and access checks. The two runs compile from empty caches for ~1.5 min; the
    # session starts them in the background after the prewarm (conftest), so they compile on the
    # core the serial tests leave idle; run alone, this test starts them itself.
    runs = precision_runs.take() or precision_runs.start(tmp_path)
    ns: dict = {}
    exec(compile(precision_runs.SUB, "reference_run", "exec"), ns)  # the same computation in this (f64) process
    ns["run"](tmp_path / "ref.npy")
    ref = np.load(tmp_path / "ref.npy")
    dbg, f32 = (precision_runs.finish(*r) for r in runs)
    np.testing.assert_allclose(dbg, ref, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(f32, ref, rtol=2e-3, atol=2e-4)


def test_a_blown_up_integration_is_reported_not_returned():
    # a stiff soft limit on a very light link with a large step: explicit integration explodes
    # to huge but finite numbers, which must be reported like NaN (first env, step, field)
    b = simad.ModelBuilder("light")
    b.add_body("link", 0, mass=1e-3, com=(0, 0, -0.05), inertia=(1e-6, 1e-6, 1e-7))
    b.add_joint("link", "hinge", "revolute", axis=(0, 1, 0), range=(-0.1, 0.1))
    m = b.finalize()
    q0 = np.array([[0.0], [0.5]])  # env 1 starts outside the range
    with pytest.raises(simad.NonFiniteError) as e:
        simad.rollout(m, q0, np.zeros((2, 1)), np.zeros((2, 200, 0)), 0.01)
    assert e.value.env == 1 and e.value.field in ("qd", "q") and 1 <= e.value.step <= 200
