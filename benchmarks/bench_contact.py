"""Contact: a batch of billiards breaks and one pile of spheres in a box, simad's contact engine
beside MuJoCo.

Run: python benchmarks/bench_contact.py [--json out.json] [--quick] [--pile-n N]

Scenes (f64, dt = 1e-3, no applied forces):

(a) billiards, B = 256 envs x T = 1000 steps (--quick: T = 200): a 2.54 x 1.27 m table (the
    cloth is a floor plane, the four cushions are planes with inward normals), 16 balls
    (r = 28 mm, m = 0.17 kg): 15 in a triangle rack, the cue ball 0.25 m in front of the apex
    at 8 m/s, its direction fanned over +-0.02 rad across the envs (it hits the rack at step
    ~25, the balls reach the cushions within the run). Pair coefficients: ball-ball friction
    0.05, ball-cloth 0.2, ball-cushion 0.1, restitution 0.93 (simad). Figures: env-steps/s and
    body-steps/s (env-steps x 16) of ``contact_rollout`` in impulse mode (8 Jacobi sweeps,
    time-of-impact correction) and smooth mode (timeconst 4 ms, softness 0.1 mm), the same
    batch in MuJoCo's ``rollout`` module (2 threads) with its default contacts and with
    contacts stiffened to solref 2 ms (with the defaults the cue ball sinks up to 5 cm into the
    apex ball); the engines take turns, the fastest of 4 calls (--quick 3). The gradient
    (``contact_vjp`` with a cotangent on the balls' final x, y) for a shorter T (T = 250,
    --quick 50: the gradient runs ~5k env-steps/s here) and its time over the forward rollout
    of the same (B, T) (fastest of 2 gradient and 3 forward calls). Sanity figures: the
    deepest penetration seen in each engine, touching pairs at the end. Memory: simad's
    forward, the peak of the numpy buffers of one call (tracemalloc: the states and the
    returned trajectory); its gradient, the peak resident set above the one before the call
    (VmHWM reset through /proc/self/clear_refs: Taichi's ndarrays are not traced); MuJoCo, its
    preallocated state output and MjData.

(b) a pile: N = 1000 spheres (r = 25 mm, m = 50 g; --quick: N = 200) in 10 x 10 columns in a
    0.52 m square box (floor + 4 wall planes), layers 2 mm apart falling onto each other,
    one env, T = 100 steps (--quick: 50). simad's broad phase (sweep and prune along x over
    bounding spheres grown by the step's reach, then a bounding-sphere test per contact slot)
    hands the narrow phase and the solver only the candidate pairs; the contact slots (N (N - 1)
    / 2 sphere pairs + 5 N plane-sphere pairs) still take memory. One env runs on one thread.
    MuJoCo prunes pairs (sweep and prune + bounding spheres) and runs ``mj_step`` in a loop (one
    env: its rollout module gains nothing). simad's gradient (``contact_vjp`` of the balls' summed
    final heights, the same T) and its time over the forward (the fastest of 2 gradient and 3
    forward calls: one env runs on one thread and its times vary), at the N simad ran. If simad's
    impulse rollout would take more than ~60 s at N, simad is measured at a smaller N and its
    rate extrapolated to N with the pair count (labelled "extrapolated").

Contact models differ: simad's impulse mode is hard contact (exact impulses, Coulomb cone,
restitution), smooth mode a spring-damper on a softplus of the penetration; MuJoCo keeps its
defaults but for the stiff variant: soft constraints (solref 0.02 s, damping ratio 1 - nearly
inelastic, no restitution parameter; solimp), pyramidal friction cones, Newton solver, Euler
integrator. MuJoCo combines frictions by max, simad by geometric mean: the geoms' values are
set so that every pair gets the same coefficient in both. The work per step depends on how
many contacts are active, which differs between the engines: compare rates, not trajectories.

Targets (issue): billiards B = 256 forward (impulse mode) >= MuJoCo's env-steps/s (its
defaults); gradient <= 5x the forward rollout, for the billiards and for the pile.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import tracemalloc
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, machine, table, write_json  # noqa: E402

if ROOT not in sys.path:  # the checkout's simad, installed or not
    sys.path.insert(0, ROOT)

DT = 1e-3
NTHREAD = 2
# (a) billiards
B_BALLS = 256
T_BALLS, T_BALLS_QUICK = 1000, 200
T_GRAD, T_GRAD_QUICK = 250, 50
R_BALL, M_BALL = 0.028, 0.17
TABLE = (2.54, 1.27)  # playing surface between the cushions, m
CUE_GAP, CUE_SPEED, CUE_FAN = 0.25, 8.0, 0.02  # m in front of the apex, m/s, +- rad across envs
NBALL = 16
# simad geom values (pairs: friction sqrt(a b), restitution max(a, b)); MuJoCo: friction max(a, b)
MU_BALL, MU_CLOTH, MU_CUSHION = 0.05, 0.8, 0.2  # pairs: ball-ball 0.05, ball-cloth 0.2, ball-cushion 0.1
MJ_MU_BALL, MJ_MU_CLOTH, MJ_MU_CUSHION = 0.05, 0.2, 0.1
E_BALL = 0.93
SMOOTH = {"timeconst": 0.004, "softness": 1e-4}
# MuJoCo: its defaults, and contacts stiffened to the smallest time constant it recommends (2 dt)
# (with the defaults the 8 m/s cue ball sinks up to 5 cm, almost a diameter, into the apex ball)
MJ_VARIANTS = {"mujoco": None, "mujoco_stiff": f"{2 * DT} 1"}
# (b) pile
N_PILE, N_PILE_QUICK = 1000, 200
T_PILE, T_PILE_QUICK = 100, 50
R_PILE, M_PILE, HALF_BOX, MU_PILE, E_PILE = 0.025, 0.05, 0.26, 0.5, 0.2
PILE_BUDGET_S = 60.0
# targets
TARGET_VS_MUJOCO = 1.0
TARGET_GRAD_RATIO = 5.0


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def measure_peak(fn, trace: bool = False):
    """(result, seconds, rss MB, traced MB) of one call: its peak resident memory above the
    resident size before it (VmHWM reset through /proc/self/clear_refs; None where that is not
    available; allocations below glibc's mmap threshold may reuse freed heap and not show), and
    with trace=True the peak of the memory allocated through Python's allocators during the call
    (tracemalloc: numpy buffers, not Taichi's own ndarrays)."""
    before = _status_mb("VmRSS")
    reset = False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        pass
    if trace:
        tracemalloc.start()
        tracemalloc.reset_peak()
    t0 = time.perf_counter()
    try:
        out = fn()
        s = time.perf_counter() - t0
        traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    finally:
        if trace:
            tracemalloc.stop()
    peak = _status_mb("VmHWM")
    mb = peak - before if (reset and peak is not None and before is not None) else None
    return out, s, mb, traced


def timed(fns: dict, repeats: int) -> dict:
    """{name: [seconds per call]}: the callables take turns (one call each per round), so a
    background load slows them alike."""
    out = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t0)
    return out


def ok(flag) -> str:
    return "n/a" if flag is None else ("yes" if flag else "NO")


def fmt_s(s) -> str:
    if s is None:
        return "n/a"
    return f"{s:.2f} s" if s >= 1.0 else f"{s * 1e3:.1f} ms"


def frame_for_normal(n) -> np.ndarray:
    """A rotation whose z axis is n (a plane geom's normal is the z axis of its frame)."""
    n = np.asarray(n, float) / np.linalg.norm(n)
    x = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = x - n * (x @ n)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(n, x), n], 1)


