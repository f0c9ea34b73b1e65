"""Client-side load balancing over several simad servers: ``ClientPool``.

A server's model ids are its own (``LoadModel`` hands out a new random id per load), so a pool
cannot send one id to every server. ``ClientPool.load_model`` loads the model on every server,
checks that all of them computed the same content hash, and returns a ``ModelInfo`` whose
``model_id`` is the pool's id (the id of the first server that stored it); each call translates
it to the id of the server it is sent to.

Dispatch: each call goes to the server with the fewest calls in flight from this pool (ties
rotate), or strictly in turn with ``policy="round_robin"``. Thread-safe: one pool serves many
threads (the gRPC channels are shared).

Failover (idempotent calls: every method that takes a model id, except ``delete_model`` and
``control_session``):
  - UNAVAILABLE (server down, restarting, warming up, draining): the server is set aside for
    ``cooldown`` seconds and the call is sent to the next server at once. When every server of
    the pool has failed, the pool pauses (0.05 s doubling, capped at 2 s) and tries them all
    again, up to ``retries`` times, within the call's deadline; then it raises
    ``WireError("UNAVAILABLE", ...)`` naming each server's last error.
  - RESOURCE_EXHAUSTED because a server's queue is full ("server busy"): the next server is
    tried; if every one is busy the error is raised at once (no waiting, as with one server).
  - NOT_FOUND for the model id on one server (e.g. it restarted with an in-memory store, or a
    new process took its address): the pool loads the model there again from the source it
    kept and repeats the call once. A server that was down during ``load_model`` gets the
    model the same way on its first call.
  - Any other error (INVALID_ARGUMENT, DEADLINE_EXCEEDED, ...) is raised as is: it would be the
    same on every server.
A control session is one stream to one server; ``control_session`` picks a server and stays
on it (no failover mid-session).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import inspect
import threading
import time
from collections.abc import Sequence

from . import _rpc
from .client import Client
from .errors import WireError
from .results import ModelInfo
from .session import ControlSession

POLICIES = ("least_outstanding", "round_robin")
BUSY_PREFIX = "server busy"  # the start of a full queue's RESOURCE_EXHAUSTED message


@dataclasses.dataclass
class _Model:
    """A model of the pool: its info (with the pool's id), how to load it, its id per server."""

    info: ModelInfo
    source: dict
    ids: dict[int, str]
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    deleted: bool = False


@dataclasses.dataclass
class _Server:
    client: Client
    outstanding: int = 0
    calls: int = 0
    failures: int = 0
    down_until: float = 0.0
    last_error: str = ""


def _balanced(name: str):
    """A pool method running ``Client.<name>(model_id, ...)`` on a chosen server, with failover."""
    method = getattr(Client, name)

    @functools.wraps(method)
    def call(self, model_id: str, *args, **kwargs):
        return self._dispatch(name, model_id, args, kwargs)

    doc = inspect.cleandoc(method.__doc__ or "")
    call.__doc__ = f"``Client.{name}`` on one server of the pool (see ``ClientPool``).\n\n{doc}"
    return call


class ClientPool:
    """Clients of several simad servers used as one.

    Args:
        addresses: "host:port" of each server (at least one, no duplicates).
        policy: "least_outstanding" (default: the server with the fewest calls in flight from
            this pool, ties taken in turn) or "round_robin" (strictly in turn).
        cooldown: seconds a server that answered UNAVAILABLE is passed over (it is still tried
            when every server is set aside).
        retries: extra passes over all servers when each answered UNAVAILABLE.
        client_kwargs: passed to every ``Client`` (token, root_certificates, timeout,
            max_message_bytes, options). Each client makes one attempt per call (the pool
            does the retrying), and its channel reconnects to a returning server within
            ``max(cooldown, 1)`` s unless ``options`` set the reconnect backoff.

    Use it as ``Client``: ``with ClientPool([...]) as pool: info = pool.load_model(...);
    pool.rollout(info.model_id, ...)``. ``stats()`` tells how calls were spread.
    """

    def __init__(self, addresses: Sequence[str], *, policy: str = "least_outstanding", cooldown: float = 2.0,
                 retries: int = 3, **client_kwargs):
        addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        if not addresses or len(set(addresses)) != len(addresses):
            raise WireError("INVALID_ARGUMENT", f"expected distinct server addresses, got {addresses!r}", "addresses")
        if policy not in POLICIES:
            raise WireError("INVALID_ARGUMENT", f"unknown policy {policy!r} (expected one of {POLICIES})", "policy")
        client_kwargs.pop("retries", None)
        options = list(client_kwargs.pop("options", ()))
        backoff_ms = int(max(cooldown, 1.0) * 1000)
        for key in ("grpc.initial_reconnect_backoff_ms", "grpc.max_reconnect_backoff_ms"):
            if all(k != key for k, _ in options):
                options.append((key, backoff_ms))
        self.addresses = tuple(addresses)
        self.policy, self.cooldown, self.retries = policy, float(cooldown), max(int(retries), 0)
        self._servers = [_Server(Client(a, retries=0, options=options, **client_kwargs)) for a in addresses]
        self.timeout = self._servers[0].client.timeout
        self._lock = threading.Lock()
        self._cursor = 0
        self._models: dict[str, _Model] = {}

    # -- plumbing ---------------------------------------------------------------------------
    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ClientPool({list(self.addresses)!r}, policy={self.policy!r})"

    def __len__(self) -> int:
        return len(self._servers)

    def close(self) -> None:
        """Closes every channel; calls in flight are cancelled."""
        for s in self._servers:
            s.client.close()

    @property
    def clients(self) -> tuple[Client, ...]:
        """The ``Client`` of each server, in the order of ``addresses``."""
        return tuple(s.client for s in self._servers)

    def stats(self) -> dict[str, dict]:
        """Per address: calls sent, calls in flight, failures (UNAVAILABLE or busy), whether it
        is set aside now, and its last error."""
        now = time.monotonic()
        with self._lock:
            return {a: {"calls": s.calls, "outstanding": s.outstanding, "failures": s.failures,
                        "down": s.down_until > now, "last_error": s.last_error}
                    for a, s in zip(self.addresses, self._servers, strict=True)}

    def server_ids(self, model_id: str) -> dict[str, str]:
        """{address: that server's id} of a model loaded through the pool (servers that do not
        hold it yet are left out)."""
        m = self._model(model_id)
        return {self.addresses[i]: sid for i, sid in sorted(m.ids.items())}

    # -- choosing a server ------------------------------------------------------------------
    def _acquire(self, exclude: set[int]) -> int | None:
        """Picks a server not in ``exclude`` (servers set aside only if nothing else is left)
        and counts a call in flight on it; None when every server is excluded."""
        n = len(self._servers)
        with self._lock:
            now = time.monotonic()
            order = [(self._cursor + k) % n for k in range(n)]
            left = [i for i in order if i not in exclude]
            if not left:
                return None
            up = [i for i in left if self._servers[i].down_until <= now] or left
            if self.policy == "round_robin":
                pick = up[0]
            else:
                pick = min(up, key=lambda i: self._servers[i].outstanding)  # min keeps the first of ties
            self._cursor = (pick + 1) % n
            s = self._servers[pick]
            s.outstanding += 1
            s.calls += 1
            return pick

    def _release(self, i: int, error: WireError | None = None, down: bool = False) -> None:
        with self._lock:
            s = self._servers[i]
            s.outstanding -= 1
            if error is not None:
                s.failures += 1
                s.last_error = str(error)
            if down:
                s.down_until = time.monotonic() + self.cooldown
            elif error is None:
                s.down_until = 0.0

    # -- models -----------------------------------------------------------------------------
    def _model(self, model_id: str) -> _Model:
        m = self._models.get(model_id)
        if m is None:
            raise WireError("NOT_FOUND", f"model id {model_id!r} was not loaded through this pool", "model_id")
        return m

    def _check_hash(self, m: _Model, i: int, info: ModelInfo) -> None:
        if info.content_hash != m.info.content_hash:
            try:
                self._servers[i].client.delete_model(info.model_id)
            except WireError:
                pass
            raise WireError("FAILED_PRECONDITION", f"{self.addresses[i]} computed the content hash "
                            f"{info.content_hash[:16]}... for this model, the pool's other servers "
                            f"{m.info.content_hash[:16]}...: do the servers run the same simad version?", "content_hash")

    def _server_id(self, m: _Model, i: int, timeout: float | None, stale: str | None = None) -> str:
        """The id of pool model ``m`` on server ``i``, loading it there first if needed (or if
        the server lost ``stale``)."""
        sid = m.ids.get(i)
        if sid is not None and sid != stale:
            return sid
        with m.lock:
            if m.deleted:
                raise WireError("NOT_FOUND", f"model id {m.info.model_id!r} was deleted", "model_id")
            sid = m.ids.get(i)
            if sid is None or sid == stale:
                info = self._servers[i].client.load_model(**m.source, timeout=timeout)
                self._check_hash(m, i, info)
                m.ids[i] = sid = info.model_id
            return sid

    def load_model(self, *, timeout: float | None = None, **source) -> ModelInfo:
        """``Client.load_model`` on every server at once (same arguments: urdf=, mjcf=, spec=,
        builtin=, name=, floating_base=).

        Returns the ``ModelInfo`` of the first server that stored it: its ``model_id`` is the
        pool's id, valid for every method of the pool. Raises the servers' error if the model
        is refused (copies already stored are deleted again), FAILED_PRECONDITION if servers
        disagree on the content hash, UNAVAILABLE if no server could be reached; a server that
        could not be reached gets the model on its first call.
        """

        def load(i: int):
            try:
                return self._servers[i].client.load_model(**source, timeout=timeout)
            except WireError as e:
                return e

        n = len(self._servers)
        with concurrent.futures.ThreadPoolExecutor(max_workers=n, thread_name_prefix="simad-pool-load") as ex:
            outcomes = list(ex.map(load, range(n)))
        loaded = {i: r for i, r in enumerate(outcomes) if isinstance(r, ModelInfo)}
        errors = {i: r for i, r in enumerate(outcomes) if isinstance(r, WireError)}
        hashes = {r.content_hash for r in loaded.values()}
        # down or momentarily busy servers get the model on their first call; anything else is a refusal
        refused = [e for e in errors.values() if e.code != "UNAVAILABLE"
                   and not (e.code == "RESOURCE_EXHAUSTED" and e.message.startswith(BUSY_PREFIX))]
        if refused or len(hashes) > 1 or not loaded:
            for i, info in loaded.items():
                try:
                    self._servers[i].client.delete_model(info.model_id)
                except WireError:
                    pass
            if refused:
                raise refused[0]
            if len(hashes) > 1:
                per = ", ".join(f"{self.addresses[i]}: {r.content_hash[:16]}..." for i, r in loaded.items())
                raise WireError("FAILED_PRECONDITION", f"the servers computed different content hashes ({per}): "
                                "do they run the same simad version?", "content_hash")
            raise self._unavailable(errors)
        for i in errors:
            with self._lock:
                self._servers[i].down_until = time.monotonic() + self.cooldown
                self._servers[i].last_error = str(errors[i])
        first = min(loaded)
        info = loaded[first]
        m = _Model(info, dict(source), {i: r.model_id for i, r in loaded.items()})
        with self._lock:
            self._models[info.model_id] = m
        return dataclasses.replace(info)

    def list_models(self) -> list[ModelInfo]:
        """The models loaded through this pool (and not deleted), oldest first; no call is made."""
        with self._lock:
            return [dataclasses.replace(m.info) for m in self._models.values()]

    def delete_model(self, model_id: str, *, timeout: float | None = None) -> None:
        """Deletes the model's copy on every server that holds one (a server that cannot be
        reached keeps its copy). NOT_FOUND if the pool does not know the id. Not retried."""
        with self._lock:
            m = self._model(model_id)
            del self._models[model_id]
        with m.lock:
            m.deleted = True
            ids = dict(m.ids)
        for i, sid in ids.items():
            try:
                self._servers[i].client.delete_model(sid, timeout=timeout)
            except WireError as e:
                if e.code not in ("NOT_FOUND", "UNAVAILABLE"):
                    raise

    # -- per-server queries -----------------------------------------------------------------
    def health(self, service: str = "", *, timeout: float | None = None) -> dict[str, str]:
        """{address: health status}; a server that cannot be reached reads "UNAVAILABLE"."""
        out = {}
        for a, s in zip(self.addresses, self._servers, strict=True):
            try:
                out[a] = s.client.health(service, timeout=timeout)
            except WireError as e:
                out[a] = e.code
        return out

    def server_info(self, *, timeout: float | None = None) -> dict[str, dict]:
        """{address: ``Client.server_info()``} (raises if a server cannot be reached)."""
        return {a: s.client.server_info(timeout=timeout) for a, s in zip(self.addresses, self._servers, strict=True)}

    # -- balanced calls ---------------------------------------------------------------------
    def _unavailable(self, errors: dict[int, WireError]) -> WireError:
        detail = "; ".join(f"{self.addresses[i]}: {e.code} {e.message}" for i, e in errors.items())
        return WireError("UNAVAILABLE", f"no server of the pool could take the call ({detail})")

    def _attempt(self, name: str, i: int, model_id: str, args, kwargs, left: float | None):
        client = self._servers[i].client
        m = self._models.get(model_id)
        if m is None:  # not the pool's: sent as is (e.g. servers that restored the same store)
            return getattr(client, name)(model_id, *args, timeout=left, **kwargs)
        sid = self._server_id(m, i, left)
        try:
            return getattr(client, name)(sid, *args, timeout=left, **kwargs)
        except WireError as e:
            if e.code != "NOT_FOUND" or not e.field.endswith("model_id"):
                raise
        sid = self._server_id(m, i, left, stale=sid)  # the server lost it (restarted): load it again, once
        return getattr(client, name)(sid, *args, timeout=left, **kwargs)

    def _dispatch(self, name: str, model_id: str, args, kwargs):
        timeout = kwargs.pop("timeout", None)
        budget = self.timeout if timeout is None else timeout
        end = None if budget is None else time.monotonic() + budget
        errors: dict[int, WireError] = {}
        for attempt in range(self.retries + 1):
            tried: set[int] = set()
            unavailable, busy_error = False, None
            while (i := self._acquire(tried)) is not None:
                tried.add(i)
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    self._release(i)
                    raise WireError("DEADLINE_EXCEEDED", f"the pool's deadline of {budget} s passed before a "
                                    f"server took the call ({self._unavailable(errors).message if errors else 'no attempt'})")
                try:
                    out = self._attempt(name, i, model_id, args, kwargs, left)
                except WireError as e:
                    busy = e.code == "RESOURCE_EXHAUSTED" and e.message.startswith(BUSY_PREFIX)
                    if e.code != "UNAVAILABLE" and not busy:
                        self._release(i)
                        raise
                    self._release(i, e, down=not busy)
                    errors[i] = e
                    if busy:
                        busy_error = e
                    else:
                        unavailable = True
                    continue
                except BaseException:
                    self._release(i)
                    raise
                self._release(i)
                return self._pool_ids(out, model_id)
            if not unavailable:  # every server is busy: say so at once, as one server would
                raise busy_error
            pause = _rpc.backoff(attempt)
            if attempt == self.retries or (end is not None and time.monotonic() + pause >= end):
                break
            time.sleep(pause)
        raise self._unavailable(errors)

    def _pool_ids(self, out, model_id: str):
        """A ModelInfo answer carries the pool's id, not the server's."""
        if isinstance(out, ModelInfo) and model_id in self._models:
            return dataclasses.replace(out, model_id=model_id)
        return out

    get_model = _balanced("get_model")
    forward_kinematics = _balanced("forward_kinematics")
    frame_jacobian = _balanced("frame_jacobian")
    inverse_kinematics = _balanced("inverse_kinematics")
    rollout = _balanced("rollout")
    contact_rollout = _balanced("contact_rollout")
    contact_gradient = _balanced("contact_gradient")
    rollout_vjp = _balanced("rollout_vjp")
    value_and_grad = _balanced("value_and_grad")
    linearize = _balanced("linearize")
    rollout_jvp = _balanced("rollout_jvp")

    def control_session(self, model_id: str, *args, **kwargs) -> ControlSession:
        """``Client.control_session`` on one server, picked as for any call; the session stays
        there (its warm-started plan lives in that server), so it does not fail over."""
        i = self._acquire(set())
        try:
            m = self._models.get(model_id)
            sid = model_id if m is None else self._server_id(m, i, kwargs.get("timeout") or self.timeout)
            return self._servers[i].client.control_session(sid, *args, **kwargs)
        finally:
            self._release(i)


__all__ = ["ClientPool"]
