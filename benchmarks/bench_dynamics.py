"""Forward dynamics, rollout gradients and step linearizations of a planar chain, beside
MuJoCo and Pinocchio, and cold starts.

Run: python benchmarks/bench_dynamics.py [--json out.json] [--quick]

Reference problem: ``simad.models.planar_chain(n)`` (MuJoCo: ``planar_chain_mjcf(n)``, Euler,
which is semi-implicit here since nothing is damped; Pinocchio: the same chain of revolute-Y
joints built by hand), f64, dt = 0.01, semi-implicit Euler (v' = v + dt a, q' = q + dt v'),
T = 1000 steps, torques u[t, i] = 0.2 sin(0.05 t + 0.7 i), q0[i] = 0.1 (i + 1), v0 = 0, env b
starting at q0 + 1e-3 b, loss L = sum_i q_T[i]^2.

Figures:
1. forward env-steps per second at B = 1 and 256 for n = 2 and 7: ``simad.rollout`` (one
   launch), MuJoCo's ``rollout`` module (persistent pool, 2 threads), Pinocchio's
   ``abaInParallel`` (2 threads, batch as columns) chained over T steps in a Python loop;
   final states are cross-checked between the engines (at n = 7, B = 256 a few envs are
   chaotic over 1,000 steps: ~1e-5 spread, also between MuJoCo and Pinocchio). Run on an
   idle machine: Pinocchio's 2 OpenMP threads per step fall to ms per call when another
   process holds a core.
2. dL/du for all T x n torques, B = 1, n = 7: ``simad.value_and_grad``, its ratio to the
   forward rollout of the same problem, Pinocchio's analytic adjoint (forward loop, then a
   backward loop over ``computeABADerivatives``) and MuJoCo's chained ``mjd_transitionFD``;
   the gradients are compared with simad's.
3. one-step linearization (A = dx'/dx, 2n x 2n; B = dx'/du, 2n x n; x = (q, v)) for n = 7:
   ``simad.linearize`` at one point and amortised over 1,000 points of a trajectory,
   Pinocchio ``computeABADerivatives`` + assembling A, B in numpy, MuJoCo ``mjd_transitionFD``
   (forward and centred differences); simad's A, B are compared with Pinocchio's.
4. peak resident memory (this process; a simad-only fresh interpreter) and first- and
   second-call times (the first includes compiling or loading from the offline cache) of
   rollout, value_and_grad and linearize in fresh interpreters: with an empty temporary
   offline cache (skipped with --quick: it compiles everything, minutes on 2 cores) and with
   the default cache, warmed by a fresh interpreter run before everything else (Taichi writes
   the cache when a process exits).

Targets (f64, 2-core machine): B = 256, n = 7 forward >= 2M env-steps/s (Pinocchio about 1.1M,
MuJoCo about 0.85M); gradient <= 10 ms and <= 3x the forward rollout; linearization amortised
<= 5 us per step.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import best_rate, machine, run_python, table, write_json  # noqa: E402

DT = 0.01
T_REF = 1000
NTHREAD = 2
COST_WEIGHT = 2.0  # QuadraticCost(terminal_q_weight=2): 0.5 * 2 * q_T^2 = L
TARGET_FWD = 2e6
TARGET_GRAD_S = 10e-3
TARGET_GRAD_RATIO = 3.0
TARGET_LIN_S = 5e-6


def problem(n: int, B: int, T: int):
    """(q0 (B, n), v0 (B, n), u (T, n)) of the reference problem."""
    t = np.arange(T, dtype=np.float64)[:, None]
    i = np.arange(n, dtype=np.float64)[None, :]
    u = 0.2 * np.sin(0.05 * t + 0.7 * i)
    q0 = 0.1 * (np.arange(n) + 1.0)[None, :] + 1e-3 * np.arange(B, dtype=np.float64)[:, None]
    return q0, np.zeros((B, n)), u


def seconds(fn, repeats: int, min_time: float) -> float:
    """Median seconds per call of fn()."""
    return 1.0 / best_rate(fn, 1, repeats=repeats, min_time=min_time)["median_per_s"]


def peak_rss_mb() -> float:
    """Peak resident set of this process, MB: VmHWM (its own address space; ru_maxrss would also
    count the parent's peak inherited across fork + exec), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fmt_s(s) -> str:
    if s is None:
        return "n/a"
    if s >= 1.0:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.2f} us"