def walls(hx: float, hy: float):
    """(position, inward normal) of the four vertical planes of a box |x| <= hx, |y| <= hy."""
    return [((hx, 0, 0), (-1, 0, 0)), ((-hx, 0, 0), (1, 0, 0)), ((0, hy, 0), (0, -1, 0)), ((0, -hy, 0), (0, 1, 0))]


def mj_plane(pos, normal) -> str:
    return (f'<geom type="plane" pos="{pos[0]} {pos[1]} {pos[2]}" zaxis="{normal[0]} {normal[1]} {normal[2]}" '
            'size="0 0 1"')


def max_penetration(pos: np.ndarray, r: float, hx: float, hy: float) -> dict:
    """Deepest overlap (m, >= 0) over a trajectory of sphere centres pos (..., n, 3): between
    spheres, into the floor, into the walls."""
    n = pos.shape[-2]
    ia, ib = np.triu_indices(n, 1)
    deepest = 0.0
    flat = pos.reshape(-1, n, 3)
    for s in range(0, flat.shape[0], 4096):  # bounded temporaries
        d = np.linalg.norm(flat[s:s + 4096, ia] - flat[s:s + 4096, ib], axis=-1)
        deepest = max(deepest, float((2 * r - d).max()))
    floor = float((r - pos[..., 2]).max())
    wall = float(max((np.abs(pos[..., 0]) + r - hx).max(), (np.abs(pos[..., 1]) + r - hy).max()))
    return {"sphere_sphere": max(deepest, 0.0), "floor": max(floor, 0.0), "wall": max(wall, 0.0)}


