"""The float32 and Taichi-debug runs of ``test_rollout.test_float32_and_debug_mode_agree_with_float64``.

Both are process-wide runtime settings, so each runs in a fresh interpreter with its own
(empty) kernel cache and compiles for about a minute and a half. The session (conftest) starts
them in the background once its prewarm is done, so they compile on the core that the serial
tests leave idle; the test then collects them (or, run alone, starts them itself).
"""

import os
import subprocess
import sys

import numpy as np

SUB = r"""
import sys, numpy as np, simad
from simad import models


def run(path):
    m = models.planar_chain(3)
    u = 0.3 * np.sin(np.arange(30)[:, None] * 0.2 + np.arange(3))
    g = simad.value_and_grad(m, [0.1, 0.2, 0.3], np.zeros(3), u, 0.01, simad.QuadraticCost(terminal_q_weight=2.0))
    tr = simad.rollout(m, [0.1, 0.2, 0.3], np.zeros(3), u, 0.01, "rk4")
    np.save(path, np.concatenate([g.controls.ravel(), g.loss, tr.q.ravel()]))
"""
_MAIN = """
simad.init(arch="cpu", precision=sys.argv[1], debug=sys.argv[2] == "1")
run(sys.argv[3])
"""
_BACKGROUND: list = []


def _spawn(directory, precision, debug, root):
    out = directory / f"{precision}{debug}.npy"
    # f32 in compile mode "fast" (3x quicker to compile; it rounds differently from "balanced",
    # ~1e-11 relative, far inside f32's tolerance), debug in "balanced" (measured: debug compiles
    # slower in "fast"; and so the default mode is checked against the session's "fast" run)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
               SIMAD_COMPILE="balanced" if debug else "fast", SIMAD_CACHE_DIR=str(directory / f"cache-{precision}{debug}"))
    proc = subprocess.Popen([sys.executable, "-c", SUB + _MAIN, precision, str(int(debug)), str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    return proc, out


def start(directory, root=None):
    """Starts the debug (f64) and the f32 run; returns [(process, output path)] x 2."""
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [_spawn(directory, "f64", True, root), _spawn(directory, "f32", False, root)]


def start_background(directory) -> None:
    _BACKGROUND[:] = start(directory)


def take():
    """The background runs (once), or None."""
    runs = list(_BACKGROUND) or None
    _BACKGROUND.clear()
    return runs


def stop_background() -> None:
    for proc, _ in _BACKGROUND:
        proc.kill()
    _BACKGROUND.clear()


def finish(proc, out):
    try:
        _, err = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err[-3000:]
    return np.load(out)
