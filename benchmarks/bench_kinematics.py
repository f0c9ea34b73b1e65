"""FK + end-effector Jacobian throughput of the 7-DOF arm, beside Pinocchio, and cold starts.

Run: python benchmarks/bench_kinematics.py [--json out.json] [--quick]

Figures: configurations per second at B = 1, 1,000 and 100,000 (one launch per batch
computing every frame pose and the end-effector Jacobian), Pinocchio's single-thread loop
(computeFrameJacobian, which runs forward kinematics inside) in the same process, and the
cold-start costs in fresh interpreters: import + init, first call (compile or offline-cache
load), a second, different robot (must not compile again).
Target (2-core machine): batched >= 2M configurations/s, 2x Pinocchio's single thread.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import best_rate, machine, run_python, table, write_json  # noqa: E402

EE = "ee_link"

COLD = r"""
import json, time
t0 = time.perf_counter()
import numpy as np, simad, simad.models
simad.init()
t1 = time.perf_counter()
arm = simad.models.load("arm7")
q = np.zeros((4, arm.nq))
t2 = time.perf_counter()
simad.frame_jacobian(arm, q, "ee_link", return_pose=True)
t3 = time.perf_counter()
other = simad.models.load("quadruped")
t4 = time.perf_counter()
simad.frame_jacobian(other, simad.neutral(other, 4), "FL_foot", return_pose=True)
t5 = time.perf_counter()
from simad import kinematics as k
print(json.dumps({"import_init_s": t1 - t0, "first_call_s": t3 - t2, "second_robot_load_s": t4 - t3,
                  "second_robot_first_call_s": t5 - t4,
                  "compiled_variants": len(k._jacobian_kernel._primal.compiled_kernels)}))
"""


def bench_simad(batches, repeats):
    import simad
    import simad.models

    arm = simad.models.load("arm7")
    out = {}
    rng = np.random.default_rng(0)
    for B in batches:
        q = simad.random_configuration(arm, B, rng)
        r = best_rate(lambda q=q: simad.frame_jacobian(arm, q, EE, return_pose=True), B, repeats=repeats)
        out[B] = r["median_per_s"]
    return out


def bench_pinocchio(n=20000):
    try:
        import pinocchio as pin
    except ImportError:
        return None
    import simad.models

    pm = pin.buildModelFromUrdf(str(simad.models.asset_path("arm7.urdf")))
    data = pm.createData()
    fid = pm.getFrameId(EE)
    qs = [pin.randomConfiguration(pm) for _ in range(n)]

    def loop():
        for q in qs:
            pin.computeFrameJacobian(pm, data, q, fid, pin.LOCAL_WORLD_ALIGNED)

    return best_rate(loop, n, repeats=3)["median_per_s"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = ap.parse_args(argv)
    import simad

    simad.init()
    repeats = 2 if args.quick else 5
    ours = bench_simad([1, 1000, 100_000], repeats)
    pin_rate = bench_pinocchio(2000 if args.quick else 20000)
    with tempfile.TemporaryDirectory() as cache:
        cold_nocache = run_python(COLD, {"SIMAD_CACHE_DIR": cache})  # empty cache: real compiles
    cold_cached = run_python(COLD)  # default cache, warm from the run above / earlier runs
    rows = [[f"simad B={B}", rate, 1e6 / rate * (B if B == 1 else 1), (rate / pin_rate) if pin_rate else "n/a"] for B, rate in ours.items()]
    if pin_rate:
        rows.append(["pinocchio 1 thread", pin_rate, 1e6 / pin_rate, 1.0])
    print(f"FK (all frames) + end-effector Jacobian, 7-DOF arm, f64 - {machine()}")
    print(table(rows, ["engine", "configs/s", "us per call (B=1) / per config", "x pinocchio"]))
    print()
    print(table([["empty cache", *cold_nocache.values()], ["offline cache", *cold_cached.values()]],
                ["cold start", *cold_nocache.keys()]))
    result = {"machine": machine(), "simad_configs_per_s": ours, "pinocchio_configs_per_s": pin_rate,
              "cold_empty_cache": cold_nocache, "cold_offline_cache": cold_cached,
              "target_configs_per_s": 2e6, "batched_meets_target": ours[100_000] >= 2e6}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
