"""The server's pipe to its simulation worker, done on the event loop (server/simad_server/worker.py),
through a real gRPC channel on 127.0.0.1: a request larger than the socket buffer waits in the
loop's write buffer while the worker is busy, without blocking the loop, and arrives intact; a
worker killed while such a request is half written fails both calls with UNAVAILABLE and the
server recovers with every model; the blocking ``call`` works from another thread while the
loop owns the pipe, and fails with UNAVAILABLE when the worker dies under it."""

from __future__ import annotations

import concurrent.futures
import pickle
import threading
import time

import numpy as np
import pytest
from serving import ServerThread
from simad_client import Client, WireError
from simad_server import worker as worker_mod

import simad
from simad import models

FIRST_CALL_S = 300.0  # a fresh worker may compile kernels on its first calls
LONG = dict(B=2, T=100_000)  # a rollout of ~1 s with a ~34 MB reply (under the 64 MiB message limit)
BIG_B = 20_000  # FK of 20,000 configurations: a 1.1 MB request (the socket takes ~200 kB), a 21 MB reply


@pytest.fixture(scope="module")
def arm():
    return models.load("arm7")


def _long_rollout(c, mid, arm):
    B, T = LONG["B"], LONG["T"]
    return c.rollout(mid, np.tile(arm.qpos0, (B, 1)), np.zeros(arm.nv), np.zeros((T, arm.nu)), 1e-3, stream=False)


def _wait(cond, what: str, timeout: float = 60.0):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.002)


def test_a_large_request_waits_in_the_loop_without_blocking_it(arm):
    rng = np.random.default_rng(5)
    q = rng.uniform(-1.0, 1.0, (BIG_B, arm.nq))
    with ServerThread(max_batch=BIG_B) as s, Client(s.address, timeout=FIRST_CALL_S, retries=0) as c:
        mid = c.load_model(builtin="arm7").model_id
        c.forward_kinematics(mid, q[:20])  # compile (or load) the parallel FK kernel first
        sim = s.server.sim
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            long = pool.submit(_long_rollout, c, mid, arm)
            _wait(lambda: sim.depth >= 1, "the long call to be queued")
            big = pool.submit(c.forward_kinematics, mid, q)
            _wait(lambda: sim.depth >= 2 or big.done(), "the large request to be queued")
            # the worker is busy: the request's bytes wait in the loop's buffer, a writer callback
            # sends them as the worker reads; meanwhile the loop serves other calls
            assert sim._out, "the large request should not fit the socket while the worker is busy"
            assert c.health() == "SERVING"
            info = c.server_info()
            assert info["models"] == 1 and not long.done() and not big.done()
            tr = long.result(FIRST_CALL_S)
            pos, rot = big.result(FIRST_CALL_S)
        assert tr.q.shape == (LONG["B"], LONG["T"] + 1, arm.nq)
        epos, erot = simad.forward_kinematics(arm, q)
        np.testing.assert_array_equal(pos, epos)  # the 1.1 MB request and the 21 MB reply arrived intact
        np.testing.assert_array_equal(rot, erot)
        assert not sim._out and sim.depth == 0 and sim.restarts == 0


def test_a_worker_killed_while_a_request_is_half_written_is_replaced(arm):
    rng = np.random.default_rng(6)
    q = rng.uniform(-1.0, 1.0, (BIG_B, arm.nq))
    chain = models.planar_chain(3)
    with ServerThread(max_batch=BIG_B) as s, Client(s.address, timeout=FIRST_CALL_S, retries=0) as once, \
            Client(s.address, timeout=FIRST_CALL_S, retries=10) as c:
        mid = c.load_model(builtin="arm7").model_id
        cid = c.load_model(builtin="planar_chain_3").model_id
        c.forward_kinematics(mid, q[:20])
        sim = s.server.sim
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            long = pool.submit(_long_rollout, once, mid, arm)
            _wait(lambda: sim.depth >= 1, "the long call to be queued")
            big = pool.submit(once.forward_kinematics, mid, q)
            _wait(lambda: sim.depth >= 2 and bool(sim._out), "the large request to wait in the write buffer")
            old = sim._proc
            old.kill()
            for fut in (long, big):
                with pytest.raises(WireError) as e:
                    fut.result(FIRST_CALL_S)
                assert e.value.code == "UNAVAILABLE" and "worker" in e.value.message, e.value
        old.join(30)
        # the next calls succeed (the client retries UNAVAILABLE while the new worker starts), bit for bit
        pos, rot = c.forward_kinematics(mid, q)
        epos, erot = simad.forward_kinematics(arm, q)
        np.testing.assert_array_equal(pos, epos)
        np.testing.assert_array_equal(rot, erot)
        qc = rng.uniform(-1.0, 1.0, (3, chain.nq))
        np.testing.assert_array_equal(c.forward_kinematics(cid, qc)[0], simad.forward_kinematics(chain, qc)[0])
        assert sim.restarts == 1 and sim._proc.pid != old.pid and sim._proc.is_alive()
        assert sim.depth == 0 and not sim._out