def contacts_at(pos: np.ndarray, r: float, hx: float, hy: float, tol: float) -> int:
    """Touching pairs (gap < tol) of one configuration pos (n, 3): sphere-sphere, floor, walls."""
    n = pos.shape[0]
    ia, ib = np.triu_indices(n, 1)
    gaps = np.linalg.norm(pos[ia] - pos[ib], axis=1) - 2 * r
    c = int((gaps < tol).sum()) + int((pos[:, 2] - r < tol).sum())
    c += int((hx - np.abs(pos[:, 0]) - r < tol).sum()) + int((hy - np.abs(pos[:, 1]) - r < tol).sum())
    return c


# ---------------------------------------------------------------------------------------------
# scenes
# ---------------------------------------------------------------------------------------------
def billiards_model():
    import simad

    b = simad.ModelBuilder("billiards")
    hx, hy = TABLE[0] / 2, TABLE[1] / 2
    b.add_geom(0, "plane", friction=MU_CLOTH, restitution=0.0, name="cloth")
    for k, (pos, n) in enumerate(walls(hx, hy)):
        b.add_geom(0, "plane", pos=pos, rot=frame_for_normal(n), friction=MU_CUSHION, restitution=0.0, name=f"cushion{k}")
    for k in range(NBALL):
        b.add_body(f"ball{k}", 0, mass=M_BALL, inertia=np.eye(3) * 0.4 * M_BALL * R_BALL**2)
        b.add_joint(f"ball{k}", f"ball{k}_free", type="free")
        b.add_geom(f"ball{k}", "sphere", size=(R_BALL,), friction=MU_BALL, restitution=E_BALL, name=f"ball{k}_g")
    return b.finalize()


def billiards_mjcf(solref: str | None = None) -> str:
    hx, hy = TABLE[0] / 2, TABLE[1] / 2
    default = f'<default><geom solref="{solref}"/></default>' if solref else ""
    planes = "\n".join(mj_plane(p, n) + f' friction="{MJ_MU_CUSHION} 0.005 0.0001"/>' for p, n in walls(hx, hy))
    balls = "\n".join(f'<body name="ball{k}"><freejoint/><geom type="sphere" size="{R_BALL}" mass="{M_BALL}" '
                      f'friction="{MJ_MU_BALL} 0.005 0.0001"/></body>' for k in range(NBALL))
    return (f'<mujoco model="billiards"><option timestep="{DT}"/>{default}<worldbody>\n'
            f'<geom name="cloth" type="plane" size="0 0 1" friction="{MJ_MU_CLOTH} 0.005 0.0001"/>\n'
            f"{planes}\n{balls}\n</worldbody></mujoco>")


def billiards_state(B: int):
    """(q0 (B, 112), qd0 (B, 96)): the rack and the cue ball, its direction fanned over the envs."""
    apex = TABLE[0] / 4
    d = 2 * R_BALL * 1.0005  # 14 um apart: no initial overlap
    xy = [(apex - CUE_GAP, 0.0)]
    for row in range(5):
        for j in range(row + 1):
            xy.append((apex + row * d * math.sqrt(3) / 2, (j - row / 2) * d))
    q0 = np.zeros((B, 7 * NBALL))
    qd0 = np.zeros((B, 6 * NBALL))
    for k, (x, y) in enumerate(xy):
        q0[:, 7 * k: 7 * k + 3] = (x, y, R_BALL)
        q0[:, 7 * k + 3] = 1.0
    ang = np.linspace(-CUE_FAN, CUE_FAN, B)
    qd0[:, 0], qd0[:, 1] = CUE_SPEED * np.cos(ang), CUE_SPEED * np.sin(ang)
    return q0, qd0


def pile_layout(n: int) -> np.ndarray:
    """(n, 3) sphere centres: 10 x 10 columns, layers 2 mm apart, 1 mm jitter, 1 mm above the floor."""
    rng = np.random.default_rng(0)
    out = np.empty((n, 3))
    for k in range(n):
        layer, rem = divmod(k, 100)
        i, j = divmod(rem, 10)
        out[k] = ((i - 4.5) * 2.04 * R_PILE + rng.uniform(-1e-3, 1e-3), (j - 4.5) * 2.04 * R_PILE + rng.uniform(-1e-3, 1e-3),
                  R_PILE + 1e-3 + layer * (2 * R_PILE + 2e-3))
    return out


def pile_model(n: int):
    import simad

    b = simad.ModelBuilder("pile")
    b.add_geom(0, "plane", friction=MU_PILE, restitution=0.0, name="floor")
    for k, (pos, nrm) in enumerate(walls(HALF_BOX, HALF_BOX)):
        b.add_geom(0, "plane", pos=pos, rot=frame_for_normal(nrm), friction=MU_PILE, restitution=0.0, name=f"wall{k}")
    for k in range(n):
        b.add_body(f"s{k}", 0, mass=M_PILE, inertia=np.eye(3) * 0.4 * M_PILE * R_PILE**2)
        b.add_joint(f"s{k}", f"s{k}_free", type="free")
        b.add_geom(f"s{k}", "sphere", size=(R_PILE,), friction=MU_PILE, restitution=E_PILE, name=f"s{k}_g")
    return b.finalize()


