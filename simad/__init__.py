"""simad: differentiable robot and rigid-body simulation, batched, on Taichi.

The public API: build or load a ``Model``, then call batched functions on (B, ...) arrays.
"""

import os as _os

# Taichi prints a banner on import; a library should not write to stdout uninvited.
_os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "False")

from .configuration import difference, integrate, neutral, random_configuration
from .contact import Contact, GradientQuality, contact_rollout, contact_value_and_grad, contact_vjp
from .costs import QuadraticCost
from .derivatives import aba_derivatives, rnea_derivatives
from .diff import Gradients, rollout_vjp, value_and_grad
from .dynamics import forward_dynamics, inverse_dynamics, mass_matrix
from .errors import InputError, ModelError, NonFiniteError, SimadError
from .ik import IKResult, inverse_kinematics
from .kinematics import forward_kinematics, forward_kinematics_vjp, frame_jacobian
from .linearize import linearize, rollout_jvp
from .model import GeomType, JointType, Model, ModelBuilder
from .model.mjcf import load_mjcf
from .model.urdf import load_urdf
from .mpc import Plan, ilqr
from .policy import MLPPolicy
from .rollout import Trajectory, rollout
from .runtime import config as runtime_config
from .runtime import init

__version__ = "0.1.0"

__all__ = [
    "Contact",
    "GradientQuality",
    "contact_rollout",
    "contact_value_and_grad",
    "contact_vjp",
    "GeomType",
    "Gradients",
    "IKResult",
    "InputError",
    "JointType",
    "MLPPolicy",
    "Model",
    "ModelBuilder",
    "ModelError",
    "NonFiniteError",
    "Plan",
    "QuadraticCost",
    "SimadError",
    "Trajectory",
    "__version__",
    "aba_derivatives",
    "difference",
    "forward_dynamics",
    "forward_kinematics",
    "forward_kinematics_vjp",
    "frame_jacobian",
    "ilqr",
    "init",
    "integrate",
    "inverse_dynamics",
    "inverse_kinematics",
    "linearize",
    "load_mjcf",
    "load_urdf",
    "mass_matrix",
    "neutral",
    "random_configuration",
    "rnea_derivatives",
    "rollout",
    "rollout_jvp",
    "rollout_vjp",
    "runtime_config",
    "value_and_grad",
]
