"""Gymnasium environments simulated by a simad server (needs ``pip install gymnasium``, 1.x).

``SimadVectorEnv`` is a ``gymnasium.vector.VectorEnv`` of ``num_envs`` copies of one stored
model: each vector ``step`` is ONE ``Rollout`` call to the server for all the envs at once.
``SimadEnv`` is the single-env ``gymnasium.Env`` (it passes ``gymnasium.utils.env_checker
.check_env``). The rest of ``simad_client`` never imports gymnasium; only this module does.

    from simad_client import Client
    from simad_client.gym import SimadVectorEnv

    with Client("127.0.0.1:50051") as c:
        cartpole = c.load_model(builtin="cartpole")
        envs = SimadVectorEnv(c, cartpole, num_envs=8, dt=0.01, horizon=500, ctrl_range=(-20, 20))
        obs, info = envs.reset(seed=0)                       # (8, nq + nv) float64
        for _ in range(1000):
            obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())

Spaces and dynamics:

- observation: ``concat(q, qd)``, ``Box(-inf, inf, (nq + nv,), float64)`` (outputs of an f32
  server are widened to float64).
- action: the ``nu`` motor commands, ``Box(low, high, (nu,), float64)``: the actuators' control
  ranges from ModelInfo.ctrl_range, or ``ctrl_range=(low, high)`` (the same for every
  actuator) or an (nu, 2) array of rows (low, high). An actuator without a range (and without
  ``ctrl_range``) gets [-1, 1], and a warning says so.
  Actions are clipped to the box before they are sent (the server also clips to the model's
  own ctrl_range); the reward sees the clipped action.
- step: ``frame_skip`` (default 1) simulator steps of ``dt`` seconds with the action held
  (``env.dt = dt * frame_skip``), semi-implicit Euler unless ``integrator="rk4"``.
- reward: ``reward(q, qd, u) -> (n,)`` on the state after the step, ``q`` (n, nq), ``qd``
  (n, nv), and the clipped action ``u`` (n, nu), for the n envs that stepped. The default,
  ``QuadraticReward()``, is ``-(|q - qpos0|^2 + 0.1 |qd|^2 + 0.001 |u|^2)``: stay near the
  model's default configuration, still, with little effort (for the cart-pole: balance upright).
- termination: a simulation that diverges (the server answers INVALID_ARGUMENT "non-finite
  value in 'qd' at env 3, step 1"), a state with a component above ``max_abs_state`` (default
  1e4) in magnitude, or ``terminate(q, qd) -> (n,) bool`` if given. A diverged env keeps its
  last finite state, gets ``divergence_reward`` (default 0.0: with a negative reward that makes
  ending early attractive, so set a penalty when learning) and ``info["diverged"]``. The
  server names only the first diverged env of a call: that env is terminated and the call
  repeated without it (one extra call per diverged env); a divergence error naming no env
  terminates every env of the call.
- truncation: after ``horizon`` steps of an episode (None: never).
- reset: ``q0 = qpos0 + U(-reset_noise, reset_noise)`` (no noise on q for models with a free
  joint, whose quaternion must stay unit), ``qd0 = U(-reset_noise, reset_noise)``, drawn
  from the env's ``np_random`` (seeded by ``reset(seed=...)``; one generator for the whole
  vector env). ``reset_fn(np_random, n) -> (q0 (n, nq), qd0 (n, nv))`` replaces this;
  ``reset(options={"q0": ..., "qd0": ...})`` sets the start state explicitly ((nq,) or
  (n, nq); an omitted one is sampled).

Autoreset (vector env): gymnasium's next-step mode (``metadata["autoreset_mode"] ==
AutoresetMode.NEXT_STEP``). The step on which an env terminates or truncates returns its
final observation; on the next ``step`` that env ignores its action, is reset (drawing from
``np_random``) and returns the new start observation with reward 0, terminated and truncated
False. ``reset(options={"reset_mask": mask})`` resets only the envs where the (num_envs,) bool
mask is True.

The env owns the Client when given an address (closed by ``close()``), not when given a
Client. ``model`` is a ``ModelInfo`` from ``load_model`` or a model id.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

try:
    import gymnasium
    from gymnasium import spaces
    from gymnasium.vector import AutoresetMode, VectorEnv
    from gymnasium.vector.utils import batch_space
except ImportError as e:  # pragma: no cover - exercised by a subprocess test
    raise ImportError("simad_client.gym needs gymnasium >= 1.0 (pip install gymnasium); "
                      "the rest of simad_client works without it") from e

from .client import Client
from .errors import WireError
from .results import ModelInfo

__all__ = ["QuadraticReward", "SimadEnv", "SimadVectorEnv"]

_DIVERGED_ENV = re.compile(r"\bat env (\d+)\b")


class QuadraticReward:
    """``-(q_weight |q - q_goal|^2 + qd_weight |qd|^2 + u_weight |u|^2)`` per env.

    Weights are scalars or per-coordinate arrays ((nq,), (nv,), (nu,)); ``q_goal`` (nq,)
    defaults to the model's qpos0 (filled in by the env)."""

    def __init__(self, q_weight=1.0, qd_weight=0.1, u_weight=1e-3, q_goal=None):
        self.q_weight, self.qd_weight, self.u_weight = q_weight, qd_weight, u_weight
        self.q_goal = None if q_goal is None else np.asarray(q_goal, np.float64)

    def __call__(self, q, qd, u) -> np.ndarray:
        dq = q if self.q_goal is None else q - self.q_goal
        cost = (np.sum(np.asarray(self.q_weight) * dq**2, axis=-1) + np.sum(np.asarray(self.qd_weight) * qd**2, axis=-1)
                + np.sum(np.asarray(self.u_weight) * u**2, axis=-1))
        return -cost

    def __repr__(self) -> str:
        return (f"QuadraticReward(q_weight={self.q_weight!r}, qd_weight={self.qd_weight!r}, "
                f"u_weight={self.u_weight!r}, q_goal={self.q_goal!r})")


