"""Aim a billiards shot by gradient descent: the cue ball's initial velocity is tuned until the
object ball ends up at a corner pocket.

The table is a floor plane and four cushion planes facing inwards (all static geoms of the
world body); the cue ball and the object ball are free spheres (radius 28 mm, 170 g,
restitution 0.9). The decision variable is the cue ball's initial horizontal velocity (vx, vy),
i.e. the direction and the speed of the shot. The loss is

    L(v) = 1/2 |p_obj(T) - p_target|^2

with p_obj(T) the object ball's position after T steps and p_target a point just in front of
the corner pocket; the shot "reaches the pocket" when that distance is below ``--tolerance``.
``simad.contact_value_and_grad`` with a ``QuadraticCost`` (a terminal weight on the object
ball's x, y) gives L and dL/dqd0 through the whole rollout, collisions included. The descent:
step along -g/|g| with the step length chosen by a batched line search (16 lengths from 0.3 m/s
down to 9 um/s, halving, all in one ``contact_rollout`` call, one env each: the best one wins).

The initial guess aims at the object ball with an offset of half a radius: the balls collide
from the start, so the loss depends on the cue ball's velocity (a miss would give a zero
gradient: nothing links the cue ball to the object ball then).

Modes (``--mode``): "impulse" (default: exact impulses with time-of-impact correction, the
mode whose gradient through an impact is right, see ``simad.contact``) or "smooth" (penalty
contact) with friction_eps = 0.05 m/s (smaller values make the rolling balls' tangent dynamics
unstable at this dt: the gradient explodes although the rollout looks fine) and softness =
3e-4 m (measured: 1e-3 m converges in 14 iterations, 3e-4 m in 5, and with 1e-4 m the descent
crawls and stalls near 2.7 cm). Both balls first settle on the cloth (a 1 s rollout at rest),
so the smooth contact's spring does not still bob when the shot starts.

Choices forced by the current engine (impulse mode):
  * the cloth is frictionless by default (``--cloth-friction``: the ball-cloth pair value; 0
    in impulse mode, 0.2 in smooth mode), so the balls glide like pucks on an air table: a ball
    *resting or rolling* on a frictional surface (static friction, zero slip) gets a wrong,
    exploding gradient in impulse mode, and the object ball rests until it is hit;
  * ``slop`` = 1e-6 m instead of 1e-4 m: a contact whose gap at the start of a step exceeds
    the distance it closes in that step by less than ``slop`` is already active, but its time
    of impact is clamped to dt: the ball turns back up to 2 slop before the cushion, and in
    that band the end state moves like the naive scheme's (d position / d input along the
    normal +1 instead of -1), with an adjoint that matches neither; with the default 0.1 mm
    band the descent stalled on such a kink (final distance 1.9 cm, FD check off by 100 %).

Per iteration: one gradient (~1.5 s at T = 300 on 2 CPU cores) and one batched rollout.

Run: python examples/billiards_aim.py [--mode impulse|smooth] [--iterations 30] [--out DIR] [--quick]
Writes DIR/billiards_aim.png (table, both balls' paths for the initial guess and the final
shot, distance per iteration) and DIR/summary.json; exits 0 if the final distance is below
the tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing simad

import simad  # noqa: E402
from simad.contact import Contact, contact_rollout, contact_value_and_grad  # noqa: E402

R, MASS = 0.028, 0.17  # m, kg: a pool ball
HX, HY = 0.6, 0.3  # m: half the playing area (a 1.2 m x 0.6 m table)
BALL_E, BALL_MU = 0.9, 0.05  # ball restitution (every pair takes the larger value) and friction
CUE0 = np.array([-0.30, -0.10])
OBJ0 = np.array([0.15, 0.05])
POCKET = np.array([HX, HY])
TARGET = POCKET - 0.045  # m: in front of the corner pocket (the ball touches both cushions there)
DT, T = 4e-3, 300  # 1.2 s of play
STEPS = 0.3 * 0.5 ** np.arange(16)  # m/s: the line search's step lengths (0.3 m/s down to 9 um/s)
SETTLE = 250  # steps of settling before the shot
SLOP = 1e-6  # m: impulse mode's activation margin (default 1e-4), see the module docstring


def table(cloth_friction: float) -> simad.Model:
    """Floor, four cushions facing inwards, cue ball, object ball. ``cloth_friction`` is the
    ball-cloth pair value (pairs combine geoms as sqrt(mu_a mu_b)); cushions are frictionless."""
    b = simad.ModelBuilder("billiards")
    b.add_geom(0, "plane", friction=cloth_friction**2 / BALL_MU, restitution=0.0, name="cloth")
    for k, (axis, sign) in enumerate([(0, 1), (0, -1), (1, 1), (1, -1)]):
        normal = np.zeros(3)
        normal[axis] = -sign  # a plane's normal is the z axis of its frame: point it into the table
        x = np.cross(normal, [0.0, 0.0, 1.0])
        rot = np.stack([x, np.cross(normal, x), normal], 1)
        pos = np.zeros(3)
        pos[axis] = sign * (HX if axis == 0 else HY)
        b.add_geom(0, "plane", pos=pos, rot=rot, friction=0.0, restitution=0.0, name=f"cushion{k}")
    for name in ("cue", "object"):
        b.add_body(name, 0, mass=MASS, inertia=np.eye(3) * 0.4 * MASS * R**2)
        b.add_joint(name, name + "_free", type="free")
        b.add_geom(name, "sphere", size=(R,), friction=BALL_MU, restitution=BALL_E, name=name + "_ball")
    return b.finalize()


def initial_guess(speed: float = 1.0, offset: float = 0.5) -> np.ndarray:
    """Aim at the object ball's centre shifted sideways by ``offset`` radii: a cut shot that hits."""
    d = OBJ0 - CUE0
    u = d / np.linalg.norm(d)
    aim = OBJ0 - offset * R * np.array([-u[1], u[0]])
    a = aim - CUE0
    return speed * a / np.linalg.norm(a)


