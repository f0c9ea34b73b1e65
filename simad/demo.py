"""The main job, for now: batched kinematics of the shipped 7-DOF arm (the service demo
replaces it when the gRPC server lands).

Run: python -m simad.demo [--batch N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="simad kinematics demo on the shipped 7-DOF arm")
    ap.add_argument("--batch", type=int, default=100_000, help="configurations per batched call")
    ap.add_argument("--targets", type=int, default=1000, help="IK targets to solve")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    import simad
    import simad.models

    cfg = simad.init()
    arm = simad.models.load("arm7")
    print(f"simad {simad.__version__} on {cfg.arch}/{cfg.precision} (ready in {time.perf_counter() - t0:.2f} s)")
    print(arm.summary())
    print(f"  frames: {', '.join(arm.frame_names)}")
    print(f"  differentiable parameters: {', '.join(arm.param_names)}")

    rng = np.random.default_rng(0)
    q = simad.random_configuration(arm, args.batch, rng)
    t = time.perf_counter()
    simad.frame_jacobian(arm, q, "ee_link", return_pose=True)  # compiles or loads the offline cache
    first = time.perf_counter() - t
    t = time.perf_counter()
    J, pos, rot = simad.frame_jacobian(arm, q, "ee_link", return_pose=True)
    dt = time.perf_counter() - t
    print(f"\nFK + end-effector Jacobian of {args.batch:,} configurations in one launch: "
          f"{dt * 1e3:.1f} ms ({args.batch / dt / 1e6:.2f} M configurations/s; first call {first:.2f} s)")
    reach = np.linalg.norm(pos, axis=1)
    manip = np.sqrt(np.maximum(np.linalg.det(J[:, :3] @ J[:, :3].transpose(0, 2, 1)), 0))
    print(f"  end-effector distance from the base: {reach.min():.3f} .. {reach.max():.3f} m")
    print(f"  translational manipulability sqrt(det(Jv Jv^T)): median {np.median(manip):.4f}, "
          f"{np.mean(manip < 1e-3) * 100:.1f} % of samples near a singularity")

    qt = simad.random_configuration(arm, args.targets, rng)
    tp, tr = simad.forward_kinematics(arm, qt)
    f = arm.frame_id("ee_link")
    t = time.perf_counter()
    simad.inverse_kinematics(arm, "ee_link", tp[:, f], tr[:, f])  # compiles or loads the offline cache
    first = time.perf_counter() - t
    t = time.perf_counter()
    res = simad.inverse_kinematics(arm, "ee_link", tp[:, f], tr[:, f])
    dt = time.perf_counter() - t
    ok = res.success
    print(f"\nInverse kinematics (full pose) of {args.targets:,} reachable targets: {ok.mean() * 100:.1f} % solved "
          f"in {dt * 1e3:.0f} ms (first call {first:.2f} s); worst residual {res.pos_residual[ok].max():.1e} m / "
          f"{res.rot_residual[ok].max():.1e} rad")
    far = simad.inverse_kinematics(arm, "ee_link", np.array([[3.0, 0.0, 0.5]]), restarts=2)
    print(f"  an unreachable target (3 m away) is reported: success={bool(far.success[0])}, "
          f"residual {far.pos_residual[0]:.3f} m")

    g = simad.forward_kinematics_vjp(arm, q[:1], pos_bar=_ee_cotangent(arm))
    print(f"\nGradient of the end-effector height w.r.t. q (reverse mode): {np.round(g[0], 4)}")
    print(f"  equals the Jacobian's z row:                              {np.round(J[0, 2], 4)}")
    return 0


def _ee_cotangent(arm):
    bar = np.zeros((1, arm.nframe, 3))
    bar[0, arm.frame_id("ee_link"), 2] = 1.0
    return bar


if __name__ == "__main__":
    raise SystemExit(main())
