"""Servers sharing one data directory follow the shared store call by call.

Two in-process servers on 127.0.0.1 start on one (empty) data directory. A model loaded on A
afterwards is served by B (loaded from the store on B's first call naming it, results equal to
A's bit for bit); a delete on either one is seen by the other on its next call; an unknown id is
NOT_FOUND naming the request's field; a full registry refuses the lazy load with
RESOURCE_EXHAUSTED; a stored row that does not load is NOT_FOUND with the reason, once tried.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sqlite3
import time

import numpy as np
import pytest
from serving import ServerThread
from simad_client import Client, WireError

DT = 0.01


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    data = tmp_path_factory.mktemp("shared-store")
    with ServerThread(data_dir=str(data)) as a, ServerThread(data_dir=str(data)) as b:
        with Client(a.address, timeout=60) as ca, Client(b.address, timeout=60) as cb:
            yield a, b, ca, cb, data / "models.sqlite"


def _problem(info, rng, B=2, T=6):
    q0 = np.asarray(info.qpos0) + 0.2 * rng.standard_normal((B, info.nq))
    return q0, 0.1 * rng.standard_normal((B, info.nv)), 0.2 * rng.standard_normal((B, T, info.nu))


def _same(x, y) -> None:
    for f in ("q", "qd", "u"):
        np.testing.assert_array_equal(getattr(x, f), getattr(y, f))


def _held(srv) -> set[str]:
    return {e.info.model_id for e in srv.server.registry.all()}


def test_a_model_loaded_on_one_server_is_served_by_the_other(pair, rng, caplog):
    a, b, ca, cb, _ = pair
    assert ca.list_models() == [] and cb.list_models() == []  # both started on an empty store
    info = ca.load_model(builtin="planar_chain_2")
    assert info.model_id not in _held(b)
    got = cb.get_model(info.model_id)  # not held by b: loaded from the store, then served
    assert (got.model_id, got.content_hash, got.name, got.created_unix_ms) == \
        (info.model_id, info.content_hash, info.name, info.created_unix_ms)
    assert info.model_id in _held(b) and b.server.metrics.count("LoadModel", "OK") == 0

    q0, qd0, u = _problem(info, rng)
    _same(cb.rollout(info.model_id, q0, qd0, u, DT), ca.rollout(info.model_id, q0, qd0, u, DT))
    _same(cb.rollout(info.model_id, q0, qd0, u, DT, stream=True), ca.rollout(info.model_id, q0, qd0, u, DT))
    for x, y in zip(cb.forward_kinematics(info.model_id, q0), ca.forward_kinematics(info.model_id, q0), strict=True):
        np.testing.assert_array_equal(x, y)

    # a control session (a stream: the id is in its first message) on a model b has not seen yet;
    # opening it is enough (its ticks are the engine's linearize kernels, seconds to load per process)
    other = ca.load_model(builtin="planar_chain_3")
    with cb.control_session(other.model_id, DT, 4) as s:
        assert (s.nq, s.nu, s.horizon) == (3, 3, 4) and other.model_id in _held(b)

    # concurrent first calls on b share one load
    third = ca.load_model(spec={"name": "pendulum", "bodies": [{"name": "link", "parent": "world", "mass": 1.0,
                                                                "com": [0, 0, -0.5], "inertia": [0.1, 0.1, 0.01]}],
                                "joints": [{"name": "hinge", "body": "link", "axis": [0, 1, 0]}],
                                "actuators": [{"joint": "hinge"}]})
    with caplog.at_level(logging.INFO, logger="simad.server"):
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            outs = list(ex.map(lambda k: cb.forward_kinematics(third.model_id, np.full(1, 0.1 * k)), range(8)))
    for k, (pos, _) in enumerate(outs):
        np.testing.assert_array_equal(pos, ca.forward_kinematics(third.model_id, np.full(1, 0.1 * k))[0])
    loads = [r for r in caplog.records if "loaded_from_store" in r.getMessage() and third.model_id in r.getMessage()]
    assert len(loads) == 1
    assert {m.model_id for m in cb.list_models()} >= {info.model_id, other.model_id, third.model_id}
    for m in (info, other, third):
        ca.delete_model(m.model_id)


def test_unknown_ids_are_still_not_found_with_the_request_field(pair, rng):
    _, b, _, cb, _ = pair
    with pytest.raises(WireError) as e:
        cb.get_model("m-0000000000000000")
    assert (e.value.code, e.value.field) == ("NOT_FOUND", "model_id")
    with pytest.raises(WireError) as e:
        cb.rollout("m-nope", np.zeros(2), np.zeros(2), np.zeros((3, 2)), DT)
    assert (e.value.code, e.value.field) == ("NOT_FOUND", "rollout.model_id")
    with pytest.raises(WireError) as e:
        with cb.control_session("m-nope", DT, 4) as s:
            s.step(np.zeros(2), np.zeros(2))
    assert (e.value.code, e.value.field) == ("NOT_FOUND", "start.model_id")
    with pytest.raises(WireError) as e:
        cb.delete_model("m-nope")
    assert (e.value.code, e.value.field) == ("NOT_FOUND", "model_id")


def test_a_delete_on_one_server_is_seen_by_the_other_on_its_next_call(pair, rng):
    a, b, ca, cb, _ = pair
    info = ca.load_model(builtin="planar_chain_2")
    q0, qd0, u = _problem(info, rng)
    cb.rollout(info.model_id, q0, qd0, u, DT)  # b holds it now
    ca.delete_model(info.model_id)
    with pytest.raises(WireError) as e:  # b's next call: the id is no longer stored
        cb.rollout(info.model_id, q0, qd0, u, DT)
    assert (e.value.code, e.value.field) == ("NOT_FOUND", "rollout.model_id")
    assert info.model_id not in _held(b)

    # ListModels drops held ids deleted elsewhere without a call naming them
    kept = ca.load_model(builtin="planar_chain_2")
    cb.get_model(kept.model_id)
    ca.delete_model(kept.model_id)
    assert kept.model_id not in {m.model_id for m in cb.list_models()}

    # a delete through b of an id b never held removes it from the store: gone on a too
    late = ca.load_model(builtin="planar_chain_2")
    cb.delete_model(late.model_id)
    for c, field in ((ca, "model_id"), (cb, "model_id")):
        with pytest.raises(WireError) as e:
            c.get_model(late.model_id)
        assert (e.value.code, e.value.field) == ("NOT_FOUND", field)
    with pytest.raises(WireError) as e:  # and a second delete anywhere is NOT_FOUND
        ca.delete_model(late.model_id)
    assert e.value.code == "NOT_FOUND"
    assert ca.list_models() == [] and cb.list_models() == []


def test_a_full_registry_refuses_the_lazy_load(pair, rng):
    a, b, ca, cb, _ = pair
    info = ca.load_model(builtin="planar_chain_2")
    reg = b.server.registry
    limit, reg.max_models = reg.max_models, len(reg)
    try:
        with pytest.raises(WireError) as e:
            cb.rollout(info.model_id, np.zeros(2), np.zeros(2), np.zeros((3, 2)), DT)
        assert (e.value.code, e.value.field) == ("RESOURCE_EXHAUSTED", "rollout.model_id")
        assert "--max-models" in e.value.message and info.model_id not in _held(b)
    finally:
        reg.max_models = limit
    assert cb.get_model(info.model_id).content_hash == info.content_hash  # room again: served
    ca.delete_model(info.model_id)


def test_a_stored_model_that_does_not_load_is_not_found_with_the_reason(pair):
    a, b, ca, cb, db_path = pair
    with sqlite3.connect(db_path) as db:  # another writer: garbage URDF text
        db.execute("INSERT INTO sources VALUES ('bad-hash', 'urdf', ?, 0)", (b"<robot name='x'><link",))
        db.execute("INSERT INTO models VALUES ('m-broken', 'bad-hash', 'broken', ?)", (int(time.time() * 1000),))
    try:
        for _ in range(2):  # tried once, then remembered
            with pytest.raises(WireError) as e:
                cb.forward_kinematics("m-broken", np.zeros(2))
            assert (e.value.code, e.value.field) == ("NOT_FOUND", "model_id")
            assert "does not load on this server" in e.value.message
        assert "m-broken" in b.server.registry._unloadable
    finally:
        cb.delete_model("m-broken")  # the row goes through b, which never held it
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM models").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM sources").fetchone()[0] == 0