def pile_q0(n: int) -> np.ndarray:
    p = pile_layout(n)
    q0 = np.zeros(7 * n)
    for c in range(3):
        q0[c::7] = p[:, c]
    q0[3::7] = 1.0
    return q0


def pile_mjcf(n: int) -> str:
    planes = "\n".join(mj_plane(p, nrm) + f' friction="{MU_PILE} 0.005 0.0001"/>' for p, nrm in walls(HALF_BOX, HALF_BOX))
    balls = "\n".join(f'<body pos="{x} {y} {z}"><freejoint/><geom type="sphere" size="{R_PILE}" mass="{M_PILE}" '
                      f'friction="{MU_PILE} 0.005 0.0001"/></body>' for x, y, z in pile_layout(n))
    return (f'<mujoco model="pile"><option timestep="{DT}"/><worldbody>\n'
            f'<geom name="floor" type="plane" size="0 0 1" friction="{MU_PILE} 0.005 0.0001"/>\n'
            f"{planes}\n{balls}\n</worldbody></mujoco>")


def positions(q: np.ndarray, n: int) -> np.ndarray:
    """(..., n, 3) body origins (= centres) out of free-joint q (..., 7 n)."""
    return q.reshape(*q.shape[:-1], n, 7)[..., :3]


# ---------------------------------------------------------------------------------------------
# (a) billiards
# ---------------------------------------------------------------------------------------------
def contact_api():
    import simad

    if hasattr(simad, "contact_rollout"):
        return simad.Contact, simad.contact_rollout, simad.contact_vjp
    from simad.contact import Contact, contact_rollout, contact_vjp

    return Contact, contact_rollout, contact_vjp


def mujoco_or_none():
    try:
        import mujoco
        import mujoco.rollout  # noqa: F401
    except ImportError:
        return None
    return mujoco


def bench_billiards(B: int, T: int, repeats: int) -> dict:
    Contact, contact_rollout, _ = contact_api()
    from simad.contact import scene

    model = billiards_model()
    q0, qd0 = billiards_state(B)
    modes = {"impulse": Contact(mode="impulse"), "smooth": Contact(mode="smooth", **SMOOTH)}
    hx, hy = TABLE[0] / 2, TABLE[1] / 2
    res = {"B": B, "T": T, "dt": DT, "bodies": NBALL, "contact_slots": int(scene(model).nslot)}
    for name, opts in modes.items():  # compile (or load from the offline cache) outside the timing
        t0 = time.perf_counter()
        contact_rollout(model, q0, qd0, DT, steps=2, contact=opts)
        res[f"simad_{name}_first_call_T2_s"] = time.perf_counter() - t0

    fns = {name: (lambda opts=opts: contact_rollout(model, q0, qd0, DT, steps=T, contact=opts)) for name, opts in modes.items()}
    mujoco = mujoco_or_none()
    roller = None
    pens, mems, mj = {}, {}, {}
    if mujoco is not None:
        roller = mujoco.rollout.Rollout(nthread=NTHREAD)
        for name, solref in MJ_VARIANTS.items():
            mm = mujoco.MjModel.from_xml_string(billiards_mjcf(solref))
            md = mujoco.MjData(mm)
            spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
            x0 = np.empty((B, mujoco.mj_stateSize(mm, spec)))
            for b in range(B):
                mujoco.mj_resetData(mm, md)
                md.qpos[:], md.qvel[:] = q0[b], qd0[b]
                mujoco.mj_getState(mm, md, x0[b], spec)
            datas = [mujoco.MjData(mm) for _ in range(NTHREAD)]
            state = np.empty((B, T, x0.shape[1]))

            def run_mj(mm=mm, datas=datas, x0=x0, state=state):
                roller.rollout(mm, datas, x0, None, nstep=T, state=state)
                return state

            fns[name] = run_mj
            mj[name] = (mm, md)
            mems[name] = (state.nbytes + NTHREAD * (mm.narena + mm.nbuffer)) / 2**20  # preallocated: output + MjData
            res[f"{name}_options"] = {"solver": mujoco.mjtSolver(mm.opt.solver).name,
                                      "cone": mujoco.mjtCone(mm.opt.cone).name,
                                      "integrator": mujoco.mjtIntegrator(mm.opt.integrator).name,
                                      "solref": [float(x) for x in mm.geom_solref[0]],
                                      "solimp": [float(x) for x in mm.geom_solimp[0]]}
    try:
        # one call each with memory and sanity figures (also a warm-up), then the timed rounds
        for name, fn in fns.items():
            if name in mj:
                mm, md = mj[name]
                out = fn()
                pens[name] = max_penetration(positions(out[:, :, 1: 1 + mm.nq], NBALL), R_BALL, hx, hy)
                mujoco.mj_resetData(mm, md)  # contacts MuJoCo had active, along env 0
                md.qpos[:], md.qvel[:] = q0[0], qd0[0]
                ncon = []
                for _ in range(T):
                    mujoco.mj_step(mm, md)
                    ncon.append(md.ncon)
                res[f"{name}_ncon_env0"] = {"mean": float(np.mean(ncon)), "max": int(max(ncon))}
            else:
                out, _, _, mems[name] = measure_peak(fn, trace=True)
                pens[name] = max_penetration(positions(out.q, NBALL), R_BALL, hx, hy)
                res[f"simad_{name}_touching_env0_final"] = contacts_at(positions(out.q[0, -1], NBALL), R_BALL, hx, hy, 1e-4)
            del out
        times = timed(fns, repeats)
    finally:
        if roller is not None:
            roller.close()

    items = B * T
    for name in modes:  # the fastest call: the least disturbed by other processes
        row = {"simad_env_steps_per_s": items / min(times[name]),
               "median_simad_env_steps_per_s": items / statistics.median(times[name])}
        row["simad_body_steps_per_s"] = row["simad_env_steps_per_s"] * NBALL
        for v in mj:
            row[f"{v}_env_steps_per_s"] = items / min(times[v])
            row[f"median_{v}_env_steps_per_s"] = items / statistics.median(times[v])
            row[f"{v}_body_steps_per_s"] = row[f"{v}_env_steps_per_s"] * NBALL
            row[f"ratio_vs_{v}"] = row["simad_env_steps_per_s"] / row[f"{v}_env_steps_per_s"]
        row["simad_peak_mb"] = mems[name]
        row["max_penetration_mm"] = {k: 1e3 * v for k, v in pens[name].items()}
        res[name] = row
    for v in mj:
        res[f"{v}_buffers_mb"] = mems[v]
        res[f"{v}_max_penetration_mm"] = {k: 1e3 * x for k, x in pens[v].items()}
    for k, v in times.items():
        res[f"{k}_calls_s"] = [round(x, 4) for x in v]
    return res


