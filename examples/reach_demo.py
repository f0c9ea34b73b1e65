"""The simad demo: plan a 7-DOF arm's reach around an obstacle with a remote simad server.

What it does, end to end:
  1. starts a simad server on 127.0.0.1 (CPU, embedded model store in a temp directory);
  2. loads the shipped 7-DOF arm through the Python client (numpy in, numpy out over gRPC);
  3. plans the motion by trajectory optimisation on the server: iLQR iterations in a control
     session (exact linearizations, the built-in cost: reach the target with the end effector,
     keep five frames along the arm out of a spherical obstacle, small torques), with a
     progress bar showing the cost;
  4. checks the plan remotely (a rollout, forward kinematics of the whole path, and the
     gradient of the cost at the solution), writes plots and a summary, stops the server.

Run: python examples/reach_demo.py [--out demo-output] [--iterations 40]
Success (exit 0) means: final reach error < 1 cm and no frame inside the obstacle.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _local_server import local_server

Q_START = np.array([0.0, 0.7, 0.0, -1.3, 0.0, 0.8, 0.0])  # rad: arm bent forward
Q_GOAL = np.array([1.6, 0.7, 0.0, -1.3, 0.0, 0.8, 0.0])  # the same pose turned 1.6 rad: defines the target
EE = "ee_link"
AVOID = ("link5", "link6", "link7", "flange", "ee_link")  # frames kept out of the obstacle
RADIUS, MARGIN = 0.12, 0.02  # m: obstacle radius, and the safety margin added in the cost
T, DT = 200, 0.005  # 1 s of motion


def problem(client, model_id):
    """Target and obstacle, from the arm's own kinematics (asked of the server)."""
    pos, _ = client.forward_kinematics(model_id, np.stack([Q_START, Q_GOAL, 0.5 * (Q_START + Q_GOAL)]))
    info = client.get_model(model_id)
    ee = info.frame_names.index(EE)
    start, target, middle = pos[:, ee]
    obstacle = np.array([*middle, RADIUS])  # right on the straight arc from start to target
    cost = {
        "frames": [EE], "terminal_frame_weight": [1e4], "frame_ref": target[None],
        "terminal_qd_weight": np.full(7, 1.0), "qd_weight": np.full(7, 1e-2), "u_weight": np.full(7, 1e-5),
        "obstacle_frames": list(AVOID), "obstacles": np.array([[*middle, RADIUS + MARGIN]]),
        "obstacle_weight": [1e5],
    }
    return start, target, obstacle, cost, info


def plan(client, model_id, cost, iterations, console):
    """iLQR on the server: one control-session tick per iteration, each warm-started from the last plan."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    u = np.zeros((T, 7))  # iLQR finds the gravity-holding torques itself
    costs, best, calls = [], None, 0
    columns = (TextColumn("[bold]planning"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("cost {task.fields[cost]:.5g}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar, client.control_session(
        model_id, DT, T, mode="plan", cost=cost, controls=u, iterations=1, timeout=None
    ) as session:
        task = bar.add_task("plan", total=iterations, cost=float("nan"))
        for _ in range(iterations):
            p = session.step(Q_START, np.zeros(7), controls=u)  # replan from the start with our plan
            calls += 1
            u = p.k
            costs.append(p.cost)
            best = p
            bar.update(task, advance=1, cost=p.cost)
            if len(costs) > 8 and costs[-9] - costs[-1] < 1e-7 * abs(costs[-1]):
                bar.update(task, total=len(costs))
                break
    return best, costs, calls


def check(client, model_id, info, p, target, obstacle, cost):
    """The plan, verified remotely: its open-loop rollout, FK along it, and the cost's gradient."""
    tr = client.rollout(model_id, Q_START, np.zeros(7), p.k, DT)
    pos, _ = client.forward_kinematics(model_id, tr.q[0])
    ids = [info.frame_names.index(f) for f in AVOID]
    ee_path = pos[:, info.frame_names.index(EE)]
    clearance = np.linalg.norm(pos[:, ids] - obstacle[:3], axis=-1) - obstacle[3]
    g = client.value_and_grad(model_id, Q_START, np.zeros(7), p.k, DT, cost)
    naive, _ = client.forward_kinematics(model_id, np.linspace(Q_START, Q_GOAL, T + 1))  # joint-space interpolation
    return tr, ee_path, clearance, g, naive[:, info.frame_names.index(EE)]


