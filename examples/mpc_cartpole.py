"""MPC over the network: swing a cart-pole up with a remote iLQR control session.

The controller loop runs here (client side, numpy only); every control period it sends the
measured state to the server's control session (FEEDBACK_PLAN mode) and gets back the next
feedback plan, warm-started from the previous one; it applies u = k_0 + K_0 (x - xref_0). The
"real" cart-pole is simulated by the server too (a one-step rollout per tick, with 2 % more
pole mass than the controller's model, so the plan is never exact).

Run: python examples/mpc_cartpole.py [--seconds 4] [--horizon 60]
Prints the achieved control rate and the final pole angle error; exits 0 if the pole ends
upright (the hinge within 0.1 rad of 0, which is up in simad/assets/cartpole.xml; it starts at
pi, hanging down).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _local_server import local_server

DT = 0.02  # s: control period and model step


def run(address: str, seconds: float, horizon: int, iterations: int) -> dict:
    from simad_client import Client

    with Client(address, timeout=300) as c:
        model = c.load_model(builtin="cartpole")
        mass = dict(model.params)["body_mass"].copy()
        mass[-1] *= 1.02  # the plant's pole is a little heavier than the controller believes
        cost = {"q_weight": [1.0, 1.0], "q_ref": [0.0, 0.0], "u_weight": [1e-2],
                "terminal_q_weight": [10.0, 100.0], "terminal_qd_weight": [10.0, 10.0]}
        q, qd = np.array([0.0, np.pi]), np.zeros(2)  # hanging down at rest (hinge 0 is upright)
        angles, ticks, t0 = [], 0, time.perf_counter()
        with c.control_session(model.model_id, DT, horizon, mode="plan", cost=cost, iterations=iterations) as s:
            for _ in range(int(seconds / DT)):
                plan = s.step(q, qd)
                dx = np.concatenate([q - plan.q_ref[0], qd - plan.qd_ref[0]])  # hinge + slider: plain difference
                u = plan.k[0] + plan.gains[0] @ dx
                tr = c.rollout(model.model_id, q, qd, u[None], DT, param_overrides={"body_mass": mass})
                q, qd = tr.q[0, -1], tr.qd[0, -1]
                angles.append(q[1])
                ticks += 1
        wall = time.perf_counter() - t0
    err = abs((angles[-1] + np.pi) % (2 * np.pi) - np.pi)  # distance to upright (0 mod 2 pi)
    return {"ticks": ticks, "rate_hz": ticks / wall, "final_angle_error_rad": float(err),
            "angles": np.array(angles), "upright": bool(err < 0.1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="simulated time")
    ap.add_argument("--horizon", type=int, default=40, help="MPC horizon, steps of 20 ms")
    ap.add_argument("--iterations", type=int, default=1, help="iLQR iterations per control tick")
    args = ap.parse_args(argv)
    with local_server() as address:
        r = run(address, args.seconds, args.horizon, args.iterations)
    print(f"{r['ticks']} control ticks at {r['rate_hz']:.1f} Hz achieved (the loop runs as fast as the server "
          f"answers; real time would need {1 / DT:.0f} Hz), final pole angle error {r['final_angle_error_rad']:.3f} rad: "
          f"{'upright' if r['upright'] else 'NOT upright'}")
    return 0 if r["upright"] else 1


if __name__ == "__main__":
    sys.exit(main())