class Shot:
    """The rollout and the loss of a shot, for one table and contact mode."""

    def __init__(self, mode: str, cloth_friction: float):
        self.model = table(cloth_friction)
        if mode == "impulse":
            self.contact = Contact(mode=mode, slop=SLOP)
        else:
            self.contact = Contact(mode=mode, friction_eps=0.05, softness=3e-4)
        placed = np.concatenate([[*CUE0, R, 1, 0, 0, 0], [*OBJ0, R, 1, 0, 0, 0]])
        # let the balls settle on the cloth first (the smooth contact's spring holds them a little
        # above z = R, and a ball dropped onto it would still bob when it is hit)
        self.q0 = contact_rollout(self.model, placed, None, DT, steps=SETTLE, contact=self.contact).q[0, -1]
        self.obj = slice(7, 9)  # the object ball's x, y in q
        weight = np.zeros(self.model.nq)
        weight[self.obj] = 1.0
        ref = self.q0.copy()
        ref[self.obj] = TARGET
        self.cost = simad.QuadraticCost(terminal_q_weight=weight, q_ref=ref)

    def qd0(self, v) -> np.ndarray:
        v = np.atleast_2d(v)
        qd = np.zeros((len(v), self.model.nv))
        qd[:, :2] = v  # the cue ball's linear velocity (body frame = world frame at the start)
        return qd

    def rollout(self, v):
        """Paths (B, T+1, 2, 2) of (cue, object) x, y and the object's final distance to the target (B,)."""
        tr = contact_rollout(self.model, self.q0, self.qd0(v), DT, steps=T, contact=self.contact)
        paths = tr.q[:, :, [[0, 1], [7, 8]]]
        return paths, np.linalg.norm(paths[:, -1, 1] - TARGET, axis=1)

    def value_and_grad(self, v):
        g = contact_value_and_grad(self.model, self.q0, self.qd0(v), DT, self.cost, steps=T, contact=self.contact,
                                   params=[])
        return float(g.loss[0]), g.qd0[0, :2].copy(), g.quality

    def fd_grad(self, v, h: float = 1e-6) -> np.ndarray:
        """Central differences of L along vx and vy (one batched rollout of 4 envs)."""
        cand = np.array([v + h * e for e in np.eye(2)] + [v - h * e for e in np.eye(2)])
        _, d = self.rollout(cand)
        loss = 0.5 * d**2
        return (loss[:2] - loss[2:]) / (2 * h)


