"""simad client: numpy in, numpy out, over gRPC (needs only grpcio, protobuf and numpy).

    from simad_client import Client
    with Client("127.0.0.1:50051") as c:
        arm = c.load_model(builtin="arm7")
        traj = c.rollout(arm.model_id, arm.qpos0, [0.0] * arm.nv, controls, dt=1e-3)
"""

from .client import Client
from .encode import ContactOptions
from .errors import WireError
from .policy import MLPPolicy
from .pool import ClientPool
from .results import FeedbackPlan, GradientQuality, Gradients, IKResult, Linearization, ModelInfo, Trajectory
from .session import ControlSession

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ClientPool",
    "ContactOptions",
    "ControlSession",
    "FeedbackPlan",
    "GradientQuality",
    "Gradients",
    "IKResult",
    "Linearization",
    "MLPPolicy",
    "ModelInfo",
    "Trajectory",
    "WireError",
    "__version__",
]
