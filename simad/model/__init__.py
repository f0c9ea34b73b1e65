"""Model description: builder, immutable Model, loaders, shipped robots."""

from .builder import ModelBuilder
from .model import GeomType, JointType, Model

__all__ = ["GeomType", "JointType", "Model", "ModelBuilder"]
