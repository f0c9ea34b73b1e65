"""A server-side MLP policy as the client sees it: its layer sizes and flat weights (the wire
contract is the ``MlpPolicy`` message of simulation.proto; the engine's twin, which can also
evaluate the network in numpy, is ``simad.MLPPolicy``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .encode import invalid
from .results import ModelInfo

# JointType values of ModelInfo.joint_types
_REVOLUTE, _PRISMATIC, _FREE = 1, 2, 3


def observation_size(info: ModelInfo, observation: str = "trig") -> int:
    """Length of the policy's observation o(x) for the model ``info`` describes."""
    per = {_REVOLUTE: 2 if observation == "trig" else 1, _PRISMATIC: 1, _FREE: 7}
    return info.nv + sum(per.get(int(t), 0) for t in info.joint_types)


@dataclass
class MLPPolicy:
    """Layer sizes (nobs, hidden..., nu) and flat weights of a tanh MLP evaluated by the server
    inside rollouts and gradient calls (``policy=`` of ``Client.rollout``, ``rollout_vjp``,
    ``value_and_grad``; the gradient comes back as ``Gradients.policy``).

    Build one with ``MLPPolicy.for_model(info, hidden=(32, 32))``; after a gradient step, use
    ``policy.with_weights(w)``. ``output_scale`` None lets the server pick each actuator's
    largest absolute control bound max(|lo|, |hi|) (1 when unlimited)."""

    sizes: tuple[int, ...]
    weights: np.ndarray
    observation: str = "trig"
    output_scale: np.ndarray | float | None = None
    obs_scale: np.ndarray | float | None = None
    squash: bool = True

    @classmethod
    def for_model(cls, info: ModelInfo, hidden=(32, 32), *, observation: str = "trig", output_scale=None,
                  obs_scale=None, squash: bool = True, seed: int = 0) -> MLPPolicy:
        """Seeded random weights: Glorot-uniform layers, the output layer scaled by 0.01 so the
        untrained policy is nearly zero (the same scheme as ``simad.MLPPolicy``)."""
        if observation not in ("trig", "raw"):
            raise invalid(f"expected 'trig' or 'raw', got {observation!r}", "policy.observation")
        if not info.nu:
            raise invalid(f"model {info.name!r} has no actuators for a policy to drive", "policy")
        sizes = (observation_size(info, observation), *(int(h) for h in hidden), info.nu)
        rng = np.random.default_rng(seed)
        parts = []
        for layer, (i, o) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
            lim = np.sqrt(6.0 / (i + o))
            W = rng.uniform(-lim, lim, (o, i)) * (0.01 if layer == len(sizes) - 2 else 1.0)
            parts += [W.ravel(), np.zeros(o)]
        return cls(sizes, np.concatenate(parts), observation, output_scale, obs_scale, squash)

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(self.sizes[1:-1])

    @property
    def num_params(self) -> int:
        return sum(o * i + o for i, o in zip(self.sizes[:-1], self.sizes[1:], strict=False))

    def with_weights(self, weights) -> MLPPolicy:
        w = np.asarray(weights, np.float64).ravel()
        if w.shape != (self.num_params,):
            raise invalid(f"expected {self.num_params} weights, got {w.size}", "policy.weights")
        return MLPPolicy(self.sizes, w, self.observation, self.output_scale, self.obs_scale, self.squash)
