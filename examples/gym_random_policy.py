"""A Gymnasium vector env over the network: a random policy on 8 remote cart-poles.

Starts a local simad server, loads the shipped cart-pole through the client and wraps it in
``simad_client.gym.SimadVectorEnv`` (one Rollout call per vector step for all envs). The
policy samples uniform forces in the actuator's range [-20, 20] N; an episode ends when the
pole tips more than 0.8 rad from upright (termination) or after --horizon steps (truncation);
the env resets it on the next step (gymnasium's next-step autoreset). The reward is the env's
default, -(|q|^2 + 0.1 |qd|^2 + 0.001 u^2): upright, centred and still scores best.

Run: python examples/gym_random_policy.py [--steps 1000] [--envs 8] [--horizon 200]
Needs gymnasium (pip install gymnasium). Prints the mean return of the finished episodes and
the env-steps per second; exits 0 if it ran every step and finished at least one episode.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _local_server import local_server

DT = 0.02  # s per env step (two simulator steps of 10 ms)
FALLEN = 0.8  # rad from upright


def run(address: str, steps: int, num_envs: int, horizon: int, seed: int) -> dict:
    from simad_client import Client
    from simad_client.gym import SimadVectorEnv

    with Client(address, timeout=300) as c:
        cartpole = c.load_model(builtin="cartpole")
        envs = SimadVectorEnv(c, cartpole, num_envs=num_envs, dt=DT / 2, frame_skip=2, horizon=horizon,
                              ctrl_range=(-20.0, 20.0), terminate=lambda q, qd: np.abs(q[:, 1]) > FALLEN)
        envs.action_space.seed(seed)
        envs.reset(seed=seed)
        envs.step(envs.action_space.sample())  # first call: the server loads or compiles its kernels
        envs.reset(seed=seed)
        returns, lengths = [], []
        ret = np.zeros(num_envs)
        length = np.zeros(num_envs, int)
        resetting = np.zeros(num_envs, bool)  # next-step autoreset: this step restarts these envs
        simulated = 0
        t0 = time.perf_counter()
        for _ in range(steps):
            _, reward, terminated, truncated, _ = envs.step(envs.action_space.sample())
            live = ~resetting
            simulated += int(live.sum())
            ret[live] += reward[live]
            length[live] += 1
            done = terminated | truncated
            returns += ret[done].tolist()
            lengths += length[done].tolist()
            ret[done], length[done] = 0.0, 0
            resetting = done
        wall = time.perf_counter() - t0
        envs.close()
    return {"episodes": len(returns), "mean_return": float(np.mean(returns)) if returns else float("nan"),
            "mean_length": float(np.mean(lengths)) if lengths else float("nan"), "vector_steps": steps,
            "env_steps": simulated, "wall_s": wall, "env_steps_per_s": simulated / wall,
            "vector_steps_per_s": steps / wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1000, help="vector steps")
    ap.add_argument("--envs", type=int, default=8, help="parallel envs")
    ap.add_argument("--horizon", type=int, default=200, help="env steps per episode before truncation")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with local_server() as address:
        r = run(address, args.steps, args.envs, args.horizon, args.seed)
    print(f"{r['episodes']} episodes finished, mean return {r['mean_return']:.2f}, mean length "
          f"{r['mean_length']:.1f} steps ({r['mean_length'] * DT:.2f} s)")
    print(f"{r['env_steps']} env steps in {r['wall_s']:.2f} s: {r['env_steps_per_s']:.0f} env-steps/s, "
          f"{r['vector_steps_per_s']:.0f} vector steps/s ({args.envs} envs, one server call per vector step)")
    return 0 if r["episodes"] > 0 and r["vector_steps"] == args.steps else 1


if __name__ == "__main__":
    sys.exit(main())
