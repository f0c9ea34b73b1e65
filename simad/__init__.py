"""simad: differentiable robot and rigid-body simulation, batched, on Taichi.

The public API: build or load a ``Model``, then call batched functions on (B, ...) arrays.
"""

import os as _os

# Taichi prints a banner on import; a library should not write to stdout uninvited.
_os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "False")

from .configuration import difference, integrate, neutral, random_configuration
from .errors import InputError, ModelError, NonFiniteError, SimadError
from .ik import IKResult, inverse_kinematics
from .kinematics import forward_kinematics, forward_kinematics_vjp, frame_jacobian
from .model import GeomType, JointType, Model, ModelBuilder
from .runtime import config as runtime_config
from .runtime import init

__version__ = "0.1.0"

__all__ = [
    "GeomType",
    "IKResult",
    "InputError",
    "JointType",
    "Model",
    "ModelBuilder",
    "ModelError",
    "NonFiniteError",
    "SimadError",
    "__version__",
    "difference",
    "forward_kinematics",
    "forward_kinematics_vjp",
    "frame_jacobian",
    "init",
    "integrate",
    "inverse_kinematics",
    "neutral",
    "random_configuration",
    "runtime_config",
]
