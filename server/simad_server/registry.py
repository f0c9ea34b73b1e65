"""Models in memory (id -> Model), backed by the durable store; parsing of every source kind.

Servers that share a data directory share the store, and each follows it call by call
(``StoreLookup``, installed when the store is a file): an id the store holds but this server
does not (loaded through another server) is loaded from the store the way start-up restores it
(parse, content-hash check, smoke test in the worker) and then served; an id this server holds
but the store no longer does (deleted through another server) is dropped, so the call gets
NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass

import grpc
from simad_client.errors import WireError
from simad_client.proto import models_pb2

import simad
from simad import models as shipped

from .errors import abort, status_of
from .store import ModelStore, StoredModel

log = logging.getLogger("simad.server")


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
                    anchor=_opt(j.anchor) or (0, 0, 0), range=_opt(j.range), damping=j.damping, armature=j.armature,
                    stiffness=j.stiffness, springref=j.springref)
    for a in spec.actuators:
        b.add_actuator(a.joint, gear=a.gear or 1.0, ctrl_range=_opt(a.ctrl_range), name=a.name or None,
                       gain=a.gain or 1.0, bias=_opt(a.bias) or (0.0, 0.0, 0.0))
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


class _Unloadable(Exception):
    """A stored model that does not load on this server (the same every time: not retried)."""


def parse_stored(rec: StoredModel) -> simad.Model:
    """Parses a stored record and checks that it is the model that was stored (same content hash)."""
    try:
        model = parse(rec.kind, rec.source, rec.floating_base, rec.name)
    except Exception as e:  # noqa: BLE001 - any failure to read a stored source means "does not load here"
        raise _Unloadable(f"{type(e).__name__}: {e}") from None
    if model.content_hash != rec.content_hash:
        raise _Unloadable(f"it parses to content hash {model.content_hash[:12]}..., stored as "
                          f"{rec.content_hash[:12]}... (another simad version?)")
    return model


class Registry:
    """id -> Entry, persisted in the store and mirrored in the simulation worker (by content hash)."""

    def __init__(self, store: ModelStore, max_models: int, worker=None):
        self.store = store
        self.max_models = max_models
        self.worker = worker
        self._lock = threading.RLock()
        self._models: dict[str, Entry] = {}
        self._pending: Counter = Counter()  # content hash -> loads in progress (the worker must keep that key)
        self._loading: dict[str, asyncio.Future] = {}  # id -> its load from the store, shared by concurrent calls
        self._unloadable: dict[str, str] = {}  # id -> why the stored model does not load here

    def worker_models(self) -> dict:
        """{key: Model} of every model (what a restarted worker needs)."""
        with self._lock:
            return {e.key: e.model for e in self._models.values()}

    def restore(self) -> list[str]:
        """Reloads every stored model at start-up (blocking); returns ids that failed (kept in the
        store; the first call naming one tries once more, see ``resolve``)."""
        failed = []
        for rec in self.store.all():
            try:
                model = parse_stored(rec)
                self.worker.add_model(rec.content_hash, model)
                self.worker.call("smoke_test", rec.content_hash)
                with self._lock:
                    self._models[rec.model_id] = Entry(model, rec)
            except Exception:  # noqa: BLE001 - a stored model that no longer loads is reported, not fatal
                failed.append(rec.model_id)
        return failed

    def _room(self) -> bool:
        """Whether one more model fits under --max-models (loads in progress count; lock held)."""
        return len(self._models) + len(self._loading) < self.max_models

    def _release(self, key: str) -> None:
        """Drops ``key`` from the worker unless an entry or a load in progress uses it (lock held)."""
        if self._pending[key] <= 0 and all(e.key != key for e in self._models.values()):
            del self._pending[key]
            self.worker.drop_model(key)

    async def add(self, model: simad.Model, kind: str, source: bytes, floating_base: bool, check) -> Entry:
        """Registers a parsed model after ``await check(key)`` ran its kernels in the worker."""
        key = model.content_hash
        with self._lock:
            if not self._room():
                raise WireError("RESOURCE_EXHAUSTED", f"the server holds {len(self._models)} models (limit "
                                f"{self.max_models}); delete some", kind)
            self._pending[key] += 1
        try:
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
        finally:
            with self._lock:
                self._pending[key] -= 1

    def get(self, model_id: str, field: str = "model_id") -> Entry:
        entry = self._models.get(model_id)
        if entry is None:
            raise WireError("NOT_FOUND", f"unknown model id {model_id!r}", field)
        return entry

    def delete(self, model_id: str) -> None:
        """Removes the id from the store and from memory. An id only the store holds (loaded
        through another server that shares it) is deleted as well; one the store no longer holds
        (deleted through another server) is NOT_FOUND, and forgotten here."""
        with self._lock:
            entry = self._models.pop(model_id, None)
            stored = self.store.delete(model_id)
            self._unloadable.pop(model_id, None)
            if entry is not None:
                self._release(entry.key)
            if not stored:
                raise WireError("NOT_FOUND", f"unknown model id {model_id!r}", "model_id")

    def all(self) -> list[Entry]:
        with self._lock:
            return sorted(self._models.values(), key=lambda e: e.info.created_ms)

    def __len__(self) -> int:
        return len(self._models)

    # ---- following a shared store --------------------------------------------------------------
    async def resolve(self, model_id: str, field: str) -> None:
        """Brings this server in line with the store about ``model_id`` before a call naming it
        is served (a no-op for an in-memory store):

        - held and stored: nothing to do (one primary-key lookup);
        - held but no longer stored (deleted through another server): dropped, the call gets NOT_FOUND;
        - stored but not held (loaded through another server): loaded as start-up restores it, then
          served. Concurrent calls share one load. RESOURCE_EXHAUSTED when --max-models are held;
          NOT_FOUND naming the reason when the stored model does not load here (remembered: not
          retried); UNAVAILABLE / RESOURCE_EXHAUSTED "server busy" from the worker as for any call;
        - in neither: nothing to do (the call gets NOT_FOUND).
        """
        if not model_id or not self.store.shared:
            return
        if model_id in self._models:
            if not self.store.exists(model_id):
                self.forget(model_id)
            return
        task = self._loading.get(model_id)
        if task is None:
            if model_id in self._unloadable:
                raise WireError("NOT_FOUND", f"model id {model_id!r} is stored but does not load on this server: "
                                f"{self._unloadable[model_id]}", field)
            rec = self.store.get(model_id)
            if rec is None:
                return
            with self._lock:
                if not self._room():
                    raise WireError("RESOURCE_EXHAUSTED", f"model id {model_id!r} is stored (loaded through another "
                                    f"server) but this server holds {len(self._models)} models (limit "
                                    f"{self.max_models}); delete some, or raise --max-models", field)
                task = asyncio.ensure_future(self._load_stored(rec))
                self._loading[model_id] = task
            task.add_done_callback(lambda t: (self._loading.pop(model_id, None), t.cancelled() or t.exception()))
        try:
            await asyncio.shield(task)  # a caller whose deadline passes does not cancel the load for the others
        except _Unloadable as e:
            raise WireError("NOT_FOUND", f"model id {model_id!r} is stored but does not load on this server: {e}",
                            field) from None
        except WireError as e:  # the worker restarting or its queue full: not remembered, the next call retries
            raise WireError(e.code, e.message, field) from None

    async def _load_stored(self, rec: StoredModel) -> None:
        """Start-up's restore of one record, without blocking the event loop: parse on an executor
        thread, the smoke test in the worker; registered unless the id was deleted meanwhile."""
        t0, key = time.perf_counter(), rec.content_hash
        try:
            model = await asyncio.get_running_loop().run_in_executor(None, parse_stored, rec)
            ok = False
            with self._lock:
                self._pending[key] += 1
            try:
                self.worker.add_model(key, model)
                await self.worker.run("smoke_test", key)
                ok = True
            except WireError:
                raise
            except Exception as e:  # noqa: BLE001 - the model's kernels fail: it does not load here
                raise _Unloadable(f"its kernels fail ({type(e).__name__}: {e})") from None
            finally:
                with self._lock:
                    self._pending[key] -= 1
                    if ok and self.store.exists(rec.model_id):  # not deleted while it loaded
                        self._models[rec.model_id] = Entry(model, rec)
                    else:
                        self._release(key)
        except _Unloadable as e:
            self._unloadable[rec.model_id] = str(e)
            log.warning(json.dumps({"event": "store_load_failed", "model": rec.model_id, "error": str(e)[:300]}))
            raise
        ms = (time.perf_counter() - t0) * 1e3
        log.info(json.dumps({"event": "loaded_from_store", "model": rec.model_id, "ms": round(ms, 1)}))

    def forget(self, model_id: str) -> None:
        """Drops an id from memory only (the store no longer holds it)."""
        with self._lock:
            entry = self._models.pop(model_id, None)
            if entry is not None:
                self._release(entry.key)

    def prune(self) -> None:
        """Drops every held id the store no longer holds (one read of the stored ids)."""
        if not self.store.shared:
            return
        stored = self.store.ids()
        for model_id in [m for m in self._models if m not in stored]:
            self.forget(model_id)
        for model_id in [m for m in self._unloadable if m not in stored]:
            self._unloadable.pop(model_id, None)


def model_id_of(request) -> tuple[str, str] | None:
    """(model id, its field path) of a unary request that names one: ``model_id`` or
    ``rollout.model_id`` (a control stream resolves its ``start.model_id`` itself)."""
    fields = request.DESCRIPTOR.fields_by_name
    if "model_id" in fields:
        return request.model_id, "model_id"
    if "rollout" in fields:
        return request.rollout.model_id, "rollout.model_id"
    return None


class StoreLookup(grpc.aio.ServerInterceptor):
    """Runs ``Registry.resolve`` before every call that names a model id, and ``Registry.prune``
    before ListModels, so a server sharing its store with others serves the models they load and
    stops serving the ones they delete. Installed after authentication; while the server is not
    ready it does nothing (the call is refused anyway). LoadModel, DeleteModel
    (``Registry.delete`` follows the store itself), GetServerInfo, health and reflection pass
    straight through, and so does a control stream: ``ControlService.Session`` resolves its
    ``start.model_id`` itself (a wrapper here would add two async-generator hops to every tick)."""

    PASS = ("/LoadModel", "/DeleteModel", "/GetServerInfo", "/Session")

    def __init__(self, registry: Registry, ready, metrics=None):
        self.registry, self.ready, self.metrics = registry, ready, metrics
        self._wrapped: dict[str, tuple] = {}  # method -> (its handler, the wrapped one): built once, not per call

    async def intercept_service(self, continuation, details):
        h = await continuation(details)
        method = details.method
        if h is None or method.startswith("/grpc.") or method.endswith(self.PASS):
            return h
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is h:
            return cached[1]
        wrapped = self._wrap(h, method)
        self._wrapped[method] = (h, wrapped)
        return wrapped

    def _wrap(self, h, method: str):
        name = method.rsplit("/", 1)[-1]
        kw = dict(request_deserializer=h.request_deserializer, response_serializer=h.response_serializer)
        if h.unary_unary is not None:
            fn = h.unary_unary

            async def unary_unary(request, context):
                await self._before(name, request, context)
                return await fn(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)
        if h.unary_stream is not None:
            gen = h.unary_stream

            async def unary_stream(request, context):
                await self._before(name, request, context)
                async for reply in gen(request, context):
                    yield reply

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kw)
        return h

    async def _before(self, name: str, request, context) -> None:
        if not self.ready():
            return
        t0, found = time.perf_counter(), None
        try:
            if name == "ListModels":
                self.registry.prune()
                return
            found = model_id_of(request)
            if found is not None:
                await self.registry.resolve(*found)
        except Exception as exc:  # noqa: BLE001 - reported like any failure of the call
            code, msg, field = status_of(exc)
            if self.metrics is not None:
                self.metrics.observe(name, code.name, time.perf_counter() - t0, **({"model": found[0]} if found else {}))
            await abort(context, code, msg, field)
