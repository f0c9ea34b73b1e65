"""Shared fixtures: the runtime (CPU, f64) and seeded random generators.

Before anything else the session compiles every serial (small-batch) service kernel once in a subprocess that
exits (Taichi writes its offline cache at exit): this process, the server workers and the
demo then load kernels instead of each compiling them cold (on a fresh machine that is the
difference between one compile and five). Set SIMAD_TEST_PREWARM=0 to skip it.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import simad

os.environ.setdefault("SIMAD_ARCH", "cpu")


ROOT = Path(__file__).resolve().parents[1]


def _prewarm() -> None:
    if os.environ.get("SIMAD_TEST_PREWARM", "1") == "0":
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("", "server", "clients/python")))
    code = "import simad; simad.init(arch='cpu', precision='f64'); from simad_server.jobs import warmup; warmup('serial')"
    subprocess.run([sys.executable, "-c", code], env=env, timeout=1800, capture_output=True)  # best effort


@pytest.fixture(scope="session", autouse=True)
def runtime():
    _prewarm()
    return simad.init(arch="cpu", precision="f64")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