def bench_gradient(B: int, T: int, modes: list[str]) -> dict:
    Contact, contact_rollout, contact_vjp = contact_api()
    model = billiards_model()
    q0, qd0 = billiards_state(B)
    all_opts = {"impulse": Contact(mode="impulse"), "smooth": Contact(mode="smooth", **SMOOTH)}
    out = {}
    for name in modes:
        opts = all_opts[name]

        def bar(T_):
            qb = np.zeros((B, T_ + 1, model.nq))
            qb[:, -1, 0::7] = 1.0  # L = sum of the balls' final x + 0.5 y
            qb[:, -1, 1::7] = 0.5
            return qb

        t0 = time.perf_counter()
        contact_vjp(model, q0, qd0, DT, bar(2), steps=2, contact=opts)  # compile / load the reverse kernels
        first = time.perf_counter() - t0
        qb = bar(T)
        fwd = timed({"f": lambda opts=opts: contact_rollout(model, q0, qd0, DT, steps=T, contact=opts)}, 3)["f"]
        g, grad_s, mb, _ = measure_peak(lambda opts=opts, qb=qb: contact_vjp(model, q0, qd0, DT, qb, steps=T, contact=opts))
        t0 = time.perf_counter()
        contact_vjp(model, q0, qd0, DT, qb, steps=T, contact=opts)
        grad_s = min(grad_s, time.perf_counter() - t0)  # the fastest of 2 calls, forward: of 3
        fwd_s = min(fwd)
        ratio = grad_s / fwd_s
        out[name] = {"B": B, "T": T, "simad_forward_s": fwd_s, "simad_grad_s": grad_s, "ratio_grad_forward": ratio,
                     "grad_env_steps_per_s": B * T / grad_s, "meets_target": bool(ratio <= TARGET_GRAD_RATIO),
                     "simad_grad_peak_rss_mb": mb, "simad_first_call_T2_s": first,
                     "finite": bool(np.isfinite(g.qd0).all() and np.isfinite(g.q0).all()),
                     "mode_switches_median": float(np.median(g.quality.mode_switches)),
                     "max_abs_dL_dqd0": float(np.abs(g.qd0).max())}
    return out


# ---------------------------------------------------------------------------------------------
# (b) the pile
# ---------------------------------------------------------------------------------------------
def pile_slots(n: int) -> int:
    return n * (n - 1) // 2 + 5 * n