def plots(out: Path, costs, tr, ee_path, naive, start, target, obstacle) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(np.arange(1, len(costs) + 1), costs, "o-", ms=3)
    ax.set(xlabel="iLQR iteration (one server round trip)", ylabel="cost", title="Planning cost")
    ax.grid(True, which="both", alpha=0.3)
    files.append(out / "cost.png")
    fig.tight_layout()
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)

    t = np.arange(tr.q.shape[1]) * DT
    fig, axs = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for j in range(7):
        axs[0].plot(t, tr.q[0, :, j], label=f"joint {j + 1}")
    axs[0].set(ylabel="q (rad)", title="Joint trajectories")
    axs[0].legend(ncol=4, fontsize=7)
    for j in range(7):
        axs[1].plot(t[:-1], tr.u[0, :, j])
    axs[1].set(xlabel="time (s)", ylabel="torque (N m)")
    for a in axs:
        a.grid(True, alpha=0.3)
    files.append(out / "joints.png")
    fig.tight_layout()
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)

    fig, axs = plt.subplots(1, 2, figsize=(10, 4.5))
    for a, (i, j, name) in zip(axs, ((0, 1, "top view (x-y)"), (0, 2, "side view (x-z)")), strict=True):
        a.add_patch(plt.Circle((obstacle[i], obstacle[j]), obstacle[3], color="tab:red", alpha=0.3, label="obstacle"))
        a.plot(naive[:, i], naive[:, j], "k:", lw=1, label="naive path (joint interpolation)")
        a.plot(ee_path[:, i], ee_path[:, j], "-", color="tab:blue", lw=2, label="end-effector path")
        a.plot(*start[[i, j]], "go", label="start")
        a.plot(*target[[i, j]], "r*", ms=12, label="target")
        a.set(xlabel="xyz"[i] + " (m)", ylabel="xyz"[j] + " (m)", title=name, aspect="equal")
        a.grid(True, alpha=0.3)
    axs[0].legend(fontsize=7, loc="best")
    files.append(out / "path.png")
    fig.tight_layout()
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="demo-output", help="directory for the plots and summary.json")
    ap.add_argument("--iterations", type=int, default=40, help="maximum iLQR iterations (server round trips)")
    args = ap.parse_args(argv)
    from rich.console import Console
    from simad_client import Client

    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    status = lambda: console.status("[bold]simad server warming up[/] (compiling kernels: a minute or two on "  # noqa: E731
                                    "the first run, seconds once Taichi's offline cache has them)")
    with local_server(status=status) as address, Client(address, timeout=600) as client:
        warm = time.perf_counter() - t_all
        srv = client.server_info()
        console.print(f"simad {srv['version']} server on {address}: {srv['backend']}, {srv['precision']}, "
                      f"ready in {warm:.1f} s")
        arm = client.load_model(builtin="arm7")
        console.print(f"loaded {arm.name}: nq={arm.nq} nv={arm.nv} nu={arm.nu} ({arm.model_id})")
        start, target, obstacle, cost, info = problem(client, arm.model_id)
        t0 = time.perf_counter()
        p, costs, calls = plan(client, arm.model_id, cost, args.iterations, console)
        t_plan = time.perf_counter() - t0
        tr, ee_path, clearance, g, naive = check(client, arm.model_id, info, p, target, obstacle, cost)
    files = plots(out, costs, tr, ee_path, naive, start, target, obstacle)
    err = float(np.linalg.norm(ee_path[-1] - target))
    summary = {
        "reach_error_m": err, "min_clearance_m": float(clearance.min()), "iterations": len(costs),
        "server_calls": {"control_ticks": calls, "rollout": 1, "forward_kinematics": 3, "value_and_grad": 1},
        "final_cost": float(g.loss[0]), "gradient_norm_at_solution": float(np.linalg.norm(g.controls)),
        "planning_time_s": t_plan, "total_time_s": time.perf_counter() - t_all,
        "success": bool(err < 0.01 and clearance.min() > 0.0), "plots": [str(f) for f in files],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    ok = "[green]OK[/]" if summary["success"] else "[red]FAILED[/]"
    console.print(f"reach error {err * 1000:.2f} mm (< 10 mm), minimum obstacle clearance "
                  f"{clearance.min() * 1000:.1f} mm (> 0), {len(costs)} iLQR iterations = {calls} server round "
                  f"trips, planning {t_plan:.1f} s, total {summary['total_time_s']:.1f} s: {ok}")
    console.print(f"plots: {', '.join(str(f) for f in files)}; summary: {out / 'summary.json'}")
    return 0 if summary["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
