"""The README's main job, end to end: a real server subprocess, remote planning, plots, summary."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_reach_demo_succeeds_and_writes_its_plots(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("", "server", "clients/python")))
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "reach_demo.py"), "--out", str(tmp_path),
                          "--iterations", "25"], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["success"] and summary["reach_error_m"] < 0.01 and summary["min_clearance_m"] > 0
    for name in ("cost.png", "joints.png", "path.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name


def test_mpc_example_swings_the_cartpole_up_over_the_network():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("", "server", "clients/python")))
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "mpc_cartpole.py"), "--seconds", "3",
                          "--horizon", "40", "--iterations", "1"], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "upright" in out.stdout and "Hz achieved" in out.stdout


def test_policy_example_learns_the_swing_up_and_beats_finite_differences(tmp_path):
    """A server-side MLP trained by analytic policy gradients (110 iterations: deterministic, the
    server's results are bit for bit) swings the pendulum up from the held-out states; the
    finite-difference baseline does not get close in the same time. Its budget is a fixed 70
    iterations, what APG's 110 take in wall time on an idle machine here (9.8 s against 10.2 s,
    2026-12-07): a wall-time budget made the comparison depend on the load of the CI host (the
    other test process), and the test failed once by 4 %."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("", "server", "clients/python")))
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "policy_pendulum.py"), "--iterations", "110",
                          "--fd-iterations", "70", "--budget", "600", "--out", str(tmp_path)], capture_output=True,
                         text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["iterations_apg"] == 110 and s["final_success_apg"] >= 0.8
    assert s["iterations_fd"] == 70 and s["calls_fd"] == 70 * 16
    assert s["final_success_fd"] < 0.2  # the baseline swings up almost nothing
    assert s["final_loss_per_step_apg"] < 0.5 * s["final_loss_per_step_fd"]
    first = s["curves"]["apg"][0]
    assert first["iteration"] == 0 and first["success"] < 0.2  # it started from a policy that cannot do it
    assert (tmp_path / "policy_pendulum.png").stat().st_size > 10_000