def run(mode: str = "impulse", iterations: int = 30, tolerance: float = 0.04, cloth_friction: float | None = None,
        out: str | Path | None = None, verbose: bool = True) -> dict:
    """Gradient descent on the cue ball's velocity; returns the summary (and writes the plot and
    summary.json into ``out`` if given)."""
    if cloth_friction is None:
        cloth_friction = 0.0 if mode == "impulse" else 0.2
    shot = Shot(mode, cloth_friction)
    v = initial_guess()
    v_init = v.copy()
    history = []
    t0 = time.perf_counter()
    for it in range(iterations):
        loss, g, _ = shot.value_and_grad(v)
        dist = float(np.sqrt(2 * loss))
        history.append({"iteration": it, "loss": loss, "distance_m": dist, "vx": float(v[0]), "vy": float(v[1])})
        if verbose:
            print(f"iter {it:2d}  loss {loss:.3e}  distance {100 * dist:6.2f} cm  "
                  f"speed {np.linalg.norm(v):.3f} m/s  angle {np.degrees(np.arctan2(v[1], v[0])):7.3f} deg", flush=True)
        if dist < 0.25 * tolerance:
            break
        gn = np.linalg.norm(g)
        if not np.isfinite(gn) or gn == 0.0:
            break  # no collision (or a non-finite gradient): nothing to descend along
        cands = v - STEPS[:, None] * (g / gn)
        _, d = shot.rollout(cands)
        k = int(np.argmin(d))
        if d[k] >= dist:
            break  # no step along -g helps: a (local) minimum at the resolution of the line search
        v = cands[k]
    elapsed = time.perf_counter() - t0
    loss, g, quality = shot.value_and_grad(v)
    fd = shot.fd_grad(v)
    paths0, d0 = shot.rollout(v_init)
    paths1, d1 = shot.rollout(v)
    final = float(d1[0])
    history.append({"iteration": len(history), "loss": loss, "distance_m": final, "vx": float(v[0]), "vy": float(v[1])})
    summary = {
        "mode": mode, "cloth_friction": cloth_friction, "dt": DT, "steps": T,
        "target_xy_m": TARGET.tolist(), "tolerance_m": tolerance,
        "initial_distance_m": float(d0[0]), "final_distance_m": final,
        "initial_velocity": v_init.tolist(), "final_velocity": v.tolist(),
        "final_speed_m_s": float(np.linalg.norm(v)), "final_angle_deg": float(np.degrees(np.arctan2(v[1], v[0]))),
        "iterations": len(history) - 1, "gradient_calls": len(history), "time_s": elapsed,
        "gradient_quality": {
            "mode_switches": int(quality.mode_switches[0]), "max_adjoint_growth": float(quality.max_growth[0]),
            "max_growth_step": int(quality.max_growth_step[0]),
            "grad_v": g.tolist(), "fd_grad_v": fd.tolist(),
            "fd_rel_error": float(np.linalg.norm(g - fd) / max(np.linalg.norm(fd), np.linalg.norm(g), 1e-12)),
        },
        "success": final < tolerance,
        "history": history,
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        plot(out / "billiards_aim.png", paths0[0], paths1[0], history, summary)
    return summary


def plot(path: Path, before: np.ndarray, after: np.ndarray, history: list, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [2.2, 1]})
    ax.add_patch(plt.Rectangle((-HX, -HY), 2 * HX, 2 * HY, color="#2e7d4f", zorder=0))
    for cx in (-HX, 0.0, HX):
        for cy in (-HY, HY):
            ax.add_patch(plt.Circle((cx, cy), 0.05, color="black", zorder=1))
    ax.add_patch(plt.Circle(TARGET, summary["tolerance_m"], fill=False, ls=":", color="yellow", zorder=2))
    for paths, style, label in ((before, "--", "initial guess"), (after, "-", "final shot")):
        ax.plot(paths[:, 0, 0], paths[:, 0, 1], style, color="white", lw=1.5, label=f"cue ball, {label}")
        ax.plot(paths[:, 1, 0], paths[:, 1, 1], style, color="orange", lw=1.5, label=f"object ball, {label}")
        ax.add_patch(plt.Circle(paths[-1, 1], R, color="orange", alpha=0.6 if style == "-" else 0.3, zorder=3))
    ax.add_patch(plt.Circle(CUE0, R, color="white", zorder=3))
    ax.add_patch(plt.Circle(OBJ0, R, color="orange", zorder=3))
    ax.plot(*TARGET, "x", color="yellow", ms=9, label="target (tolerance circle dotted)")
    ax.set_xlim(-HX - 0.06, HX + 0.06)
    ax.set_ylim(-HY - 0.06, HY + 0.06)
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_title(f"billiards shot ({summary['mode']} contact): final distance {100 * summary['final_distance_m']:.2f} cm")
    ax.legend(loc="lower left", fontsize=7, framealpha=0.8)
    ax2.semilogy([h["iteration"] for h in history], [100 * h["distance_m"] for h in history], "o-")
    ax2.axhline(100 * summary["tolerance_m"], color="gray", ls=":", label="tolerance")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("object ball to target [cm]")
    ax2.set_title("distance per iteration (loss = d^2 / 2)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("impulse", "smooth"), default="impulse", help="contact mode")
    ap.add_argument("--iterations", type=int, default=30, help="most gradient-descent iterations")
    ap.add_argument("--tolerance", type=float, default=0.04, help="m: success distance to the target")
    ap.add_argument("--cloth-friction", type=float, default=None,
                    help="ball-cloth friction (default: 0 in impulse mode, 0.2 in smooth mode)")
    ap.add_argument("--out", default="demo-output/billiards_aim", help="directory for the plot and summary.json")
    ap.add_argument("--quick", action="store_true", help="at most 8 iterations")
    args = ap.parse_args(argv)
    iterations = min(args.iterations, 8) if args.quick else args.iterations
    s = run(args.mode, iterations, args.tolerance, args.cloth_friction, args.out)
    q = s["gradient_quality"]
    print(f"{s['mode']}: object ball {100 * s['final_distance_m']:.2f} cm from the target after {s['iterations']} "
          f"iterations ({s['time_s']:.1f} s; started at {100 * s['initial_distance_m']:.1f} cm), shot "
          f"{s['final_speed_m_s']:.3f} m/s at {s['final_angle_deg']:.2f} deg; gradient: {q['mode_switches']} contact "
          f"mode switches, FD rel. error {q['fd_rel_error']:.1e}: {'POCKETED' if s['success'] else 'MISSED'}; "
          f"wrote {Path(args.out) / 'billiards_aim.png'}")
    return 0 if s["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
