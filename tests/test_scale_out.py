"""Scale-out: several servers on 127.0.0.1 used as one.

Two servers that share a data directory serve every id in it, whichever server loaded it and
whenever (a server loads an id it does not hold from the store on first use, and drops one
deleted elsewhere on its next call; tests/test_shared_store.py has the details); gRPC's
round_robin channel spreads calls over such a fleet, loads included; ``ClientPool`` loads a
model on every server, spreads calls (results equal the engine bit for bit), fails over when a
server goes down and reloads the model on a server that comes back without it.
"""

from __future__ import annotations

import concurrent.futures
import time

import numpy as np
import pytest
from serving import ServerThread
from simad_client import Client, ClientPool, WireError

import simad
from simad import models


def _rollouts(srv) -> int:
    return srv.server.metrics.count("Rollout", "OK")


def _problem(model, rng, B=2, T=8):
    q0 = model.qpos0 + 0.2 * rng.standard_normal((B, model.nq))
    return q0, 0.1 * rng.standard_normal((B, model.nv)), 0.2 * rng.standard_normal((B, T, model.nu))


def _equal(tr, e) -> None:
    for a, b in ((tr.q, e.q), (tr.qd, e.qd), (tr.u, e.u)):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Two servers on one data directory: the first stores arm7, then the second starts and restores it."""
    data = str(tmp_path_factory.mktemp("shared-data"))
    with ServerThread(data_dir=data) as a:
        with Client(a.address, timeout=120) as c:
            seeded = c.load_model(builtin="arm7")
        with ServerThread(data_dir=data) as b:
            yield a, b, seeded


@pytest.fixture(scope="module")
def arm():
    return models.load("arm7")


def test_a_shared_data_dir_serves_every_stored_id_on_every_server(fleet):
    a, b, seeded = fleet
    with Client(a.address, timeout=60) as ca, Client(b.address, timeout=60) as cb:
        assert cb.get_model(seeded.model_id).content_hash == seeded.content_hash  # restored at b's start
        late = ca.load_model(builtin="planar_chain_2")
        got = cb.get_model(late.model_id)  # stored after b started: b loads it from the store on first use
        assert (got.model_id, got.content_hash) == (late.model_id, late.content_hash)
        again = cb.load_model(builtin="planar_chain_2")  # same content, new id; a serves it too
        assert again.model_id != late.model_id and again.content_hash == late.content_hash
        assert ca.get_model(again.model_id).content_hash == late.content_hash
        ca.delete_model(late.model_id)
        cb.delete_model(again.model_id)
        for c in (ca, cb):  # each delete is seen by the other server on its next call
            for mid in (late.model_id, again.model_id):
                with pytest.raises(WireError) as e:
                    c.get_model(mid)
                assert (e.value.code, e.value.field) == ("NOT_FOUND", "model_id")


def test_grpc_round_robin_channel_spreads_calls_over_a_fleet(fleet, arm, rng):
    a, b, seeded = fleet
    q0, qd0, u = _problem(arm, rng)
    expect = simad.rollout(arm, q0, qd0, u, 0.01)
    start = _rollouts(a), _rollouts(b)
    with Client(f"ipv4:{a.address},{b.address}", options=[("grpc.lb_policy_name", "round_robin")], timeout=60) as c:
        end = time.monotonic() + 10
        while min(_rollouts(a) - start[0], _rollouts(b) - start[1]) == 0 and time.monotonic() < end:
            _equal(c.rollout(seeded.model_id, q0, qd0, u, 0.01), expect)  # until both connections are up
        before = _rollouts(a), _rollouts(b)
        for _ in range(8):
            _equal(c.rollout(seeded.model_id, q0, qd0, u, 0.01), expect)
        assert (_rollouts(a) - before[0], _rollouts(b) - before[1]) == (4, 4)  # then strictly in turn
        late = c.load_model(builtin="arm7")  # a load through the channel lands on one server...
        before = _rollouts(a), _rollouts(b)
        for _ in range(4):  # ...and the other serves the new id too (from the shared store)
            _equal(c.rollout(late.model_id, q0, qd0, u, 0.01), expect)
        assert (_rollouts(a) - before[0], _rollouts(b) - before[1]) == (2, 2)
        c.delete_model(late.model_id)
        for _ in range(2):  # deleted on one server, gone on both
            with pytest.raises(WireError) as e:
                c.get_model(late.model_id)
            assert e.value.code == "NOT_FOUND"


def test_pool_loads_everywhere_matches_the_engine_and_spreads_calls(fleet, arm, rng):
    a, b, _ = fleet
    with ClientPool([a.address, b.address], timeout=60) as pool:
        info = pool.load_model(builtin="arm7")
        ids = pool.server_ids(info.model_id)
        assert set(ids) == {a.address, b.address} and ids[a.address] == info.model_id != ids[b.address]
        assert info.content_hash == arm.content_hash and pool.get_model(info.model_id).model_id == info.model_id
        q0, qd0, u = _problem(arm, rng)
        expect = simad.rollout(arm, q0, qd0, u, 0.01)
        before = _rollouts(a), _rollouts(b)
        for _ in range(6):  # one at a time: least-outstanding ties rotate, so the servers alternate
            _equal(pool.rollout(info.model_id, q0, qd0, u, 0.01), expect)
        assert (_rollouts(a) - before[0], _rollouts(b) - before[1]) == (3, 3)

        with concurrent.futures.ThreadPoolExecutor(4) as ex:  # several threads share the pool
            done = list(ex.map(lambda k: pool.rollout(info.model_id, q0, qd0, u, 0.01), range(24)))
        for tr in done:
            _equal(tr, expect)
        spread = _rollouts(a) - before[0], _rollouts(b) - before[1]
        assert sum(spread) == 30 and min(spread) >= 8, spread
        stats = pool.stats()
        assert all(s["outstanding"] == 0 and s["failures"] == 0 for s in stats.values())
        assert sum(s["calls"] for s in stats.values()) == 31  # 30 rollouts and get_model
        with pool.control_session(info.model_id, 0.01, 8, controls=u[0]) as s:  # one stream to one server
            assert (s.nq, s.nu, s.horizon) == (7, 7, 8)

        # errors that would be the same everywhere are raised once, not failed over
        with pytest.raises(WireError) as e:
            pool.rollout(info.model_id, q0[:, :3], qd0, u, 0.01)
        assert (e.value.code, e.value.field) == ("INVALID_ARGUMENT", "rollout.q0")
        with pytest.raises(WireError) as e:
            pool.load_model(builtin="space_shuttle")
        assert e.value.code == "INVALID_ARGUMENT" and e.value.field.startswith("builtin")
        assert sum(s["failures"] for s in pool.stats().values()) == 0
        pool.delete_model(info.model_id)
        assert pool.list_models() == []
        with pytest.raises(WireError) as e:
            pool.rollout(info.model_id, q0, qd0, u, 0.01)  # not the pool's any more: sent as is, unknown
        assert e.value.code == "NOT_FOUND"
    with Client(a.address) as ca, Client(b.address) as cb:
        assert info.model_id not in {m.model_id for m in ca.list_models()}
        assert ids[b.address] not in {m.model_id for m in cb.list_models()}


def test_pool_fails_over_reloads_on_a_returning_server_and_reports_when_all_are_down(arm, rng):
    q0, qd0, u = _problem(arm, rng)
    expect = simad.rollout(arm, q0, qd0, u, 0.01)
    c = ServerThread().__enter__()
    d = ServerThread().__enter__()
    servers, started = [c, d], [c, d]
    try:
        with ClientPool([c.address, d.address], cooldown=0.3, retries=1, timeout=60) as pool:
            info = pool.load_model(builtin="arm7")
            for _ in range(2):
                _equal(pool.rollout(info.model_id, q0, qd0, u, 0.01), expect)
            assert _rollouts(c) == _rollouts(d) == 1

            d.__exit__(None, None, None)  # d goes down: every call still succeeds, on c
            servers.remove(d)
            for _ in range(4):
                _equal(pool.rollout(info.model_id, q0, qd0, u, 0.01), expect)
            assert _rollouts(c) == 5 and pool.stats()[d.address]["failures"] >= 1
            rr = Client(f"ipv4:{c.address},{d.address}", options=[("grpc.lb_policy_name", "round_robin")], retries=0)
            with rr:  # a round_robin channel leaves the dead server out too (c knows the pool's id)
                assert all(rr.get_model(info.model_id).nq == 7 for _ in range(6))
            chain = pool.load_model(builtin="planar_chain_2")  # while d is down: stored on c only
            assert list(pool.server_ids(chain.model_id)) == [c.address] and pool.stats()[d.address]["down"]

            # a new server on d's address, with an empty store: the pool loads the models there again
            d2 = ServerThread(address=d.address).__enter__()
            servers.append(d2)
            started.append(d2)
            end = time.monotonic() + 20
            while _rollouts(d2) == 0 and time.monotonic() < end:
                _equal(pool.rollout(info.model_id, q0, qd0, u, 0.01), expect)
                time.sleep(0.05)
            assert _rollouts(d2) > 0 and d2.server.metrics.count("LoadModel", "OK") == 1
            for _ in range(4):  # planar_chain_2 reaches d2 on its first turn there
                pool.rollout(chain.model_id, np.zeros(2), np.zeros(2), np.zeros((3, 2)), 0.01)
            assert set(pool.server_ids(chain.model_id)) == {c.address, d.address}

            for s in list(servers):  # everything down: a clear error, quickly
                s.__exit__(None, None, None)
                servers.remove(s)
            t0 = time.monotonic()
            with pytest.raises(WireError) as e:
                pool.rollout(info.model_id, q0, qd0, u, 0.01)
            assert e.value.code == "UNAVAILABLE" and c.address in e.value.message and d.address in e.value.message
            assert time.monotonic() - t0 < 5
    finally:
        for s in servers:
            s.__exit__(None, None, None)
    for s in started:  # every worker process stopped with its server
        assert not s.server.sim._proc.is_alive()
