"""simad's gRPC server: decode -> engine (on the one thread that owns Taichi) -> encode."""

from .app import ServerConfig, SimadServer, create_server

__all__ = ["ServerConfig", "SimadServer", "create_server"]