def _divergence(err: WireError):
    """For a divergence error: the env it names (int) or -1 (none named); None for other errors.

    Divergence is INVALID_ARGUMENT about an output ("q", "qd", ...); a malformed request names
    a request field ("rollout.controls") and is not one."""
    if err.code != "INVALID_ARGUMENT" or err.field.startswith("rollout.") or "non-finite" not in err.message:
        return None
    m = _DIVERGED_ENV.search(err.message)
    return int(m.group(1)) if m else -1


class _Simulation:
    """What both env classes share: the client, the model, the spaces and one batched step."""

    def __init__(self, client_or_address, model, dt: float, *, frame_skip: int = 1, horizon: int | None = None,
                 reward: Callable | None = None, ctrl_range=None, integrator: str = "semi_implicit_euler",
                 reset_noise: float = 0.1, reset_fn: Callable | None = None, max_abs_state: float | None = 1e4,
                 terminate: Callable | None = None, divergence_reward: float = 0.0, timeout: float | None = None):
        if isinstance(client_or_address, Client):
            self.client, self.owns_client = client_or_address, False
        elif isinstance(client_or_address, str):
            self.client, self.owns_client = Client(client_or_address, timeout=300.0), True
        else:
            raise TypeError(f"expected a simad_client.Client or an address 'host:port', got {client_or_address!r}")
        try:
            self.info = model if isinstance(model, ModelInfo) else self.client.get_model(str(model))
            self._configure(dt, frame_skip, horizon, reward, ctrl_range, integrator, reset_noise, reset_fn,
                            max_abs_state, terminate, divergence_reward, timeout)
        except BaseException:
            self.close()
            raise

    def _configure(self, dt, frame_skip, horizon, reward, ctrl_range, integrator, reset_noise, reset_fn,
                   max_abs_state, terminate, divergence_reward, timeout):
        info = self.info
        self.model_id, self.nq, self.nv, self.nu = info.model_id, info.nq, info.nv, info.nu
        try:
            ok = bool(np.isfinite(float(dt)) and float(dt) > 0)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"dt: expected a positive number of seconds, got {dt!r}")
        if int(frame_skip) != frame_skip or frame_skip < 1:
            raise ValueError(f"frame_skip: expected an integer >= 1, got {frame_skip!r}")
        if horizon is not None and (int(horizon) != horizon or horizon < 1):
            raise ValueError(f"horizon: expected an integer >= 1 or None, got {horizon!r}")
        self.dt, self.frame_skip = float(dt), int(frame_skip)
        self.horizon = None if horizon is None else int(horizon)
        self.integrator, self.timeout = integrator, timeout
        self.reset_noise, self.reset_fn = float(reset_noise), reset_fn
        self.max_abs_state, self.terminate = max_abs_state, terminate
        self.divergence_reward = float(divergence_reward)
        self.qpos0 = np.asarray(info.qpos0, np.float64).reshape(self.nq)
        if reward is None:
            reward = QuadraticReward(q_goal=self.qpos0)
        elif isinstance(reward, QuadraticReward) and reward.q_goal is None:
            reward.q_goal = self.qpos0
        if not callable(reward):
            raise TypeError(f"reward: expected a callable reward(q, qd, u) -> (n,), got {reward!r}")
        self.reward = reward

        low, high = self._ctrl_range(ctrl_range)
        self.action_space = spaces.Box(low, high, (self.nu,), np.float64)
        n = self.nq + self.nv
        self.observation_space = spaces.Box(-np.inf, np.inf, (n,), np.float64)

    def _ctrl_range(self, ctrl_range):
        if ctrl_range is None:  # the model's own ranges; [-1, 1] where an actuator has none
            known = getattr(self.info, "ctrl_range", None)
            r = np.asarray(known, np.float64) if known is not None else np.full((self.nu, 2), np.inf)
            if r.shape != (self.nu, 2):
                r = np.full((self.nu, 2), np.inf)
            free = ~np.all(np.isfinite(r), axis=1)
            if free.any():
                names = self.info.actuator_names or ()
                which = ", ".join(str(names[i]) if i < len(names) else str(i) for i in np.flatnonzero(free))
                warnings.warn(f"{self.info.name or self.model_id}: actuators without a control range ({which}) get "
                              "the action box [-1, 1]; pass ctrl_range=(low, high)", stacklevel=4)
                r[free] = (-1.0, 1.0)
            ctrl_range = r
        r = np.asarray(ctrl_range, np.float64)
        if r.shape == (2,):
            low, high = np.full(self.nu, r[0]), np.full(self.nu, r[1])
        elif r.shape == (self.nu, 2):
            low, high = r[:, 0].copy(), r[:, 1].copy()
        else:
            raise ValueError(f"ctrl_range: expected (low, high) or an ({self.nu}, 2) array of rows (low, high), "
                             f"got shape {r.shape}")
        if np.any(np.isnan(low)) or np.any(np.isnan(high)) or np.any(low > high):
            raise ValueError(f"ctrl_range: expected low <= high, got {low} and {high}")
        return low, high

    # -- reset ----------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, n: int, options: dict | None = None):
        """n start states (n, nq), (n, nv): options' q0 / qd0, else reset_fn, else noise around qpos0."""
        options = options or {}
        if self.reset_fn is not None and not ("q0" in options and "qd0" in options):
            q0, qd0 = self.reset_fn(rng, n)
        else:
            eps = self.reset_noise
            q0 = np.tile(self.qpos0, (n, 1))
            if eps and not self.info.has_free_joint:
                q0 = q0 + rng.uniform(-eps, eps, (n, self.nq))
            qd0 = rng.uniform(-eps, eps, (n, self.nv)) if eps else np.zeros((n, self.nv))
        if "q0" in options:
            q0 = options["q0"]
        if "qd0" in options:
            qd0 = options["qd0"]
        q0 = self._rows(q0, n, self.nq, "q0")
        qd0 = self._rows(qd0, n, self.nv, "qd0")
        return q0, qd0

    @staticmethod
    def _rows(a, n: int, width: int, name: str) -> np.ndarray:
        a = np.asarray(a, np.float64)
        if a.shape not in ((width,), (n, width)):
            raise ValueError(f"{name}: expected shape ({width},) or ({n}, {width}), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: non-finite start state")
        return np.array(np.broadcast_to(a, (n, width)))

    # -- step -----------------------------------------------------------------------------------
    def clip(self, actions, n: int) -> np.ndarray:
        u = np.asarray(actions, np.float64)
        if u.shape not in ((n, self.nu),) and not (n == 1 and u.shape == (self.nu,)):
            raise ValueError(f"actions: expected shape ({n}, {self.nu}), got {u.shape}")
        return np.clip(u.reshape(n, self.nu), self.action_space.low, self.action_space.high)

    def advance(self, q, qd, u):
        """One env step of every row: (q', qd', diverged (n,) bool, messages {row: text}).

        One Rollout call; each divergence the server names removes that row and repeats the call."""
        n = q.shape[0]
        q1, qd1 = q.copy(), qd.copy()
        diverged = np.zeros(n, bool)
        messages: dict[int, str] = {}
        controls = np.repeat(u[:, None, :], self.frame_skip, axis=1)
        rows = np.arange(n)
        while rows.size:
            try:
                tr = self.client.rollout(self.model_id, q[rows], qd[rows], controls[rows], self.dt, self.integrator,
                                         stream=False, timeout=self.timeout)
            except WireError as e:
                env = _divergence(e)
                if env is None:
                    raise
                hit = rows if env < 0 or env >= rows.size else rows[[env]]
                diverged[hit] = True
                for r in hit:
                    messages[int(r)] = e.message
                rows = np.setdiff1d(rows, hit)
                continue
            q1[rows] = tr.q[:, -1]
            qd1[rows] = tr.qd[:, -1]
            break
        return q1, qd1, diverged, messages

    def outcome(self, q, qd, u, diverged):
        """(reward (n,), terminated (n,)) after a step."""
        n = q.shape[0]
        reward = np.asarray(self.reward(q, qd, u), np.float64)
        if reward.shape != (n,):
            raise ValueError(f"reward returned shape {reward.shape}, expected ({n},)")
        reward = np.where(diverged, self.divergence_reward, reward)
        terminated = diverged | ~np.all(np.isfinite(q), axis=1) | ~np.all(np.isfinite(qd), axis=1)
        if self.max_abs_state is not None:
            terminated |= (np.max(np.abs(q), axis=1, initial=0.0) > self.max_abs_state)
            terminated |= (np.max(np.abs(qd), axis=1, initial=0.0) > self.max_abs_state)
        if self.terminate is not None:
            extra = np.asarray(self.terminate(q, qd), bool)
            if extra.shape != (n,):
                raise ValueError(f"terminate returned shape {extra.shape}, expected ({n},)")
            terminated |= extra
        return reward, terminated

    def close(self):
        if self.owns_client:
            self.client.close()