def ok(flag) -> str:
    return "n/a" if flag is None else ("yes" if flag else "NO")


# ---------------------------------------------------------------------------------------------
# the three engines
# ---------------------------------------------------------------------------------------------
def pin_chain(n: int):
    import pinocchio as pin

    pm = pin.Model()
    pm.gravity = pin.Motion(np.array([0.0, 0.0, -9.81]), np.zeros(3))
    inertia = pin.Inertia(1.0, np.array([0.0, 0.0, -0.5]), np.diag([1 / 12, 1 / 12, 1e-3]))
    parent = 0
    for i in range(n):
        placement = pin.SE3(np.eye(3), np.array([0.0, 0.0, -1.0 if i else 0.0]))
        parent = pm.addJoint(parent, pin.JointModelRY(), placement, f"joint{i + 1}")
        pm.appendBodyToJoint(parent, inertia, pin.SE3.Identity())
    return pm


def mj_chain(n: int):
    import mujoco

    import simad.models

    m = mujoco.MjModel.from_xml_string(simad.models.planar_chain_mjcf(n))
    m.opt.integrator = mujoco.mjtIntegrator.mjINT_EULER
    m.opt.timestep = DT
    return m


def mj_initial_states(m, q0, v0):
    import mujoco

    d = mujoco.MjData(m)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    out = np.empty((q0.shape[0], mujoco.mj_stateSize(m, spec)))
    for b in range(q0.shape[0]):
        mujoco.mj_resetData(m, d)
        d.qpos[:] = q0[b]
        d.qvel[:] = v0[b]
        mujoco.mj_getState(m, d, out[b], spec)
    return out


def pin_ab(pin, pm, pd, q, v, u, dt):
    """A, B of one semi-implicit Euler step from Pinocchio's analytic ABA derivatives."""
    da_dq, da_dv, minv = pin.computeABADerivatives(pm, pd, q, v, u)
    n = q.shape[0]
    eye = np.eye(n)
    A = np.empty((2 * n, 2 * n))
    A[n:, :n] = dt * da_dq
    A[n:, n:] = eye + dt * da_dv
    A[:n, :n] = eye + dt * A[n:, :n]
    A[:n, n:] = dt * A[n:, n:]
    B = np.empty((2 * n, n))
    B[n:] = dt * minv
    B[:n] = dt * B[n:]
    return A, B


