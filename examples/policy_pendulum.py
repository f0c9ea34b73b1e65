"""Policy learning with a server-side policy: swing a torque-limited pendulum up with an MLP trained
by analytic policy gradients through batched rollouts, against a finite-difference baseline
given the same wall-clock budget.

The pendulum: a 1 m, 1 kg rod on a hinge (axis y; hanging down at q = 0), damping 0.05 N m s,
motor limited to +-3 N m: less than the 4.9 N m gravity torque of the horizontal rod, so it has
to pump energy and swing up. The policy: simad's MLP (observation cos q, sin q, 0.25 qd; two
tanh layers of 32; tanh output times 3 N m; 1,217 weights), evaluated by the server inside the
fused rollout kernel at every step. The task: from random states (q in [-pi, pi], qd in
[-1, 1] rad/s), 3 s at dt = 20 ms (150 steps), the loss per env

    L = sum_t 1/2 |p_tip(q_t) - (0, 0, 1)|^2 + 1/2 0.01 qd_t^2 + 1/2 0.001 u_t^2

(the built-in QuadraticCost: the tip's distance to the upright position, plus small velocity
and torque terms; the tip term is 1 + cos q, so the cost is periodic in q like the policy).

Two learners, for the same wall time (``--budget`` seconds, or the time APG takes for
``--iterations``; the server's warm-up and the first compile excluded):
  * APG: one ``value_and_grad`` call per iteration on a batch of 64 envs (the loss and its
    exact gradient w.r.t. all the weights, through the 150 steps and the policy), then Adam.
  * FD (the baseline): antithetic finite differences along 8 random directions (16 batched
    ``rollout`` calls of the same 64 envs per iteration; the loss computed here in numpy,
    checked against the server's value), then the same Adam. This is the zeroth-order
    "evolution strategies" estimator; a REINFORCE estimator needs a stochastic policy and
    more samples still.
Both are scored on the same 64 held-out initial states (a grid): the mean loss per step, and
the success rate (the tip above 0.9 m over the last 0.5 s).

Run: python examples/policy_pendulum.py [--budget 40] [--iterations N] [--fd-iterations N] [--out DIR]
[--seed 0]
Writes DIR/policy_pendulum.png (learning curves vs wall time, and the held-out swing-ups of
the trained APG policy) and DIR/summary.json; exits 0 if the APG policy swings up at least
80 % of the held-out states.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from _local_server import local_server

DT, T, B = 0.02, 150, 64
TORQUE = 3.0  # N m
W_TIP, W_QD, W_U = 1.0, 0.01, 0.001
COST = {"frames": ["tip"], "frame_weight": [W_TIP], "frame_ref": [[0.0, 0.0, 1.0]], "terminal_frame_weight": [W_TIP],
        "qd_weight": [W_QD], "terminal_qd_weight": [W_QD], "u_weight": [W_U]}
PENDULUM = {
    "name": "pendulum",
    "bodies": [{"name": "rod", "parent": "world", "mass": 1.0, "com": [0, 0, -0.5], "inertia": [1 / 12, 1 / 12, 1e-3]}],
    "joints": [{"name": "hinge", "body": "rod", "type": "revolute", "axis": [0, 1, 0], "damping": 0.05}],
    "actuators": [{"joint": "hinge", "gear": 1.0, "ctrl_range": [-TORQUE, TORQUE]}],
    "sites": [{"name": "tip", "body": "rod", "pos": [0, 0, -1.0]}],
}
HIDDEN, OBS_SCALE = (32, 32), [1.0, 1.0, 0.25]
LR, CLIP = 0.02, 1.0  # Adam step; the per-step gradient is rescaled to norm <= CLIP
FD_DIRECTIONS, FD_SIGMA = 8, 0.02
EVAL_EVERY = 2.0  # s of training time between held-out evaluations


def loss_numpy(q, qd, u) -> np.ndarray:
    """COST per env from a trajectory (q (B, T+1, 1), qd (B, T+1, 1), u (B, T, 1)); the tip of the
    rod is at (-sin q, 0, -cos q), so |p_tip - (0, 0, 1)|^2 = 2 + 2 cos q."""
    tip = 2.0 + 2.0 * np.cos(q[..., 0])
    return 0.5 * (W_TIP * tip.sum(1) + W_QD * (qd[..., 0] ** 2).sum(1) + W_U * (u[..., 0] ** 2).sum(1))


class Adam:
    def __init__(self, n: int, lr: float):
        self.m, self.v, self.k, self.lr = np.zeros(n), np.zeros(n), 0, lr

    def step(self, w, g):
        n = np.linalg.norm(g)
        if n > CLIP:
            g = g * (CLIP / n)
        self.k += 1
        self.m = 0.9 * self.m + 0.1 * g
        self.v = 0.999 * self.v + 0.001 * g * g
        return w - self.lr * (self.m / (1 - 0.9**self.k)) / (np.sqrt(self.v / (1 - 0.999**self.k)) + 1e-8)


class Task:
    def __init__(self, client, seed: int):
        from simad_client import MLPPolicy

        self.c = client
        self.info = client.load_model(spec=PENDULUM)
        self.policy0 = MLPPolicy.for_model(self.info, HIDDEN, obs_scale=OBS_SCALE, seed=seed)
        a, v = np.meshgrid(np.linspace(-np.pi, np.pi, 16, endpoint=False), np.linspace(-1, 1, 4))
        self.eval_q0, self.eval_qd0 = a.reshape(-1, 1), v.reshape(-1, 1)

    def rollout(self, policy, q0, qd0):
        return self.c.rollout(self.info.model_id, q0, qd0, None, DT, policy=policy, steps=T)

    def value_and_grad(self, policy, q0, qd0):
        return self.c.value_and_grad(self.info.model_id, q0, qd0, None, DT, COST, policy=policy, steps=T)

    def evaluate(self, policy) -> dict:
        tr = self.rollout(policy, self.eval_q0, self.eval_qd0)
        height = -np.cos(tr.q[:, -int(0.5 / DT):, 0])  # tip height, m
        return {"loss_per_step": float(loss_numpy(tr.q, tr.qd, tr.u).mean() / T),
                "success": float(np.mean(height.min(1) > 0.9)), "q": tr.q[:, :, 0]}


def train(task: Task, method: str, budget: float, seed: int, progress=None, max_iterations: int | None = None) -> dict:
    """``method`` "apg" or "fd" for ``budget`` seconds of training (or ``max_iterations``);
    returns its curve and policy."""
    rng = np.random.default_rng(seed)
    policy = task.policy0
    w, opt = policy.weights.copy(), Adam(policy.num_params, LR)
    curve, calls, elapsed, next_eval, it = [], 0, 0.0, 0.0, 0
    while True:
        if elapsed >= next_eval:  # a held-out score (not counted in the budget)
            ev = task.evaluate(policy.with_weights(w))
            curve.append({"time_s": elapsed, "iteration": it, "loss_per_step": ev["loss_per_step"],
                          "success": ev["success"]})
            if progress:
                progress(method, elapsed, budget, ev)
            next_eval = (np.floor(elapsed / EVAL_EVERY) + 1) * EVAL_EVERY
        if elapsed >= budget or it == max_iterations:
            break
        t0 = time.perf_counter()
        q0, qd0 = rng.uniform(-np.pi, np.pi, (B, 1)), rng.uniform(-1, 1, (B, 1))
        if method == "apg":
            g = task.value_and_grad(policy.with_weights(w), q0, qd0)
            grad = g.policy / (B * T)
            calls += 1
        else:
            d = rng.standard_normal((FD_DIRECTIONS, w.size))
            grad = np.zeros_like(w)
            for k in range(FD_DIRECTIONS):
                lp, lm = (loss_numpy(*_qqu(task.rollout(policy.with_weights(w + s * FD_SIGMA * d[k]), q0, qd0))).sum()
                          for s in (1.0, -1.0))
                grad += (lp - lm) / (2 * FD_SIGMA) * d[k] / (FD_DIRECTIONS * B * T)
            calls += 2 * FD_DIRECTIONS
        w = opt.step(w, grad)
        it += 1
        elapsed += time.perf_counter() - t0
    final = task.evaluate(policy.with_weights(w))
    if curve[-1]["iteration"] != it:
        curve.append({"time_s": elapsed, "iteration": it, "loss_per_step": final["loss_per_step"],
                      "success": final["success"]})
    return {"method": method, "iterations": it, "calls": calls, "env_steps": calls * B * T, "time_s": elapsed,
            "curve": curve, "final_loss_per_step": final["loss_per_step"], "final_success": final["success"],
            "weights": w, "eval_q": final["q"]}


def _qqu(tr):
    return tr.q, tr.qd, tr.u


def run(address: str, budget: float, seed: int, out: Path | None, verbose: bool = True,
        max_iterations: int | None = None, fd_iterations: int | None = None) -> dict:
    """Trains APG for ``budget`` s (or ``max_iterations``), then FD for the time APG took (or
    exactly ``fd_iterations``: a budget that does not depend on the host's speed)."""
    from simad_client import Client

    def progress(method, elapsed, total, ev):
        if verbose:
            print(f"{method:>3}  {elapsed:5.1f}/{total:.0f} s  held-out loss/step {ev['loss_per_step']:.3f}  "
                  f"swung up {100 * ev['success']:5.1f} %", flush=True)

    with Client(address, timeout=600) as c:
        task = Task(c, seed)
        # the baseline's numpy loss must be the server's built-in cost, or the comparison is moot;
        # these two batched calls also compile (first run) the kernels both learners use
        q0, qd0 = task.eval_q0, task.eval_qd0
        server = task.value_and_grad(task.policy0, q0, qd0).loss
        mine = loss_numpy(*_qqu(task.rollout(task.policy0, q0, qd0)))
        if not np.allclose(server, mine, rtol=1e-9, atol=1e-9):
            raise RuntimeError(f"numpy loss {mine} differs from the server's {server}")
        runs = {"apg": train(task, "apg", budget, seed, progress, max_iterations)}
        if fd_iterations is None:
            runs["fd"] = train(task, "fd", runs["apg"]["time_s"], seed, progress)
        else:
            runs["fd"] = train(task, "fd", math.inf, seed, progress, fd_iterations)
    apg = runs["apg"]
    summary = {
        "budget_s": budget, "batch": B, "steps": T, "dt": DT, "policy_weights": int(task.policy0.num_params),
        "hidden": list(HIDDEN),
        **{f"{k}_{m}": runs[m][k] for m in runs for k in ("iterations", "calls", "env_steps", "time_s",
                                                        "final_loss_per_step", "final_success")},
        "curves": {m: runs[m]["curve"] for m in runs},
        "success": apg["final_success"] >= 0.8,
    }
    if verbose:
        for m in ("apg", "fd"):
            r = runs[m]
            print(f"{m}: {r['iterations']} iterations, {r['calls']} calls, {r['env_steps'] / 1e6:.1f}M env-steps in "
                  f"{r['time_s']:.1f} s -> held-out loss/step {r['final_loss_per_step']:.3f}, "
                  f"swung up {100 * r['final_success']:.0f} %")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        np.save(out / "policy_weights.npy", apg["weights"])
        _plot(runs, out / "policy_pendulum.png")
    return summary


def _plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for m, label in (("apg", "analytic policy gradient"), ("fd", "finite differences (8 antithetic directions)")):
        c = runs[m]["curve"]
        t = [p["time_s"] for p in c]
        ax[0].plot(t, [p["loss_per_step"] for p in c], marker="o", ms=3, label=label)
        ax[1].plot(t, [100 * p["success"] for p in c], marker="o", ms=3, label=label)
    ax[0].set(xlabel="training wall time, s", ylabel="held-out loss per step", title="learning curve")
    ax[1].set(xlabel="training wall time, s", ylabel="held-out states swung up, %", ylim=(-3, 103),
              title="success (tip > 0.9 m over the last 0.5 s)")
    ax[0].legend()
    q = runs["apg"]["eval_q"]
    tt = np.arange(q.shape[1]) * DT
    for row in q:
        ax[2].plot(tt, -np.cos(row), lw=0.8, alpha=0.6)
    ax[2].axhline(0.9, color="k", ls=":", lw=0.8)
    ax[2].set(xlabel="t, s", ylabel="tip height, m (1 = upright)", ylim=(-1.05, 1.05),
              title="trained APG policy, 64 held-out starts")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=40.0, help="training wall time per method, s")
    ap.add_argument("--iterations", type=int, default=None,
                    help="stop APG after this many iterations (the baseline then gets the time APG took)")
    ap.add_argument("--fd-iterations", type=int, default=None,
                    help="train the FD baseline for exactly this many iterations (default: APG's wall time)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("policy_out"))
    args = ap.parse_args(argv)
    print("starting a local simad server (the first run compiles the batched kernels, about a minute) ...",
          flush=True)
    with local_server() as address:
        s = run(address, args.budget, args.seed, args.out, max_iterations=args.iterations,
                fd_iterations=args.fd_iterations)
    print(f"wrote {args.out / 'policy_pendulum.png'} and {args.out / 'summary.json'}")
    return 0 if s["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
