"""Shared fixtures: the runtime (CPU, f64) and seeded random generators.

Before anything else the session compiles, in two subprocesses side by side that then exit
(Taichi writes its offline cache at exit), every serial (small-batch) service kernel and the
kernels several later processes share (see _SHARED_CONTACT, _SHARED_REST): the test processes, the server workers and
the demo then load kernels instead of each compiling them cold (on a fresh machine that is the
difference between one compile and five). Set SIMAD_TEST_PREWARM=0 to skip it.

Under pytest-xdist (scripts/test.sh runs ``-n 2 --dist loadfile``: most tests are
single-threaded Python and Taichi compiles, so one process leaves a core idle) the prewarm runs
once, in the controlling process before its workers start; each worker then runs whole files.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import simad

os.environ.setdefault("SIMAD_ARCH", "cpu")
# The suite is compile-bound: compile mode "fast" (Taichi's advanced_optimization off) compiles
# ~3x quicker (tests/test_contact.py from an empty cache: 400 s -> 128 s); kernels run up to
# ~1.5x slower and round differently in the last bits (1e-11 relative over a 20,000-step
# rollout). Every process of the session (the prewarm, the servers, the examples) inherits it,
# so the bit-for-bit comparisons compare like with like. The default mode
# ("balanced") is covered by the debug run of test_rollout.test_float32_and_debug_mode_agree_
# with_float64 (f64, "balanced", equal to this session's result to 1e-12) and by the benchmarks.
# Set SIMAD_COMPILE=balanced to run the whole suite in the default mode.
os.environ.setdefault("SIMAD_COMPILE", "fast")


ROOT = Path(__file__).resolve().parents[1]


# Kernels that several processes of the session would otherwise each compile cold: the
# parallel linearize variant (in-process iLQR tests, the demo's and examples' servers), the
# contact kernels of the service tests' scene (plane, sphere, box), both modes, and the parallel
# rollout and reverse kernels (the policy example's server, B = 64).
_PREWARM_HEAD = r"""
import numpy as np, simad
simad.init(arch="cpu", precision="f64")
"""
_SHARED_CONTACT = r"""
b = simad.ModelBuilder("prewarm")
b.add_body("ball", 0, mass=1.0, inertia=(4e-3, 4e-3, 4e-3))
b.add_body("box", 0, mass=2.0, inertia=(1.3e-2, 1.3e-2, 1.3e-2))
b.add_joint("ball", "ball_free", type="free")
b.add_joint("box", "box_free", type="free")
b.add_geom(0, "plane", name="floor")
b.add_geom("ball", "sphere", size=(0.1,), name="ball_g")
b.add_geom("box", "box", size=(0.1, 0.1, 0.1), name="box_g")
s = b.finalize()
q0 = np.array([0, 0, 0.1, 1, 0, 0, 0, 0.5, 0, 0.1, 1, 0, 0, 0.0])
for mode in ("impulse", "smooth"):
    c = simad.Contact(mode=mode)
    simad.contact_vjp(s, q0, None, 1e-3, np.ones((1, 3, 14)), steps=2, contact=c)
    simad.contact_rollout(s, np.tile(q0, (2, 1)), None, 1e-3, steps=2, contact=c)
"""
_SHARED_REST = r"""
# articulated smooth contact: the contact variant of the rollout kernel (the reverse kernel is
# the same for every call; its shared pieces compile with it)
arm = simad.ModelBuilder("prewarm_arm")
arm.add_geom(0, "plane", name="floor")
arm.add_body("l1", 0, pos=(0, 0, 0.3), mass=1.0, com=(0.1, 0, 0), inertia=(0.01, 0.01, 0.01))
arm.add_joint("l1", "j1", "revolute", axis=(0, 1, 0))
arm.add_geom("l1", "sphere", size=(0.05,), pos=(0.2, 0, 0), name="tip")
arm = arm.finalize()
sm = simad.Contact(mode="smooth")
simad.rollout(arm, [0.3], [0.0], np.zeros((2, 0)), 1e-3, contact=sm)
simad.rollout_vjp(arm, [0.3], [0.0], np.zeros((2, 0)), 1e-3, q_bar=np.ones((1, 3, 1)), contact=sm)
# the parallel (B >= 16) rollout and reverse kernels: the policy-learning example's server
from simad import models
chain = models.planar_chain(1)
z = np.zeros((16, 1))
simad.value_and_grad(chain, z, z, None, 0.02, simad.QuadraticCost(q_weight=[1.0]), steps=2)
"""


def _prewarm() -> None:
    if os.environ.get("SIMAD_TEST_PREWARM", "1") == "0":
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("", "server", "clients/python")))
    serial = "from simad_server.jobs import warmup\nwarmup('serial')\n"
    parallel_linearize = ("from simad import models\nz = np.zeros((16, 2))\n"
                          "simad.linearize(models.planar_chain(2), z, z, z, 0.01)\n"
                          "simad.linearize(models.planar_chain(2), z, z, z, 0.01, 'rk4')\n")
    # two compiling processes, one per core, balanced by measured cold time (f64, compile mode
    # "fast", side by side; the CI log prints them): contact | serial + parallel linearize + rest
    # took 69 s | 123 s, contact + rest | serial + parallel linearize 112 s | 68 s, this split 88 s | 102 s.
    # Taichi's offline cache merges their writes under a lock
    logs = [tempfile.TemporaryFile("w+") for _ in range(2)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", _PREWARM_HEAD + code], env=env, stdout=subprocess.DEVNULL,
                              stderr=log, text=True)
             for code, log in zip((_SHARED_CONTACT + parallel_linearize, serial + _SHARED_REST), logs, strict=True)]
    took = [None, None]
    while None in took:  # each process's own wall time (they run side by side)
        for i, p in enumerate(procs):
            if took[i] is None and (p.poll() is not None or time.perf_counter() - t0 > 1800):
                if p.returncode is None:
                    p.kill()
                    p.wait()
                took[i] = time.perf_counter() - t0
        time.sleep(0.2)
    for p, log in zip(procs, logs, strict=True):  # best effort: a failure only means later compiles, but it is said
        log.seek(0)
        err = log.read()
        log.close()
        if p.returncode != 0:
            tail = "\n".join(line for line in err.splitlines() if not line.startswith("[Taichi]"))[-2000:]
            sys.stderr.write(f"\nconftest: a prewarm process failed (rc {p.returncode}); later tests compile cold:\n{tail}\n")
    sys.stderr.write(f"\nconftest: prewarm {took[0]:.0f} s and {took[1]:.0f} s (two processes side by side)\n")


def _xdist_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config):
    if not _xdist_worker(config) and not config.option.collectonly:
        _prewarm()


@pytest.fixture(scope="session", autouse=True)
def runtime(request, tmp_path_factory):
    if os.environ.get("SIMAD_TEST_PREWARM", "1") != "0" and not _xdist_worker(request.config):
        # a whole serial-suite run: use the core the serial tests leave idle (precision_runs);
        # under xdist both cores are busy, and the test starts the runs itself when it comes
        import precision_runs

        precision_runs.start_background(tmp_path_factory.mktemp("precision"))
    yield simad.init(arch="cpu", precision="f64")
    import precision_runs

    precision_runs.stop_background()  # not collected (e.g. -k): stop them


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