def bench_pile(n_target: int, T: int) -> dict:
    Contact, contact_rollout, contact_vjp = contact_api()
    from simad.contact import scene

    res = {"N": n_target, "T": T, "dt": DT, "contact_slots_per_step_at_N": pile_slots(n_target)}
    modes = {"impulse": Contact(mode="impulse"), "smooth": Contact(mode="smooth")}

    # a probe of a few steps decides whether N fits the budget (cost ~ pairs: N^2)
    n = n_target
    t0 = time.perf_counter()
    model = pile_model(n)
    scene(model)
    res["simad_build_s"] = time.perf_counter() - t0
    q0 = pile_q0(n)
    for opts in modes.values():
        contact_rollout(model, q0[None], None, DT, steps=1, contact=opts)  # compile / load (one env: serial kernel)
    t0 = time.perf_counter()
    contact_rollout(model, q0, None, DT, steps=3, contact=modes["impulse"])
    predicted = (time.perf_counter() - t0) / 3 * T
    res["simad_impulse_predicted_run_s_at_N"] = predicted
    if predicted > PILE_BUDGET_S:
        n = max(100, int(n_target * math.sqrt(PILE_BUDGET_S / predicted) / 100) * 100)
        model = pile_model(n)
        q0 = pile_q0(n)
    res["N_simad"] = n
    res["contact_slots_per_step_simad"] = int(scene(model).nslot)
    res["extrapolated"] = n != n_target
    scale = pile_slots(n) / pile_slots(n_target)

    for name, opts in modes.items():
        run = lambda opts=opts: contact_rollout(model, q0, None, DT, steps=T, contact=opts)  # noqa: E731
        tr, s, _, mb = measure_peak(run, trace=True)
        s = min([s, *timed({"f": run}, 2)["f"]])  # the fastest of 3 calls (one env: noisy)
        rate = T / s * scale  # extrapolated to n_target by the pair count when n < n_target
        row = {"simad_env_steps_per_s": rate, "simad_body_steps_per_s": rate * n_target,
               "simad_s_per_step": 1.0 / rate, "simad_peak_mb": mb,
               "simad_touching_final": contacts_at(positions(tr.q[0, -1], n), R_PILE, HALF_BOX, HALF_BOX, 1e-4),
               "max_penetration_mm": {k: 1e3 * v for k, v in max_penetration(positions(tr.q[0], n), R_PILE, HALF_BOX,
                                                                                  HALF_BOX).items()}}
        if res["extrapolated"]:
            row[f"simad_env_steps_per_s_measured_at_N{n}"] = T / s
        # the gradient of the balls' summed final heights, at the N simad ran (not extrapolated)
        qb = np.zeros((1, T + 1, model.nq))
        qb[0, -1, 2::7] = 1.0
        contact_vjp(model, q0, None, DT, qb[:, :3], steps=2, contact=opts)  # compile / load the reverse kernel
        g, gs, gmb, _ = measure_peak(lambda opts=opts, qb=qb: contact_vjp(model, q0, None, DT, qb, steps=T, contact=opts))
        t0 = time.perf_counter()
        contact_vjp(model, q0, None, DT, qb, steps=T, contact=opts)
        gs = min(gs, time.perf_counter() - t0)  # the fastest of 2 calls
        row.update({"simad_grad_s": gs, "simad_forward_s_at_N_simad": s, "ratio_grad_forward": gs / s,
                    "simad_grad_peak_rss_mb": None if gmb is None else round(gmb), "grad_finite": bool(np.isfinite(g.q0).all())})
        res[name] = row

    mujoco = mujoco_or_none()
    if mujoco is not None:
        mm = mujoco.MjModel.from_xml_string(pile_mjcf(n_target))
        md = mujoco.MjData(mm)
        ncon = []
        mujoco.mj_forward(mm, md)

        def run_mj():
            ncon.clear()
            mujoco.mj_resetData(mm, md)
            for _ in range(T):
                mujoco.mj_step(mm, md)
                ncon.append(md.ncon)

        run_mj()  # warm-up
        times = timed({"mj": run_mj}, 2)["mj"]
        mj_rate = T / min(times)
        pos = positions(md.qpos.copy(), n_target)
        res["mujoco_ncon"] = {"mean": float(np.mean(ncon)), "max": int(max(ncon))}
        res["mujoco_touching_final"] = contacts_at(pos, R_PILE, HALF_BOX, HALF_BOX, 1e-4)
        res["mujoco_max_penetration_final_mm"] = 1e3 * max(max_penetration(pos[None], R_PILE, HALF_BOX, HALF_BOX).values())
        res["mujoco_jacobian"] = mujoco.mjtJacobian(mm.opt.jacobian).name
        for name in modes:
            res[name]["mujoco_env_steps_per_s"] = mj_rate
            res[name]["mujoco_body_steps_per_s"] = mj_rate * n_target
            res[name]["ratio_vs_mujoco"] = res[name]["simad_env_steps_per_s"] / mj_rate
    return res


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--quick", action="store_true", help="shorter runs, a smaller pile, impulse-mode gradient only")
    ap.add_argument("--pile-n", type=int, default=None, help=f"spheres in the pile (default {N_PILE}, --quick {N_PILE_QUICK})")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*unrolling more than")  # Taichi, at compile time
    import simad

    simad.init(arch="cpu", precision="f64")
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t_start = time.perf_counter()
    q = args.quick
    T_a, T_g = (T_BALLS_QUICK, T_GRAD_QUICK) if q else (T_BALLS, T_GRAD)
    n_pile = args.pile_n or (N_PILE_QUICK if q else N_PILE)
    T_b = T_PILE_QUICK if q else T_PILE

    balls = bench_billiards(B_BALLS, T_a, 3 if q else 4)
    grad = bench_gradient(B_BALLS, T_g, ["impulse"] if q else ["impulse", "smooth"])
    pile = bench_pile(n_pile, T_b)
    wall = time.perf_counter() - t_start
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    has_mj = "mujoco_env_steps_per_s" in balls["impulse"]
    if load0 is not None:
        load = f"; load average {load0:.2f} at start, {load1:.2f} at the end (other processes on the cores slow every figure)"
    print(f"Contact, f64, dt = {DT} - {machine()}{load if load0 is not None else ''}")
    print()
    print(f"(a) billiards: B = {balls['B']} envs x T = {balls['T']} steps, {NBALL} balls, {balls['contact_slots']} "
          f"contact slots per env and step (simad: broad phase, then the candidates); MuJoCo rollout, {NTHREAD} threads")

    def pen_cell(p):
        return f"{p['sphere_sphere']:.2f} / {p['floor']:.2f} / {p['wall']:.2f}"

    rows = []
    for name in ("impulse", "smooth"):
        r = balls[name]
        rows.append([f"simad {name}", r["simad_env_steps_per_s"], r["simad_body_steps_per_s"],
                     r.get("ratio_vs_mujoco", "n/a"), r.get("ratio_vs_mujoco_stiff", "n/a"), pen_cell(r["max_penetration_mm"]),
                     r["simad_peak_mb"],
                     f">= MuJoCo: {ok(r['ratio_vs_mujoco'] >= TARGET_VS_MUJOCO)}" if has_mj and name == "impulse" else ""])
    for v in MJ_VARIANTS:
        if f"{v}_buffers_mb" in balls:
            r = balls["impulse"]
            rows.append([f"{v} (solref {balls[v + '_options']['solref'][0]:g} s)", r[f"{v}_env_steps_per_s"],
                         r[f"{v}_body_steps_per_s"], r[f"{v}_env_steps_per_s"] / r["mujoco_env_steps_per_s"],
                         r[f"{v}_env_steps_per_s"] / r["mujoco_stiff_env_steps_per_s"],
                         pen_cell(balls[f"{v}_max_penetration_mm"]), balls[f"{v}_buffers_mb"], ""])
    print(table(rows, ["engine", "env-steps/s", "body-steps/s", "x mujoco", "x mujoco stiff",
                       "max penetration mm (ball/cloth/cushion)", "MB", "target"]))
    print(f"   fastest of {len(balls['impulse_calls_s'])} calls each (engines taking turns; the JSON has the medians too); "
          "seconds per call: "
          + ", ".join(f"{k} {balls[k + '_calls_s']}" for k in ("impulse", "smooth", *MJ_VARIANTS) if k + "_calls_s" in balls))
    print("   MB: simad, peak of the numpy buffers of one call (tracemalloc; states and the returned trajectory); "
          "MuJoCo, its preallocated state output + MjData")
    print("   first call (T = 2, compile or offline-cache load): "
          + ", ".join(f"{k} {balls[f'simad_{k}_first_call_T2_s']:.1f} s" for k in ("impulse", "smooth"))
          + f"; touching pairs at the end, env 0: impulse {balls['simad_impulse_touching_env0_final']}, "
          f"smooth {balls['simad_smooth_touching_env0_final']}")
    for v in MJ_VARIANTS:
        if f"{v}_ncon_env0" in balls:
            nc = balls[v + "_ncon_env0"]
            print(f"   {v}: contacts along env 0 mean {nc['mean']:.1f}, max {nc['max']}; {balls[v + '_options']}")
    print()
    g0 = next(iter(grad.values()))
    print(f"    gradient: contact_vjp, terminal cotangent on the balls' final x, y, B = {B_BALLS}, T = {T_g} (shorter than the "
          f"forward runs: at its rate T = {T_a} would take ~{B_BALLS * T_a / g0['grad_env_steps_per_s']:.0f} s per call)")
    rows = []
    for name, r in grad.items():
        mb = r["simad_grad_peak_rss_mb"]
        rows.append([f"simad {name}", r["T"], fmt_s(r["simad_forward_s"]), fmt_s(r["simad_grad_s"]), r["grad_env_steps_per_s"],
                     f"{r['ratio_grad_forward']:.1f}x", mb if mb is not None else "n/a",
                     f"<= {TARGET_GRAD_RATIO:.0f}x: {ok(r['meets_target'])}"])
    print(table(rows, ["mode", "T", "forward", "gradient", "grad env-steps/s", "grad / forward", "peak RSS MB", "target"]))
    print("   first gradient call (T = 2, compile or cache load): "
          + ", ".join(f"{k} {r['simad_first_call_T2_s']:.1f} s" for k, r in grad.items())
          + "; median mode switches per env: " + ", ".join(f"{k} {r['mode_switches_median']:.0f}" for k, r in grad.items()))
    print()
    label = f"N = {pile['N']}" + (f" (simad measured at N = {pile['N_simad']}, EXTRAPOLATED by the pair count)"
                                  if pile["extrapolated"] else "")
    print(f"(b) pile: {label}, one env, T = {pile['T']}; {pile['contact_slots_per_step_at_N']:,} contact slots "
          f"(N(N-1)/2 sphere pairs + 5N plane pairs), simad's sweep-and-prune broad phase picks the candidates; "
          "MuJoCo mj_step loop")
    rows = []
    for name in ("impulse", "smooth"):
        r = pile[name]
        rows.append([f"simad {name}" + (" (extrapolated)" if pile["extrapolated"] else ""), fmt_s(r["simad_s_per_step"]),
                     r["simad_env_steps_per_s"], r["simad_body_steps_per_s"], r.get("ratio_vs_mujoco", "n/a"),
                     r["simad_touching_final"], r["simad_peak_mb"],
                     f"{fmt_s(r['simad_grad_s'])} ({r['ratio_grad_forward']:.1f}x; {r['simad_grad_peak_rss_mb']} MB)"])
    if "mujoco_ncon" in pile:
        r = pile["impulse"]
        rows.append(["mujoco", fmt_s(1.0 / r["mujoco_env_steps_per_s"]), r["mujoco_env_steps_per_s"],
                     r["mujoco_body_steps_per_s"], 1.0, pile["mujoco_touching_final"], "n/a", "n/a"])
    print(table(rows, ["engine", "per step", "env-steps/s", "body-steps/s", "x mujoco", "touching at T (gap < 0.1 mm)",
                       "peak numpy MB", f"gradient, T = {pile['T']} (x forward; peak RSS)"]))
    if "mujoco_ncon" in pile:
        print(f"   MuJoCo contacts per step: mean {pile['mujoco_ncon']['mean']:.0f}, max {pile['mujoco_ncon']['max']} "
              f"(jacobian {pile['mujoco_jacobian']}); simad impulse predicted {pile['simad_impulse_predicted_run_s_at_N']:.1f} s "
              f"for the run at N = {pile['N']}")
    print()
    meets = {"forward_vs_mujoco": (balls["impulse"]["ratio_vs_mujoco"] >= TARGET_VS_MUJOCO) if has_mj else None,
             "gradient_over_forward": all(r["meets_target"] for r in grad.values()),
             "pile_gradient_over_forward": all(pile[k]["ratio_grad_forward"] <= TARGET_GRAD_RATIO
                                               for k in ("impulse", "smooth"))}
    print(f"targets: billiards forward (impulse) >= MuJoCo: {ok(meets['forward_vs_mujoco'])}"
          + (f" ({balls['impulse']['ratio_vs_mujoco']:.2f}x)" if has_mj else "")
          + f"; gradient <= {TARGET_GRAD_RATIO:.0f}x forward: {ok(meets['gradient_over_forward'])} ("
          + ", ".join(f"{k} {r['ratio_grad_forward']:.1f}x" for k, r in grad.items())
          + f"; pile: {ok(meets['pile_gradient_over_forward'])}, "
          + ", ".join(f"{k} {pile[k]['ratio_grad_forward']:.1f}x" for k in ("impulse", "smooth")) + f"); wall time {wall:.0f} s")

    result = {"machine": machine(), "quick": q, "loadavg_start": load0, "loadavg_end": load1, "wall_s": wall,
              "billiards": balls, "gradient": grad, "pile": pile,
              "targets": {"billiards_forward_vs_mujoco": TARGET_VS_MUJOCO, "gradient_over_forward": TARGET_GRAD_RATIO},
              "meets": meets}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
