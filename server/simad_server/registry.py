"""Models in memory (id -> Model), backed by the durable store; parsing of every source kind."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass

from simad_client.errors import WireError
from simad_client.proto import models_pb2

import simad
from simad import models as shipped

from .store import ModelStore, StoredModel


@dataclass(frozen=True)
class Entry:
    model: simad.Model
    info: StoredModel

    @property
    def key(self) -> str:
        """The model's key in the simulation worker: its content hash (equal models share it)."""
        return self.info.content_hash


def _opt(values, n=None):
    v = list(values)
    return None if not v else v


def build_spec(spec: models_pb2.ModelSpec) -> simad.Model:
    """A ModelSpec message -> Model through simad.ModelBuilder (raises ModelError naming the element)."""
    b = simad.ModelBuilder(spec.name or "model", gravity=_opt(spec.gravity) or (0.0, 0.0, -9.81))
    for body in spec.bodies:
        b.add_body(body.name, body.parent or 0, pos=_opt(body.pos) or (0, 0, 0), quat=_opt(body.quat),
                   mass=body.mass, com=_opt(body.com) or (0, 0, 0), inertia=_opt(body.inertia))
    for j in spec.joints:
        b.add_joint(j.body, j.name, j.type or "revolute", axis=_opt(j.axis) or (0, 0, 1),
                    anchor=_opt(j.anchor) or (0, 0, 0), range=_opt(j.range), damping=j.damping, armature=j.armature)
    for a in spec.actuators:
        b.add_actuator(a.joint, gear=a.gear or 1.0, ctrl_range=_opt(a.ctrl_range), name=a.name or None)
    for s in spec.sites:
        b.add_site(s.name, s.body or 0, pos=_opt(s.pos) or (0, 0, 0), quat=_opt(s.quat))
    for g in spec.geoms:
        b.add_geom(g.body or 0, g.type, size=list(g.size), pos=_opt(g.pos) or (0, 0, 0), quat=_opt(g.quat),
                   friction=g.friction, restitution=g.restitution, name=g.name or None)
    return b.finalize()


def parse(kind: str, source: bytes, floating_base: bool, name: str) -> simad.Model:
    """Builds a Model from a stored or requested source (raises ModelError / InputError)."""
    nm = name or None
    if kind in ("urdf", "mjcf") and not source.lstrip().startswith(b"<"):
        # the engine's loaders also accept a file path; over the wire only the XML text is taken
        raise WireError("INVALID_ARGUMENT", f"expected {kind.upper()} XML text (starting with '<'), got "
                        f"{source[:40].decode(errors='replace')!r}", kind)
    if kind == "urdf":
        return simad.load_urdf(source.decode(), floating_base=floating_base, name=nm)
    if kind == "mjcf":
        return simad.load_mjcf(source.decode(), name=nm)
    if kind == "builtin":
        return shipped.load(source.decode())
    if kind == "spec":
        spec = models_pb2.ModelSpec.FromString(source)
        if nm:
            spec.name = nm
        return build_spec(spec)
    raise WireError("INVALID_ARGUMENT", f"unknown source kind {kind!r}", "source")


class Registry:
    """id -> Entry, persisted in the store and mirrored in the simulation worker (by content hash)."""

    def __init__(self, store: ModelStore, max_models: int, worker=None):
        self.store = store
        self.max_models = max_models
        self.worker = worker
        self._lock = threading.RLock()
        self._models: dict[str, Entry] = {}

    def worker_models(self) -> dict:
        """{key: Model} of every model (what a restarted worker needs)."""
        with self._lock:
            return {e.key: e.model for e in self._models.values()}

    def restore(self) -> list[str]:
        """Reloads every stored model at start-up (blocking); returns ids that failed (kept in the store)."""
        failed = []
        for rec in self.store.all():
            try:
                model = parse(rec.kind, rec.source, rec.floating_base, rec.name)
                self.worker.add_model(model.content_hash, model)
                self.worker.call("smoke_test", model.content_hash)
                with self._lock:
                    self._models[rec.model_id] = Entry(model, rec)
            except Exception:  # noqa: BLE001 - a stored model that no longer loads is reported, not fatal
                failed.append(rec.model_id)
        return failed

    async def add(self, model: simad.Model, kind: str, source: bytes, floating_base: bool, check) -> Entry:
        """Registers a parsed model after ``await check(key)`` ran its kernels in the worker."""
        with self._lock:
            if len(self._models) >= self.max_models:
                raise WireError("RESOURCE_EXHAUSTED", f"the server holds {len(self._models)} models (limit "
                                f"{self.max_models}); delete some", kind)
        key = model.content_hash
        self.worker.add_model(key, model)
        try:
            await check(key)
        except (simad.ModelError, simad.InputError, simad.NonFiniteError) as e:
            raise WireError("INVALID_ARGUMENT", f"the model does not simulate: {e}", kind) from None
        with self._lock:
            model_id = "m-" + secrets.token_hex(8)
            created = self.store.put(model_id, key, model.name, kind, source, floating_base)
            entry = Entry(model, StoredModel(model_id, key, model.name, created, kind, source, floating_base))
            self._models[model_id] = entry
            return entry

    def get(self, model_id: str, field: str = "model_id") -> Entry:
        entry = self._models.get(model_id)
        if entry is None:
            raise WireError("NOT_FOUND", f"unknown model id {model_id!r}", field)
        return entry

    def delete(self, model_id: str) -> None:
        with self._lock:
            entry = self._models.pop(model_id, None)
            if entry is None:
                raise WireError("NOT_FOUND", f"unknown model id {model_id!r}", "model_id")
            self.store.delete(model_id)
            if all(e.key != entry.key for e in self._models.values()):
                self.worker.drop_model(entry.key)

    def all(self) -> list[Entry]:
        with self._lock:
            return sorted(self._models.values(), key=lambda e: e.info.created_ms)

    def __len__(self) -> int:
        return len(self._models)