# ---------------------------------------------------------------------------------------------
# 1. forward throughput
# ---------------------------------------------------------------------------------------------
def bench_forward(sizes, batches, T, repeats, min_time):
    import simad
    import simad.models

    try:
        import mujoco
        import mujoco.rollout
    except ImportError:
        mujoco = None
    try:
        import pinocchio as pin
    except ImportError:
        pin = None

    out = []
    roller = mujoco.rollout.Rollout(nthread=NTHREAD) if mujoco else None
    try:
        for n in sizes:
            model = simad.models.planar_chain(n)
            mm = mj_chain(n) if mujoco else None
            pm = pin_chain(n) if pin else None
            for B in batches:
                q0, v0, u = problem(n, B, T)
                row = {"n": n, "B": B, "T": T}
                final = {}

                def run_simad(q0=q0, v0=v0, u=u, model=model):
                    return simad.rollout(model, q0, v0, u, DT, integrator="semi_implicit_euler")

                row["simad"] = best_rate(run_simad, B * T, repeats=repeats, min_time=min_time)["median_per_s"]
                final["simad"] = run_simad().q[:, -1]

                if mujoco:
                    datas = [mujoco.MjData(mm) for _ in range(NTHREAD)]
                    x0 = mj_initial_states(mm, q0, v0)
                    ctrl = np.ascontiguousarray(u[None])  # (1, T, nu), tiled over the batch
                    state = np.empty((B, T, x0.shape[1]))
                    sens = np.empty((B, T, mm.nsensordata))

                    def run_mj(x0=x0, ctrl=ctrl, state=state, sens=sens, datas=datas, mm=mm):
                        roller.rollout(mm, datas, x0, ctrl, nstep=T, state=state, sensordata=sens)
                        return state

                    row["mujoco"] = best_rate(run_mj, B * T, repeats=repeats, min_time=min_time)["median_per_s"]
                    final["mujoco"] = run_mj()[:, -1, 1 : 1 + mm.nq].copy()

                if pin:
                    pool = pin.ModelPool(pm, NTHREAD)
                    tau = np.ascontiguousarray(np.broadcast_to(u[:, :, None], (T, n, B)))

                    def run_pin(q0=q0, tau=tau, pool=pool, B=B, n=n):
                        q = np.array(q0.T, order="C")  # a copy: q0.T is a contiguous view when B = 1
                        v = np.zeros((n, B))
                        a = np.empty((n, B))
                        for t in range(T):
                            pin.abaInParallel(NTHREAD, pool, q, v, tau[t], a)
                            v += DT * a
                            q += DT * v
                        return q

                    row["pinocchio"] = best_rate(run_pin, B * T, repeats=repeats, min_time=min_time)["median_per_s"]
                    final["pinocchio"] = run_pin().T

                    if B == 1:
                        pd = pm.createData()

                        def run_pin1(q0=q0, u=u, n=n, pd=pd, pm=pm):
                            q, v = q0[0].copy(), np.zeros(n)
                            for t in range(T):
                                v += DT * pin.aba(pm, pd, q, v, u[t])
                                q += DT * v
                            return q

                        row["pinocchio_aba_1thread"] = best_rate(run_pin1, T, repeats=repeats,
                                                                 min_time=min_time)["median_per_s"]
                row["max_abs_diff_qT"] = {k: float(np.abs(v - final["simad"]).max()) for k, v in final.items() if k != "simad"}
                if "mujoco" in final and "pinocchio" in final:  # the spread between the references
                    row["max_abs_diff_qT"]["mj-pin"] = float(np.abs(final["mujoco"] - final["pinocchio"]).max())
                out.append(row)
    finally:
        if roller is not None:
            roller.close()
    return out


# ---------------------------------------------------------------------------------------------
# 2. gradient of L w.r.t. all T x n torques
# ---------------------------------------------------------------------------------------------
def pin_gradient(pin, pm, pd, q0, u, dt):
    """L and dL/du by a forward loop storing the states and an adjoint loop over ABA derivatives."""
    T, n = u.shape
    qs, vs = np.empty((T, n)), np.empty((T, n))
    q, v = q0.copy(), np.zeros(n)
    for t in range(T):
        qs[t], vs[t] = q, v
        v = v + dt * pin.aba(pm, pd, q, v, u[t])
        q = q + dt * v
    gq, gv = 2.0 * q, np.zeros(n)  # dL/dq_T, dL/dv_T
    gu = np.empty((T, n))
    for t in range(T - 1, -1, -1):
        da_dq, da_dv, minv = pin.computeABADerivatives(pm, pd, qs[t], vs[t], u[t])
        wv = gv + dt * gq  # total adjoint of v_{t+1} (q_{t+1} = q_t + dt v_{t+1})
        w = dt * wv  # dL/da_t
        gu[t] = minv.T @ w
        gq = gq + da_dq.T @ w
        gv = wv + da_dv.T @ w
    return float(q @ q), gu


def mj_gradient(mujoco, m, d, q0, u, centered=False, eps=1e-6):
    """dL/du by chaining MuJoCo's finite-differenced transition matrices backwards."""
    T, nu = u.shape
    nv = m.nv
    qs, vs = np.empty((T, m.nq)), np.empty((T, nv))
    mujoco.mj_resetData(m, d)
    d.qpos[:] = q0
    for t in range(T):
        qs[t], vs[t] = d.qpos, d.qvel
        d.ctrl[:] = u[t]
        mujoco.mj_step(m, d)
    lam = np.concatenate([2.0 * d.qpos, np.zeros(nv)])
    A, Bm = np.empty((2 * nv, 2 * nv)), np.empty((2 * nv, nu))
    gu = np.empty((T, nu))
    for t in range(T - 1, -1, -1):
        d.qpos[:], d.qvel[:], d.ctrl[:] = qs[t], vs[t], u[t]
        mujoco.mjd_transitionFD(m, d, eps, centered, A, Bm, None, None)
        gu[t] = Bm.T @ lam
        lam = A.T @ lam
    return gu


