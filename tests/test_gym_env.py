"""simad_client.gym: Gymnasium environments stepped by a real server on 127.0.0.1 (in-process
thread, port 0): the env checker, vector shapes, seeding, equality with the engine's rollout,
truncation, next-step autoreset, termination on divergence."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

gymnasium = pytest.importorskip("gymnasium")

from gymnasium.utils.env_checker import check_env  # noqa: E402
from gymnasium.vector import AutoresetMode  # noqa: E402
from serving import ServerThread  # noqa: E402
from simad_client import Client, WireError  # noqa: E402
from simad_client.gym import QuadraticReward, SimadEnv, SimadVectorEnv  # noqa: E402

import simad  # noqa: E402
from simad import models  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DT = 0.01
CART = (-20.0, 20.0)  # the shipped cart-pole's actuator range (ModelInfo does not carry it)


@pytest.fixture(scope="module")
def srv():
    with ServerThread(max_batch=64, max_steps=1000) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv):
    with Client(srv.address, timeout=300) as c:
        yield c


@pytest.fixture(scope="module")
def cartpole(client):
    return client.load_model(builtin="cartpole")


def vec(client, cartpole, n=4, **kw):
    kw.setdefault("ctrl_range", CART)
    return SimadVectorEnv(client, cartpole, num_envs=n, dt=DT, horizon=kw.pop("horizon", 100), **kw)


def test_client_imports_without_gymnasium():
    code = ("import sys; sys.modules['gymnasium'] = None\n"
            "import simad_client\n"
            "try:\n    import simad_client.gym\nexcept ImportError as e:\n    print('ImportError:', e)\n")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "clients", "python"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ImportError" in out.stdout and "pip install gymnasium" in out.stdout


def test_single_env_passes_the_checker(client, cartpole):
    env = SimadEnv(client, cartpole, dt=DT, horizon=20, ctrl_range=CART)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=1)
    assert obs.shape == (4,) and obs.dtype == np.float64 and info == {}
    for _ in range(20):
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        assert isinstance(r, float) and info == {"diverged": False} and not term
    assert trunc  # horizon 20
    env.close()
    assert client.health() == "SERVING"  # the env does not close a client it was given


def test_the_action_box_defaults_to_the_models_control_range(client, cartpole):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cart-pole's motor has a range: no warning
        env = SimadEnv(client, cartpole, dt=DT, horizon=5)
    np.testing.assert_array_equal(env.action_space.low, [-20.0])  # ctrlrange="-20 20" in cartpole.xml
    np.testing.assert_array_equal(env.action_space.high, [20.0])
    env.close()


def test_single_env_on_an_address_and_a_chain(srv):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Client(srv.address, timeout=300) as c:
            chain = c.load_model(builtin="planar_chain_2")
        env = SimadEnv(srv.address, chain.model_id, dt=DT)  # its own Client; no ctrl_range: [-1, 1]
    assert any("without a control range (joint1, joint2)" in str(w.message) for w in caught)
    np.testing.assert_array_equal(env.action_space.low, [-1, -1])
    check_env(env, skip_render_check=True)
    env.close()


def test_vector_shapes_and_dtypes(client, cartpole):
    envs = vec(client, cartpole, n=5)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.observation_space.shape == (5, 4) and envs.action_space.shape == (5, 1)
    np.testing.assert_array_equal(envs.single_action_space.low, [-20.0])
    obs, info = envs.reset(seed=0)
    assert obs.shape == (5, 4) and obs.dtype == np.float64 and info == {}
    assert envs.observation_space.contains(obs)
    envs.action_space.seed(0)
    obs, rew, term, trunc, info = envs.step(envs.action_space.sample())
    assert obs.shape == (5, 4) and obs.dtype == np.float64 and envs.observation_space.contains(obs)
    assert rew.shape == (5,) and rew.dtype == np.float64
    assert term.shape == trunc.shape == (5,) and term.dtype == trunc.dtype == np.bool_
    assert not term.any() and not trunc.any() and info == {}
    with pytest.raises(ValueError, match="actions"):
        envs.step(np.zeros((4, 1)))
    envs.close()


def test_seeded_runs_repeat(client, cartpole):
    actions = np.random.default_rng(7).uniform(-20, 20, (12, 3, 1))

    def run(seed):
        envs = vec(client, cartpole, n=3, horizon=5)
        out = [envs.reset(seed=seed)[0]]
        for a in actions:
            obs, rew, term, trunc, _ = envs.step(a)
            out += [obs, rew, term, trunc]
        envs.close()
        return out

    first, again, other = run(3), run(3), run(4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_a_step_is_the_engines_rollout(client, cartpole):
    model = models.load("cartpole")
    rng = np.random.default_rng(0)
    for frame_skip, integrator in ((1, "semi_implicit_euler"), (3, "rk4")):
        envs = vec(client, cartpole, n=4, frame_skip=frame_skip, integrator=integrator)
        obs0, _ = envs.reset(seed=11)
        q0, qd0 = obs0[:, :2], obs0[:, 2:]
        u = rng.uniform(-15, 15, (4, 1))
        obs1, rew, *_ = envs.step(u)
        ref = simad.rollout(model, q0, qd0, np.repeat(u[:, None, :], frame_skip, axis=1), DT, integrator)
        np.testing.assert_array_equal(obs1, np.concatenate([ref.q[:, -1], ref.qd[:, -1]], axis=1))
        expected = -(np.sum(ref.q[:, -1] ** 2, 1) + 0.1 * np.sum(ref.qd[:, -1] ** 2, 1) + 1e-3 * np.sum(u**2, 1))
        np.testing.assert_allclose(rew, expected, rtol=1e-12)
        assert envs.dt == pytest.approx(DT * frame_skip)
        envs.close()


def test_actions_are_clipped_and_rewards_pluggable(client, cartpole):
    seen = []

    def reward(q, qd, u):
        seen.append(u.copy())
        return q[:, 0]

    envs = vec(client, cartpole, n=2, reward=reward)
    obs0, _ = envs.reset(seed=0, options={"q0": [0.0, 0.0], "qd0": np.zeros((2, 2))})
    np.testing.assert_array_equal(obs0, np.zeros((2, 4)))
    obs, rew, *_ = envs.step(np.array([[100.0], [-5.0]]))
    np.testing.assert_array_equal(seen[0], [[20.0], [-5.0]])
    np.testing.assert_array_equal(rew, obs[:, 0])
    envs.close()
    weighted = QuadraticReward(q_weight=[0.0, 1.0], qd_weight=0.0, u_weight=0.0)
    envs = vec(client, cartpole, n=2, reward=weighted)
    obs, _ = envs.reset(seed=0)
    obs, rew, *_ = envs.step(np.zeros((2, 1)))
    np.testing.assert_allclose(rew, -obs[:, 1] ** 2, rtol=1e-12)  # q_goal filled in: qpos0 = 0
    envs.close()


def test_truncation_and_next_step_autoreset(client, cartpole):
    envs = vec(client, cartpole, n=3, horizon=3)
    twin = vec(client, cartpole, n=3, horizon=3)
    envs.reset(seed=5)
    twin.reset(seed=5)
    zero = np.zeros((3, 1))
    for t in range(3):
        obs, rew, term, trunc, _ = envs.step(zero)
        twin.step(zero)
        assert not term.any() and trunc.all() == (t == 2) and not (trunc.any() and t < 2)
    final = obs.copy()
    # next step: the action is ignored, every env restarts near qpos0, reward 0, no flags
    obs, rew, term, trunc, _ = envs.step(np.full((3, 1), 20.0))
    obs_twin, *_ = twin.step(zero)
    np.testing.assert_array_equal(obs, obs_twin)  # same draws from the same seeded generator
    assert not np.array_equal(obs, final)
    assert np.all(np.abs(obs) <= 0.1) and not rew.any() and not term.any() and not trunc.any()
    for t in range(3):  # a fresh episode of 3 steps
        obs, rew, term, trunc, _ = envs.step(zero)
        assert trunc.all() == (t == 2)
    # reset of a subset
    before = envs.state
    obs, _ = envs.reset(options={"reset_mask": np.array([False, True, False])})
    np.testing.assert_array_equal(obs[[0, 2], :2], before[0][[0, 2]])
    assert not np.array_equal(obs[1, :2], before[0][1])
    envs.close()
    twin.close()


def test_divergence_terminates_the_env_it_names(client, cartpole):
    model = models.load("cartpole")
    envs = vec(client, cartpole, n=4)
    qd0 = np.zeros((4, 2))
    qd0[1, 1] = qd0[3, 1] = 2e6  # over the engine's speed bound: the server reports divergence
    q0 = np.tile([0.1, 0.2], (4, 1))
    obs0, _ = envs.reset(seed=0, options={"q0": q0, "qd0": qd0})
    u = np.array([[1.0], [2.0], [3.0], [4.0]])
    obs, rew, term, trunc, info = envs.step(u)
    np.testing.assert_array_equal(term, [False, True, False, True])
    np.testing.assert_array_equal(info["diverged"], [False, True, False, True])
    assert "non-finite" in info["error"][1] and info["error"][0] is None
    np.testing.assert_array_equal(obs[[1, 3]], obs0[[1, 3]])  # last finite state kept
    assert rew[1] == rew[3] == 0.0
    ref = simad.rollout(model, q0[[0, 2]], qd0[[0, 2]], u[[0, 2], None, :], DT)
    np.testing.assert_array_equal(obs[[0, 2], :2], ref.q[:, -1])
    # the diverged envs restart on the next step
    obs, rew, term, trunc, info = envs.step(np.zeros((4, 1)))
    assert not term.any() and np.all(np.abs(obs[[1, 3]]) <= 0.1) and info == {}
    # a malformed request is not a divergence: it is raised
    with pytest.raises(WireError) as e:
        envs.step(np.full((4, 1), np.nan))
    assert (e.value.code, e.value.field) == ("INVALID_ARGUMENT", "rollout.controls")
    envs.close()

    single = SimadEnv(client, cartpole, dt=DT, ctrl_range=CART, divergence_reward=-100.0)
    single.reset(seed=0, options={"qd0": [0.0, 5e6]})
    _, r, term, trunc, info = single.step(np.zeros(1))
    assert term and not trunc and r == -100.0 and info["diverged"] and "non-finite" in info["error"]
    single.close()


def test_state_bounds_and_custom_termination(client, cartpole):
    envs = vec(client, cartpole, n=3, max_abs_state=1.0, terminate=lambda q, qd: q[:, 0] > 0.5)
    qd0 = np.array([[0.0, 0.0], [0.0, 3.0], [0.0, 0.0]])
    q0 = np.array([[0.0, 0.0], [0.0, 0.0], [0.9, 0.0]])
    envs.reset(seed=0, options={"q0": q0, "qd0": qd0})
    _, _, term, trunc, info = envs.step(np.zeros((3, 1)))
    np.testing.assert_array_equal(term, [False, True, True])
    assert info == {}
    envs.close()
    with pytest.raises(ValueError, match="ctrl_range"):
        vec(client, cartpole, ctrl_range=[[-1, 1, 2]])
    with pytest.raises(ValueError, match="q0"):
        vec(client, cartpole).reset(options={"q0": [0.0]})


def test_random_policy_example_runs():
    cmd = [sys.executable, os.path.join(ROOT, "examples", "gym_random_policy.py"), "--steps", "60", "--envs", "4",
           "--horizon", "20"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "episodes finished, mean return" in out.stdout and "env-steps/s" in out.stdout