_DOC_ARGS = """
    Args:
        client_or_address: a ``simad_client.Client`` (left open) or "host:port" (a Client of
            this env, closed by ``close()``).
        model: ``ModelInfo`` from ``load_model``, or a model id.
        dt: simulator step, s. frame_skip: simulator steps per env step (action held).
        horizon: env steps per episode before truncation (None: never truncated).
        reward: ``reward(q, qd, u) -> (n,)`` (default ``QuadraticReward()``, see the module).
        ctrl_range: (low, high) for every actuator, or (nu, 2) rows (low, high): the action box.
        integrator: "semi_implicit_euler" or "rk4". reset_noise: half-width of the uniform
            start noise. reset_fn: ``reset_fn(np_random, n) -> (q0, qd0)`` instead.
        max_abs_state: terminate when |q_i| or |qd_i| exceeds it (None: only divergence).
        terminate: ``terminate(q, qd) -> (n,) bool``, more termination conditions.
        divergence_reward: the reward of a step that diverged. timeout: per call, s (None:
            the client's default).
"""


class SimadVectorEnv(VectorEnv):
    """``num_envs`` copies of a simad model, stepped by one server call per vector step.

    Next-step autoreset; see the module docstring for spaces, reward, termination and reset.
    """

    __doc__ += _DOC_ARGS
    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, client_or_address, model, num_envs: int, dt: float, horizon: int | None = None, *,
                 reward: Callable | None = None, frame_skip: int = 1, ctrl_range=None,
                 integrator: str = "semi_implicit_euler", reset_noise: float = 0.1, reset_fn: Callable | None = None,
                 max_abs_state: float | None = 1e4, terminate: Callable | None = None, divergence_reward: float = 0.0,
                 timeout: float | None = None):
        if int(num_envs) != num_envs or num_envs < 1:
            raise ValueError(f"num_envs: expected an integer >= 1, got {num_envs!r}")
        self.num_envs = int(num_envs)
        self.sim = _Simulation(client_or_address, model, dt, frame_skip=frame_skip, horizon=horizon, reward=reward,
                               ctrl_range=ctrl_range, integrator=integrator, reset_noise=reset_noise,
                               reset_fn=reset_fn, max_abs_state=max_abs_state, terminate=terminate,
                               divergence_reward=divergence_reward, timeout=timeout)
        self.single_observation_space = self.sim.observation_space
        self.single_action_space = self.sim.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.dt = self.sim.dt * self.sim.frame_skip
        self.metadata = dict(self.metadata, render_fps=1.0 / self.dt)
        self._q = self._qd = None
        self._elapsed = np.zeros(self.num_envs, np.int64)
        self._autoreset = np.zeros(self.num_envs, bool)

    @property
    def model_info(self) -> ModelInfo:
        return self.sim.info

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the current (q (num_envs, nq), qd (num_envs, nv))."""
        if self._q is None:
            raise RuntimeError("call reset() first")
        return self._q.copy(), self._qd.copy()

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._q, self._qd], axis=1)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """(observations (num_envs, nq + nv), {}); options: "reset_mask", "q0", "qd0" (module doc)."""
        super().reset(seed=seed)
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None or self._q is None:
            mask = np.ones(self.num_envs, bool)
        else:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(f"options['reset_mask']: expected a ({self.num_envs},) bool array, "
                                 f"got {mask.dtype} {mask.shape}")
        idx = np.flatnonzero(mask)
        q0, qd0 = self.sim.sample(self.np_random, idx.size, options)
        if self._q is None:
            self._q = np.zeros((self.num_envs, self.sim.nq))
            self._qd = np.zeros((self.num_envs, self.sim.nv))
        self._q[idx], self._qd[idx] = q0, qd0
        self._elapsed[idx] = 0
        self._autoreset[idx] = False
        return self._obs(), {}

    def step(self, actions):
        """(observations, rewards (num_envs,) float64, terminations, truncations (bool), infos).

        infos has "diverged" / "_diverged" (bool masks) and "error" (the server's message) when
        an env diverged on this step."""
        if self._q is None:
            raise RuntimeError("call reset() before step()")
        u = self.sim.clip(actions, self.num_envs)
        rewards = np.zeros(self.num_envs, np.float64)
        terminated = np.zeros(self.num_envs, bool)
        truncated = np.zeros(self.num_envs, bool)
        infos: dict[str, Any] = {}
        reset = self._autoreset.copy()
        run = np.flatnonzero(~reset)
        if run.size:
            q1, qd1, diverged, messages = self.sim.advance(self._q[run], self._qd[run], u[run])
            r, term = self.sim.outcome(q1, qd1, u[run], diverged)
            self._q[run], self._qd[run] = q1, qd1
            self._elapsed[run] += 1
            rewards[run], terminated[run] = r, term
            if self.sim.horizon is not None:
                truncated[run] = self._elapsed[run] >= self.sim.horizon
            if diverged.any():
                mask = np.zeros(self.num_envs, bool)
                mask[run[diverged]] = True
                errors = np.full(self.num_envs, None, dtype=object)
                for row, text in messages.items():
                    errors[run[row]] = text
                infos = {"diverged": mask, "_diverged": mask.copy(), "error": errors, "_error": mask.copy()}
        if reset.any():
            idx = np.flatnonzero(reset)
            self._q[idx], self._qd[idx] = self.sim.sample(self.np_random, idx.size)
            self._elapsed[idx] = 0
        self._autoreset = terminated | truncated
        return self._obs(), rewards, terminated, truncated, infos

    def close_extras(self, **kwargs):
        if getattr(self, "sim", None) is not None:
            self.sim.close()

    def __repr__(self) -> str:
        return f"SimadVectorEnv({self.sim.info.name or self.sim.model_id}, num_envs={self.num_envs})"


class SimadEnv(gymnasium.Env):
    """One simad model as a ``gymnasium.Env``: each ``step`` is one server call.

    See the module docstring for spaces, reward, termination and reset (``reset(options=
    {"q0": ..., "qd0": ...})`` sets the start state).
    """

    __doc__ += _DOC_ARGS
    metadata = {"render_modes": []}

    def __init__(self, client_or_address, model, dt: float, horizon: int | None = None, *,
                 reward: Callable | None = None, frame_skip: int = 1, ctrl_range=None,
                 integrator: str = "semi_implicit_euler", reset_noise: float = 0.1, reset_fn: Callable | None = None,
                 max_abs_state: float | None = 1e4, terminate: Callable | None = None, divergence_reward: float = 0.0,
                 timeout: float | None = None):
        self.sim = _Simulation(client_or_address, model, dt, frame_skip=frame_skip, horizon=horizon, reward=reward,
                               ctrl_range=ctrl_range, integrator=integrator, reset_noise=reset_noise,
                               reset_fn=reset_fn, max_abs_state=max_abs_state, terminate=terminate,
                               divergence_reward=divergence_reward, timeout=timeout)
        self.observation_space = self.sim.observation_space
        self.action_space = self.sim.action_space
        self.dt = self.sim.dt * self.sim.frame_skip
        self.metadata = dict(self.metadata, render_fps=1.0 / self.dt)
        self._q = self._qd = None
        self._elapsed = 0

    @property
    def model_info(self) -> ModelInfo:
        return self.sim.info

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._q, self._qd])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        q0, qd0 = self.sim.sample(self.np_random, 1, options)
        self._q, self._qd, self._elapsed = q0[0], qd0[0], 0
        return self._obs(), {}

    def step(self, action):
        if self._q is None:
            raise RuntimeError("call reset() before step()")
        u = self.sim.clip(action, 1)
        q1, qd1, diverged, messages = self.sim.advance(self._q[None], self._qd[None], u)
        reward, terminated = self.sim.outcome(q1, qd1, u, diverged)
        self._q, self._qd = q1[0], qd1[0]
        self._elapsed += 1
        truncated = self.sim.horizon is not None and self._elapsed >= self.sim.horizon
        info = {"diverged": bool(diverged[0])}
        if messages:
            info["error"] = messages[0]
        return self._obs(), float(reward[0]), bool(terminated[0]), bool(truncated), info

    def close(self):
        self.sim.close()
        super().close()