def bench_gradient(n, T, repeats, min_time):
    import simad
    import simad.models

    model = simad.models.planar_chain(n)
    q0, v0, u = problem(n, 1, T)
    cost = simad.QuadraticCost(terminal_q_weight=COST_WEIGHT)
    res = {"n": n, "T": T}

    def fwd():
        return simad.rollout(model, q0, v0, u, DT)

    def grad():
        return simad.value_and_grad(model, q0, v0, u, DT, cost)

    res["simad_forward_s"] = seconds(fwd, repeats, min_time)
    res["simad_grad_s"] = seconds(grad, repeats, min_time)
    res["ratio_grad_forward"] = res["simad_grad_s"] / res["simad_forward_s"]
    g = grad()
    g_simad = np.asarray(g.controls)[0]
    qT = fwd().q[0, -1]
    res["simad_loss"] = float(np.asarray(g.loss)[0])
    res["simad_loss_vs_rollout"] = abs(res["simad_loss"] - float(qT @ qT))

    try:
        import pinocchio as pin
    except ImportError:
        pin = None
    if pin:
        pm = pin_chain(n)
        pd = pm.createData()
        res["pinocchio_grad_s"] = seconds(lambda: pin_gradient(pin, pm, pd, q0[0], u, DT), repeats, min_time)
        loss, g_pin = pin_gradient(pin, pm, pd, q0[0], u, DT)
        res["pinocchio_loss"] = loss
        res["max_abs_diff_grad_vs_pinocchio"] = float(np.abs(g_simad - g_pin).max())
        res["max_abs_grad"] = float(np.abs(g_pin).max())
        res["loss_diff_vs_pinocchio"] = abs(loss - res["simad_loss"])
    try:
        import mujoco
    except ImportError:
        mujoco = None
    if mujoco:
        mm = mj_chain(n)
        md = mujoco.MjData(mm)
        res["mujoco_fd_grad_s"] = seconds(lambda: mj_gradient(mujoco, mm, md, q0[0], u), max(1, repeats // 2), min_time)
        g_mj = mj_gradient(mujoco, mm, md, q0[0], u)
        res["max_abs_diff_grad_mujoco_fd_vs_simad"] = float(np.abs(g_mj - g_simad).max())
    return res


# ---------------------------------------------------------------------------------------------
# 3. one-step linearization
# ---------------------------------------------------------------------------------------------
def bench_linearize(n, npoints, repeats, min_time):
    import simad
    import simad.models

    model = simad.models.planar_chain(n)
    q0, _, u = problem(n, 1, npoints)
    q_pt, v_pt, u_pt = q0[0], np.full(n, 0.1), u[0]
    traj = simad.rollout(model, q0, np.zeros((1, n)), u, DT)
    Q, V = traj.q[0, :npoints], traj.qd[0, :npoints]  # the npoints states where the controls act
    res = {"n": n, "points": npoints}

    try:
        import pinocchio as pin
    except ImportError:
        pin = None
    if pin:
        pm = pin_chain(n)
        pd = pm.createData()

        def pin_all():
            for k in range(npoints):
                pin_ab(pin, pm, pd, Q[k], V[k], u[k], DT)

        res["pinocchio_s_per_point"] = seconds(pin_all, repeats, min_time) / npoints
        A_pin, B_pin = pin_ab(pin, pm, pd, q_pt, v_pt, u_pt, DT)
        AB_traj = [pin_ab(pin, pm, pd, Q[k], V[k], u[k], DT) for k in range(npoints)]

    if hasattr(simad, "linearize"):
        res["simad_single_s"] = seconds(lambda: simad.linearize(model, q_pt[None], v_pt[None], u_pt[None], DT),
                                        repeats, min_time)
        res["simad_batch_s_per_point"] = seconds(lambda: simad.linearize(model, Q, V, u, DT), repeats, min_time) / npoints
        A, B = simad.linearize(model, q_pt[None], v_pt[None], u_pt[None], DT)
        A, B = np.asarray(A)[0], np.asarray(B)[0]
        if pin:
            res["max_abs_diff_A_vs_pinocchio"] = float(np.abs(A - A_pin).max())
            res["max_abs_diff_B_vs_pinocchio"] = float(np.abs(B - B_pin).max())
            At, Bt = simad.linearize(model, Q, V, u, DT)
            res["max_abs_diff_traj_A_vs_pinocchio"] = float(max(np.abs(np.asarray(At)[k] - AB_traj[k][0]).max()
                                                              for k in range(npoints)))
            res["max_abs_diff_traj_B_vs_pinocchio"] = float(max(np.abs(np.asarray(Bt)[k] - AB_traj[k][1]).max()
                                                              for k in range(npoints)))
    try:
        import mujoco
    except ImportError:
        mujoco = None
    if mujoco:
        mm = mj_chain(n)
        md = mujoco.MjData(mm)
        Am, Bmm = np.empty((2 * n, 2 * n)), np.empty((2 * n, n))
        for centered in (False, True):

            def mj_all(centered=centered):
                for k in range(npoints):
                    md.qpos[:], md.qvel[:], md.ctrl[:] = Q[k], V[k], u[k]
                    mujoco.mjd_transitionFD(mm, md, 1e-6, centered, Am, Bmm, None, None)

            key = "mujoco_fd_centered" if centered else "mujoco_fd_forward"
            res[key + "_s_per_point"] = seconds(mj_all, repeats, min_time) / npoints
            md.qpos[:], md.qvel[:], md.ctrl[:] = q_pt, v_pt, u_pt
            mujoco.mjd_transitionFD(mm, md, 1e-6, centered, Am, Bmm, None, None)
            if pin:
                res[key + "_max_abs_diff_AB_vs_pinocchio"] = float(max(np.abs(Am - A_pin).max(), np.abs(Bmm - B_pin).max()))
    return res


# ---------------------------------------------------------------------------------------------
# 4. cold starts and memory (fresh interpreters)
# ---------------------------------------------------------------------------------------------
COLD = r"""
import json, os, resource, time
t0 = time.perf_counter()
import numpy as np, simad, simad.models
simad.init(arch="cpu", precision="f64", cache_dir=os.environ.get("BENCH_DYN_CACHE") or None)
t1 = time.perf_counter()
n, T, B, dt = 7, 1000, 256, 0.01
model = simad.models.planar_chain(n)
u = 0.2 * np.sin(0.05 * np.arange(T)[:, None] + 0.7 * np.arange(n)[None, :])
q0 = 0.1 * (np.arange(n) + 1.0)[None, :] + 1e-3 * np.arange(B)[:, None]
v0 = np.zeros((B, n))
out = {"import_init_s": t1 - t0}

def twice(name, fn):
    a = time.perf_counter(); fn(); b = time.perf_counter(); fn(); c = time.perf_counter()
    out[name + "_first_s"] = b - a
    out[name + "_second_s"] = c - b

twice("rollout", lambda: simad.rollout(model, q0, v0, u, dt))
cost = simad.QuadraticCost(terminal_q_weight=2.0)
twice("value_and_grad", lambda: simad.value_and_grad(model, q0[:1], v0[:1], u, dt, cost))
if hasattr(simad, "linearize"):
    tr = simad.rollout(model, q0[:1], v0[:1], u, dt)
    twice("linearize", lambda: simad.linearize(model, tr.q[0, :T], tr.qd[0, :T], u, dt))
try:  # VmHWM: this address space only (ru_maxrss also counts the parent's peak before exec)
    hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
    out["peak_rss_mb"] = int(hwm[0].split()[1]) / 1024.0
except (OSError, IndexError):
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps(out))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--quick", action="store_true", help="fewer, shorter repeats; no empty-cache compile")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*unrolling more than")  # Taichi, at compile time
    import simad

    simad.init(arch="cpu", precision="f64")
    # A fresh interpreter on the default offline cache, first: it compiles whatever the cache
    # lacks and writes it at exit (Taichi only writes the cache when a process ends), so this
    # process and the reported warm-cache run below load every kernel from the cache.
    run_python(COLD, {"BENCH_DYN_CACHE": ""}, timeout=3600)
    repeats, min_time = (2, 0.1) if args.quick else (5, 0.2)
    T_fwd = T_REF  # simad's per-launch cost does not amortise over a shorter T: keep the reference

    fwd = bench_forward([2, 7], [1, 256], T_fwd, repeats, min_time)
    grad = bench_gradient(7, T_REF, repeats, min_time)
    lin = bench_linearize(7, 1000, repeats, min_time)
    peak_mb = peak_rss_mb()

    if args.quick:
        cold_empty = None
    else:
        cache = tempfile.mkdtemp(prefix="simad_bench_cache_")
        try:
            cold_empty = run_python(COLD, {"BENCH_DYN_CACHE": cache}, timeout=3600)
        finally:
            import shutil

            shutil.rmtree(cache, ignore_errors=True)
    t0 = time.perf_counter()
    cold_warm = run_python(COLD, {"BENCH_DYN_CACHE": ""})
    cold_warm_wall = time.perf_counter() - t0

    # ---- report ------------------------------------------------------------------------------
    print(f"Planar chain dynamics, f64, dt = {DT}, semi-implicit Euler - {machine()}")
    print()
    print(f"1. forward env-steps/s (T = {T_fwd}; simad one launch, MuJoCo rollout {NTHREAD} threads, "
          f"Pinocchio abaInParallel {NTHREAD} threads in a Python loop)")
    rows = []
    for r in fwd:
        target = f">= {TARGET_FWD / 1e6:.0f}M: {ok(r['simad'] >= TARGET_FWD)}" if (r["n"], r["B"]) == (7, 256) else ""
        rows.append([r["n"], r["B"], r["simad"], r.get("mujoco", "n/a"), r.get("pinocchio", "n/a"),
                     r.get("pinocchio_aba_1thread", ""),
                     r["simad"] / r["mujoco"] if "mujoco" in r else "n/a",
                     r["simad"] / r["pinocchio"] if "pinocchio" in r else "n/a",
                     " ".join(f"{k} {v:.1e}" for k, v in r["max_abs_diff_qT"].items()), target])
    print(table(rows, ["n", "B", "simad", "mujoco", "pinocchio", "pin aba 1 thr", "x mujoco", "x pinocchio",
                       "max |q_T - simad| (mj-pin: between them)", "target"]))
    print()

    print(f"2. dL/du, L = sum q_T^2, all {grad['T']} x {grad['n']} torques, B = 1")
    g_ok = grad["simad_grad_s"] <= TARGET_GRAD_S and grad["ratio_grad_forward"] <= TARGET_GRAD_RATIO
    rows = [["simad forward rollout", fmt_s(grad["simad_forward_s"]), "", ""],
            ["simad value_and_grad", fmt_s(grad["simad_grad_s"]),
             f"{grad['ratio_grad_forward']:.2f}x forward",
             f"<= {TARGET_GRAD_S * 1e3:.0f} ms and <= {TARGET_GRAD_RATIO:.0f}x: {ok(g_ok)}"],
            ["pinocchio fwd + ABA-derivative adjoint", fmt_s(grad.get("pinocchio_grad_s")),
             f"max |dg| {grad['max_abs_diff_grad_vs_pinocchio']:.2e} (max |g| {grad['max_abs_grad']:.2e})"
             if "max_abs_diff_grad_vs_pinocchio" in grad else "", ""],
            ["mujoco chained mjd_transitionFD", fmt_s(grad.get("mujoco_fd_grad_s")),
             f"max |dg| {grad['max_abs_diff_grad_mujoco_fd_vs_simad']:.2e}"
             if "max_abs_diff_grad_mujoco_fd_vs_simad" in grad else "", ""]]
    print(table(rows, ["engine", "time", "vs simad", "target"]))
    print(f"   loss: simad {grad['simad_loss']:.12g} (|loss - sum q_T^2 of rollout| {grad['simad_loss_vs_rollout']:.1e})"
          + (f", pinocchio {grad['pinocchio_loss']:.12g}" if "pinocchio_loss" in grad else ""))
    print()

    print(f"3. one-step linearization, n = {lin['n']}, A (2n x 2n) and B (2n x n), time per point")
    has_lin = "simad_single_s" in lin
    rows = [["simad B=1", fmt_s(lin.get("simad_single_s")), "", ""],
            [f"simad batch of {lin['points']} (amortised)", fmt_s(lin.get("simad_batch_s_per_point")),
             f"A {lin['max_abs_diff_traj_A_vs_pinocchio']:.1e}, B {lin['max_abs_diff_traj_B_vs_pinocchio']:.1e}"
             if "max_abs_diff_traj_A_vs_pinocchio" in lin else "",
             f"<= {TARGET_LIN_S * 1e6:.0f} us: {ok(lin['simad_batch_s_per_point'] <= TARGET_LIN_S if has_lin else None)}"],
            ["pinocchio ABA derivatives + numpy", fmt_s(lin.get("pinocchio_s_per_point")), "(reference)", ""],
            *[[f"mujoco transitionFD {name}", fmt_s(lin.get(f"mujoco_fd_{key}_s_per_point")),
               f"{lin[f'mujoco_fd_{key}_max_abs_diff_AB_vs_pinocchio']:.1e}"
               if f"mujoco_fd_{key}_max_abs_diff_AB_vs_pinocchio" in lin else "", ""]
              for name, key in (("forward", "forward"), ("centred", "centered"))]]
    print(table(rows, ["engine", "time per point", "max |diff| vs pinocchio (1000-pt trajectory; FD: one point)", "target"]))
    if has_lin and "max_abs_diff_A_vs_pinocchio" in lin:
        print(f"   at q = q0, v = 0.1, u = u[0]: simad vs pinocchio max |dA| {lin['max_abs_diff_A_vs_pinocchio']:.2e}, "
              f"max |dB| {lin['max_abs_diff_B_vs_pinocchio']:.2e}")
    if not has_lin:
        print("   simad.linearize: n/a (not in this simad)")
    print()

    print("4. cold starts (fresh interpreter; n = 7: rollout B = 256, value_and_grad B = 1, linearize 1000 points; "
          "all T = 1000)")
    keys = list(cold_warm.keys())
    rows = []
    if cold_empty is not None:
        rows.append(["empty offline cache", *[cold_empty.get(k, "n/a") for k in keys]])
    else:
        rows.append(["empty offline cache", *["skipped (--quick)"] + [""] * (len(keys) - 1)])
    rows.append(["warm offline cache", *[cold_warm[k] for k in keys]])
    print(table(rows, ["cache", *keys]))
    print(f"   warm-cache interpreter wall time {cold_warm_wall:.1f} s; peak RSS of this benchmark process "
          f"(simad + mujoco + pinocchio) {peak_mb:.0f} MB; peak_rss_mb above: simad alone in the fresh interpreter")

    result = {"machine": machine(), "dt": DT, "T_forward": T_fwd, "quick": args.quick, "forward": fwd,
              "gradient": grad, "linearize": lin, "cold_empty_cache": cold_empty, "cold_offline_cache": cold_warm,
              "peak_rss_mb": peak_mb,
              "targets": {"forward_B256_n7_steps_per_s": TARGET_FWD, "gradient_s": TARGET_GRAD_S,
                          "gradient_over_forward": TARGET_GRAD_RATIO, "linearize_s_per_point": TARGET_LIN_S},
              "meets": {"forward": next(r["simad"] >= TARGET_FWD for r in fwd if (r["n"], r["B"]) == (7, 256)),
                        "gradient": g_ok,
                        "linearize": (lin["simad_batch_s_per_point"] <= TARGET_LIN_S) if has_lin else None}}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
