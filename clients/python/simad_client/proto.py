"""The generated simad.v1 message and stub modules, regenerated in a checkout when the protos change."""

from __future__ import annotations

from . import _protogen

if not _protogen.up_to_date():
    _protogen.generate()

from ._proto import (  # noqa: E402
    control_pb2,
    control_pb2_grpc,
    gradients_pb2,
    gradients_pb2_grpc,
    kinematics_pb2,
    kinematics_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
    simulation_pb2,
    simulation_pb2_grpc,
    tensor_pb2,
)

__all__ = [
    "control_pb2",
    "control_pb2_grpc",
    "gradients_pb2",
    "gradients_pb2_grpc",
    "kinematics_pb2",
    "kinematics_pb2_grpc",
    "models_pb2",
    "models_pb2_grpc",
    "server_pb2",
    "server_pb2_grpc",
    "simulation_pb2",
    "simulation_pb2_grpc",
    "tensor_pb2",
]