def test_the_blocking_call_from_another_thread_while_the_loop_owns_the_pipe(arm):
    rng = np.random.default_rng(7)
    with ServerThread() as s, Client(s.address, timeout=FIRST_CALL_S, retries=0) as c:
        mid = c.load_model(builtin="arm7").model_id
        key = s.server.registry.get(mid).key
        sim = s.server.sim
        qs = rng.uniform(-1.0, 1.0, (40, arm.nq))
        expected = [simad.forward_kinematics(arm, q)[0] for q in qs]
        assert sim._loop is not None and sim._loop.is_running()  # the loop's reader answers the calls

        def remote(i):
            return c.forward_kinematics(mid, qs[i])[0]

        def blocking(i):  # what start-up does from an executor thread, while gRPC calls flow
            return sim.call("forward_kinematics", key, qs[i])[0]

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futs = [pool.submit(remote if i % 2 else blocking, i) for i in range(len(qs))]
            got = [f.result(FIRST_CALL_S) for f in futs]
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_array_equal(g, e)
        assert sim.call("runtime_info")["precision"] == c.server_info()["precision"]

        # a worker that dies under a blocking call: UNAVAILABLE, then the worker is back
        B, T = LONG["B"], LONG["T"]
        box: dict = {}

        def long_call():
            try:
                sim.call("rollout", key, np.tile(arm.qpos0, (B, 1)), np.zeros(arm.nv), np.zeros((T, arm.nu)), 1e-3)
            except WireError as e:
                box["error"] = e

        t = threading.Thread(target=long_call)
        t.start()
        _wait(lambda: sim.depth >= 1, "the blocking call to be queued")
        time.sleep(0.2)
        old = sim._proc
        old.kill()
        t.join(60)
        assert box["error"].code == "UNAVAILABLE", box
        with Client(s.address, timeout=FIRST_CALL_S, retries=10) as again:
            np.testing.assert_array_equal(again.forward_kinematics(mid, qs[0])[0], expected[0])
        assert sim.restarts == 1


class _Picky(Exception):
    """An exception whose constructor needs two arguments: pickle cannot rebuild it."""

    def __init__(self, a, b):
        super().__init__(f"{a} {b}")


def test_an_exception_that_does_not_unpickle_goes_back_as_a_runtime_error():
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(_Picky(1, 2)))
    kind, cid, e = pickle.loads(worker_mod._error_frame(7, _Picky(1, 2)))
    assert (kind, cid) == ("err", 7) and isinstance(e, RuntimeError) and "_Picky: 1 2" in str(e)
    kind, cid, e = pickle.loads(worker_mod._error_frame(8, ValueError("plain")))
    assert (kind, cid) == ("err", 8) and isinstance(e, ValueError) and str(e) == "plain"


def test_the_pipe_pickler_round_trips_every_kind_of_array():
    # numeric C-contiguous arrays travel as (raw buffer, dtype string, shape); anything else
    # takes numpy's own pickling: every one must come back equal, same dtype and shape, writable
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    arrays = [base, base.astype(np.float32), base[:, ::2], base.T, np.zeros((0, 3)), np.float64(2.5),
              np.array(7.0), np.array([True, False]), np.arange(5, dtype=">i4"), np.array([1 + 2j]),
              np.array(["a", "bc"]), np.array([{"k": 1}, None], dtype=object),
              np.zeros(3, dtype=[("x", "f8"), ("n", "i4")])]
    msg = ("ok", 3, {"arrays": arrays, "nested": (base, [base[1]])})
    back = pickle.loads(worker_mod._dumps(msg))
    assert back[:2] == ("ok", 3)
    for a, b in zip(arrays + [base, base[1]], back[2]["arrays"] + [back[2]["nested"][0], back[2]["nested"][1][0]],
                    strict=True):
        assert type(a) is type(b) and a.dtype == b.dtype and np.shape(a) == np.shape(b)
        np.testing.assert_array_equal(a, b)
        if isinstance(b, np.ndarray):
            assert b.flags.writeable
    # a large reply is not copied into one intermediate pickle per chunk, but the bytes are whole
    big = np.random.default_rng(0).normal(size=(512, 1024))
    data = worker_mod._dumps(("ok", 1, big))
    assert isinstance(data, bytes) and len(data) > big.nbytes
    np.testing.assert_array_equal(pickle.loads(data)[2], big)
