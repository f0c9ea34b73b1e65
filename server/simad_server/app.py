"""Assembles the gRPC server: services, auth, limits, health, reflection, warm-up, shutdown.

``create_server(config)`` returns a ``SimadServer`` bound to its port (port 0 picks a free one)
so tests run it in-process on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from simad_client.errors import WireError
from simad_client.proto import (
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
)

from .auth import TokenAuth
from .control import ControlService
from .metrics import Metrics, serve_metrics
from .registry import Registry, StoreLookup
from .service import Core, GradientService, KinematicsService, ModelService, ServerService, SimulationService
from .store import ModelStore
from .worker import SimWorker

log = logging.getLogger("simad.server")
SERVICE_NAMES = tuple(
    pb.DESCRIPTOR.services_by_name[name].full_name
    for pb, name in ((models_pb2, "ModelService"), (kinematics_pb2, "KinematicsService"),
                     (simulation_pb2, "SimulationService"), (gradients_pb2, "GradientService"),
                     (control_pb2, "ControlService"), (server_pb2, "ServerService"))
)


@dataclass
class ServerConfig:
    """Every setting of a server; ``simad serve`` fills it from flags and SIMAD_* variables."""

    address: str = "127.0.0.1:50051"
    data_dir: str | None = "simad-data"  # None: in-memory store (tests)
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    precision: str | None = None  # default: SIMAD_PRECISION or f64
    backend: str | None = None  # default: SIMAD_ARCH or cpu
    compile: str | None = None  # default: SIMAD_COMPILE or balanced
    max_batch: int = 4096
    max_steps: int = 100_000
    max_elements: int = 16_000_000
    max_message_bytes: int = 64 * 2**20
    max_queue: int = 64
    max_models: int = 1000
    warmup: str | bool = "all"  # "all" | "serial" | "none" (True: "all", False: "none"); see jobs.warmup
    metrics_port: int | None = None  # serve /metrics on this port (0: any free port)
    grace_s: float = 10.0
    worker_spin_us: float = 0.0  # the worker polls this long for the next message before it sleeps (see worker.py)
    extra: dict = field(default_factory=dict)


class SimadServer:
    def __init__(self, config: ServerConfig):
        self.config = c = config
        self.metrics = Metrics()
        path = Path(c.data_dir) / "models.sqlite" if c.data_dir else None
        self.store = ModelStore(path)
        self.registry = Registry(self.store, c.max_models)
        init_kwargs = dict(arch=c.backend, precision=c.precision, compile=c.compile)
        self.sim = SimWorker(c.max_queue, init_kwargs, self.registry.worker_models, spin_us=c.worker_spin_us)
        self.registry.worker = self.sim
        self.metrics._queue_depth = lambda: self.sim.depth
        limits = server_pb2.Limits(max_batch=c.max_batch, max_steps=c.max_steps, max_elements=c.max_elements,
                                   max_message_bytes=c.max_message_bytes, max_queue=c.max_queue, max_models=c.max_models)
        info = dict(self.sim.call("runtime_info"), auth_required=bool(c.token), tls=bool(c.tls_cert))
        self.core = Core(self.registry, self.sim, limits, self.metrics, info)
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        opts = [("grpc.max_send_message_length", c.max_message_bytes),
                ("grpc.max_receive_message_length", c.max_message_bytes),
                ("grpc.so_reuseport", 0)]
        interceptors = [TokenAuth(c.token)] if c.token else []
        if self.store.shared:  # other servers may load and delete models in it: follow it per call
            interceptors.append(StoreLookup(self.registry, lambda: self.core.ready and not self.core.draining,
                                            self.metrics))
        self.server = grpc.aio.server(interceptors=interceptors, options=opts,
                                      maximum_concurrent_rpcs=max(4 * c.max_queue, 64))
        models_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.core), self.server)
        kinematics_pb2_grpc.add_KinematicsServiceServicer_to_server(KinematicsService(self.core), self.server)
        simulation_pb2_grpc.add_SimulationServiceServicer_to_server(SimulationService(self.core), self.server)
        gradients_pb2_grpc.add_GradientServiceServicer_to_server(GradientService(self.core), self.server)
        control_pb2_grpc.add_ControlServiceServicer_to_server(ControlService(self.core), self.server)
        server_pb2_grpc.add_ServerServiceServicer_to_server(ServerService(self.core), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(SERVICE_NAMES + (health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        if c.tls_cert:
            creds = grpc.ssl_server_credentials([(Path(c.tls_key).read_bytes(), Path(c.tls_cert).read_bytes())])
            self.port = self.server.add_secure_port(c.address, creds)
        else:
            self.port = self.server.add_insecure_port(c.address)
        if self.port == 0:
            raise WireError("UNAVAILABLE", f"cannot bind {c.address}")
        self.metrics_server = None

    async def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("",) + SERVICE_NAMES:
            await self.health.set(name, status)

    async def start(self) -> None:
        """Starts listening (health NOT_SERVING), warms up, restores stored models, then SERVING."""
        await self._set_health(False)
        await self.server.start()
        if self.config.metrics_port is not None:
            self.metrics_server = serve_metrics(self.metrics, "127.0.0.1", self.config.metrics_port)
        loop = asyncio.get_running_loop()
        level = {True: "all", False: "none"}.get(self.config.warmup, self.config.warmup)
        if level != "none":
            await loop.run_in_executor(None, self.sim.call, "warmup", None, level)
        failed = await loop.run_in_executor(None, self.registry.restore)
        for mid in failed:
            log.warning(f'{{"event":"restore_failed","model":"{mid}"}}')
        self.core.ready = True
        await self._set_health(True)

    async def stop(self, grace: float | None = None) -> None:
        """Drains: new calls get UNAVAILABLE at once (retryable elsewhere) while the calls in
        flight finish, within ``grace`` seconds; then the listener closes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.grace_s if grace is None else grace)
        self.core.draining = True
        await self._set_health(False)
        while self.sim.depth > 0 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        await self.server.stop(max(deadline - loop.time(), 0.5))
        self.sim.shutdown()
        self.store.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def create_server(config: ServerConfig | None = None, **overrides) -> SimadServer:
    """A server bound to ``config.address`` (not yet started: ``await server.start()``)."""
    cfg = config or ServerConfig()
    for k, v in overrides.items():
        setattr(cfg, k, v)
    if cfg.data_dir:
        os.makedirs(cfg.data_dir, exist_ok=True)
    return SimadServer(cfg)
