"""Shared fixtures: the runtime (CPU, f64) and seeded random generators."""

import os

import numpy as np
import pytest

import simad

os.environ.setdefault("SIMAD_ARCH", "cpu")


@pytest.fixture(scope="session", autouse=True)
def runtime():
    return simad.init(arch="cpu", precision="f64")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
