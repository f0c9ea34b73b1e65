"""The server as a real process (``python -m simad_server serve``) and its worker process:
models survive a restart (SQLite store in the data directory), bad stored rows do not block
start-up, SIGTERM drains in-flight calls and exits 0, health is NOT_SERVING until ready, and a
crashed simulation worker is replaced with every model."""

from __future__ import annotations

import concurrent.futures
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from serving import ServerThread

import simad
from simad import models
from simad_client import Client, WireError

ROOT = Path(__file__).resolve().parents[1]
FIRST_CALL_S = 300.0  # generous: a fresh process may compile kernels on its first calls

TWO_LINK_URDF = """<robot name="two_link">
  <link name="base"/>
  <link name="upper">
    <inertial><origin xyz="0 0 0.25"/><mass value="1.0"/>
      <inertia ixx="0.02" ixy="0" ixz="0" iyy="0.02" iyz="0" izz="0.001"/></inertial>
  </link>
  <link name="lower">
    <inertial><origin xyz="0 0 0.2"/><mass value="0.5"/>
      <inertia ixx="0.01" ixy="0" ixz="0" iyy="0.01" iyz="0" izz="0.0005"/></inertial>
  </link>
  <joint name="shoulder" type="revolute"><parent link="base"/><child link="upper"/>
    <axis xyz="0 1 0"/><limit lower="-2" upper="2" effort="10" velocity="5"/></joint>
  <joint name="elbow" type="revolute"><parent link="upper"/><child link="lower"/>
    <origin xyz="0 0 0.5"/><axis xyz="0 1 0"/><limit lower="-2.5" upper="2.5" effort="5" velocity="5"/></joint>
</robot>"""


class ServerProcess:
    """``simad serve`` in a child process on 127.0.0.1:<any port>; stdout lines are collected by
    a thread (``wait_line``), stderr (one JSON log line per call) goes to a file."""

    def __init__(self, data_dir: Path, *extra: str):
        # no server setting from the caller's environment, but the session's compile mode and
        # kernel cache (the results are compared bit for bit with this process's)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIMAD_") or k in ("SIMAD_COMPILE", "SIMAD_CACHE_DIR")}
        paths = [str(ROOT), str(ROOT / "server"), str(ROOT / "clients" / "python")]
        env["PYTHONPATH"] = os.pathsep.join(paths + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
        env["SIMAD_ARCH"] = "cpu"
        self.stderr_path = Path(data_dir).parent / f"{Path(data_dir).name}-stderr-{time.monotonic_ns()}.log"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()/kill()
        cmd = [sys.executable, "-m", "simad_server", "serve", "--address", "127.0.0.1:0", "--data-dir", str(data_dir),
               "--no-warmup", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env, cwd=str(ROOT))
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.address = self.wait_line("simad: listening on ", 120).split()[-1]

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)  # EOF

    def wait_line(self, prefix: str, timeout: float) -> str:
        """The next stdout line starting with ``prefix`` (fails on EOF or timeout)."""
        end = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(end - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no line {prefix!r} within {timeout} s; stdout so far: {self.lines}; "
                                     f"stderr: {self.stderr()[-2000:]}") from None
            if line is None:
                raise AssertionError(f"server exited (code {self.proc.poll()}) before {prefix!r}; stdout: {self.lines}; "
                                     f"stderr: {self.stderr()[-2000:]}")
            if line.startswith(prefix):
                return line

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def terminate(self, timeout: float = 60) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until exit)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - t0

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.proc.stdout.close()
        self._stderr.close()


def _info_tuple(m):
    return (m.model_id, m.content_hash, m.name, m.nq, m.nv, m.nu, m.frame_names, m.created_unix_ms)


def test_models_persist_across_a_restart_and_bad_stored_rows_do_not_block_start_up(tmp_path):
    data = tmp_path / "data"
    chain, two = models.load("planar_chain_3"), simad.load_urdf(TWO_LINK_URDF, name="my arm")
    rng = np.random.default_rng(7)
    q_chain = rng.uniform(-1, 1, (4, chain.nq))
    q_two = rng.uniform(-1, 1, (4, two.nq))

    # --- first run: load, deduplicate, delete ---------------------------------------------------
    srv = ServerProcess(data)
    try:
        srv.wait_line("simad: ready (", 120)
        with Client(srv.address, timeout=FIRST_CALL_S) as c:
            assert c.health() == "SERVING"
            a = c.load_model(builtin="planar_chain_3")
            b = c.load_model(urdf=TWO_LINK_URDF, name="my arm")
            a2 = c.load_model(builtin="planar_chain_3")
            gone = c.load_model(builtin="planar_chain_2")
            c.delete_model(gone.model_id)
            assert a.model_id != a2.model_id and a.content_hash == a2.content_hash == chain.content_hash
            assert b.content_hash == two.content_hash != a.content_hash and b.name == "my arm"
            before = [_info_tuple(m) for m in c.list_models()]
            assert [t[0] for t in before] == [a.model_id, b.model_id, a2.model_id]
            fk_before = c.forward_kinematics(a.model_id, q_chain)
        code, _ = srv.terminate()
        assert code == 0
        assert srv.lines[-2:] == ["simad: draining", "simad: stopped"]
    finally:
        srv.kill()

    # the store: one SQLite file, each distinct model stored once
    db_path = data / "models.sqlite"
    assert db_path.is_file()
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM models").fetchone()[0] == 3
        assert db.execute("SELECT COUNT(*) FROM sources").fetchone()[0] == 2
        # rows that no longer load: garbage URDF text, and a source kind this server does not know
        now = int(time.time() * 1000)
        db.execute("INSERT INTO sources VALUES ('bad-urdf-hash', 'urdf', ?, 0)", (b"<robot name='x'><link",))
        db.execute("INSERT INTO sources VALUES ('bad-kind-hash', 'quantum', ?, 0)", (b"\x00\xff",))
        db.execute("INSERT INTO models VALUES ('m-corrupt', 'bad-urdf-hash', 'broken', ?)", (now,))
        db.execute("INSERT INTO models VALUES ('m-unknown', 'bad-kind-hash', 'alien', ?)", (now + 1,))

    # --- second run: NOT_SERVING while restoring, then the same models -------------------------
    srv = ServerProcess(data)
    try:
        statuses, refusals, ready_line = [], [], []
        waiter = threading.Thread(target=lambda: ready_line.append(srv.wait_line("simad: ready (", 120)))
        waiter.start()
        with Client(srv.address, timeout=30, retries=20) as probe, Client(srv.address, timeout=10, retries=0) as once:
            while waiter.is_alive():  # poll health until the ready line
                try:
                    statuses.append(probe.health(timeout=10))
                except WireError as e:
                    statuses.append(e.code)
                if statuses[-1] == "NOT_SERVING" and not refusals:
                    try:  # calls are refused while not serving
                        once.list_models()
                        refusals.append(None)
                    except WireError as e:
                        refusals.append(e)
                time.sleep(0.01)
            waiter.join()
        # restoring takes a while (each model runs its kernels once): NOT_SERVING, then SERVING for good
        assert "NOT_SERVING" in statuses, statuses
        first = statuses.index("NOT_SERVING")
        assert set(statuses[:first]) <= {"UNAVAILABLE"}, statuses  # before the listener started
        rest = statuses[first:]
        k = rest.index("SERVING") if "SERVING" in rest else len(rest)
        assert set(rest[:k]) == {"NOT_SERVING"} and set(rest[k:]) <= {"SERVING"}, statuses
        assert refusals[0] is not None, "a call was served before the server was ready"
        assert refusals[0].code == "UNAVAILABLE" and "warming up" in refusals[0].message
        assert ready_line[0].startswith("simad: ready (cpu, f64, 3 stored models")

        with Client(srv.address, timeout=FIRST_CALL_S) as c:
            assert c.health() == "SERVING"
            after = [_info_tuple(m) for m in c.list_models()]
            assert after == before  # ids, hashes, names, sizes and load times; no corrupt rows served
            for bad in ("m-corrupt", "m-unknown", gone.model_id):
                with pytest.raises(WireError) as e:
                    c.get_model(bad)
                assert (e.value.code, e.value.field) == ("NOT_FOUND", "model_id")
            # restored models compute exactly what the engine computes
            pos, rot = c.forward_kinematics(a2.model_id, q_chain)
            epos, erot = simad.forward_kinematics(chain, q_chain)
            np.testing.assert_array_equal(pos, epos)
            np.testing.assert_array_equal(rot, erot)
            np.testing.assert_array_equal(pos, fk_before[0])
            pos, rot = c.forward_kinematics(b.model_id, q_two)
            epos, erot = simad.forward_kinematics(two, q_two)
            np.testing.assert_array_equal(pos, epos)
            np.testing.assert_array_equal(rot, erot)
            assert c.get_model(b.model_id).name == "my arm"
            # deletions in this run persist: a2 shares its source with a (kept), b is alone (removed)
            c.delete_model(a2.model_id)
            c.delete_model(b.model_id)
            assert [m.model_id for m in c.list_models()] == [a.model_id]
        assert '"event":"restore_failed","model":"m-corrupt"' in srv.stderr()
        assert '"event":"restore_failed","model":"m-unknown"' in srv.stderr()
        code, _ = srv.terminate()
        assert code == 0 and srv.lines[-1] == "simad: stopped"
    finally:
        srv.kill()

    with sqlite3.connect(db_path) as db:
        ids = {r[0] for r in db.execute("SELECT model_id FROM models")}
        hashes = {r[0] for r in db.execute("SELECT content_hash FROM sources")}
    assert ids == {a.model_id, "m-corrupt", "m-unknown"}  # failed rows are kept, not deleted
    assert hashes == {a.content_hash, "bad-urdf-hash", "bad-kind-hash"}


def _queue_depth(metrics_port: int) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    return int(next(line for line in text.splitlines() if line.startswith("simad_queue_depth ")).split()[1])


def test_sigterm_drains_in_flight_calls_then_exits_0(tmp_path):
    grace = 30.0
    arm = models.load("arm7")
    B, T, dt = 16, 20000, 1e-3
    q0 = np.tile(arm.qpos0, (B, 1))  # (falling from other states, the stiff joint limits diverge at this dt)
    controls = np.zeros((T, arm.nu))
    srv = ServerProcess(tmp_path / "data", "--metrics-port", "0", "--grace", str(grace))
    try:
        ready = srv.wait_line("simad: ready (", 120)
        metrics_port = int(ready.rsplit(":", 1)[1].rstrip(")"))
        with Client(srv.address, timeout=FIRST_CALL_S, retries=0) as c:
            mid = c.load_model(builtin="arm7").model_id
            c.rollout(mid, q0, np.zeros(arm.nv), controls[:5], dt)  # compiles the rollout kernel
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                t_call = time.monotonic()
                fut = pool.submit(c.rollout, mid, q0, np.zeros(arm.nv), controls, dt)
                while _queue_depth(metrics_port) < 1:  # the call is in the worker
                    assert not fut.done(), fut.result()
                    assert time.monotonic() - t_call < 60
                    time.sleep(0.01)
                t_term = time.monotonic()
                srv.proc.send_signal(signal.SIGTERM)
                srv.wait_line("simad: draining", 30)
                # while draining, new calls are refused at once, retryably, and health says so
                with Client(srv.address, timeout=10, retries=0) as late:
                    t0 = time.monotonic()
                    with pytest.raises(WireError) as e:
                        late.list_models()
                    assert e.value.code == "UNAVAILABLE" and time.monotonic() - t0 < 5
                    assert "shutting down" in e.value.message, e.value
                    assert late.health() == "NOT_SERVING"
                running = not fut.done()
                tr = fut.result(timeout=grace)
            assert running, "the call finished before the drain started; the test proved nothing"
            code = srv.proc.wait(grace)
            exited_in = time.monotonic() - t_term
            assert code == 0 and exited_in < grace
            assert srv.lines[-2:] == ["simad: draining", "simad: stopped"]
            # the drained call is complete and correct
            assert tr.q.shape == (B, T + 1, arm.nq) and tr.qd.shape == (B, T + 1, arm.nv) and tr.u.shape == (B, T, arm.nu)
            np.testing.assert_array_equal(tr.q[:, 0], q0)
            e_tr = simad.rollout(arm, q0, np.zeros(arm.nv), controls, dt)
            np.testing.assert_array_equal(tr.q[:, -1], e_tr.q[:, -1])
            np.testing.assert_array_equal(tr.qd[:, -1], e_tr.qd[:, -1])
            # after the drain nothing answers
            with pytest.raises(WireError) as e:
                c.forward_kinematics(mid, arm.qpos0, timeout=10)
            assert e.value.code == "UNAVAILABLE"
    finally:
        srv.kill()


def test_a_killed_worker_is_replaced_with_every_model():
    chain, arm = models.load("planar_chain_3"), models.load("arm7")
    rng = np.random.default_rng(3)
    q = rng.uniform(-1, 1, (3, chain.nq))
    u = 0.1 * rng.standard_normal((2, 6, chain.nu))
    with ServerThread() as s, Client(s.address, timeout=FIRST_CALL_S, retries=10) as c, \
            Client(s.address, timeout=FIRST_CALL_S, retries=0) as once:
        cid = c.load_model(builtin="planar_chain_3").model_id
        aid = c.load_model(builtin="arm7").model_id
        np.testing.assert_array_equal(c.forward_kinematics(cid, q)[0], simad.forward_kinematics(chain, q)[0])
        sim = s.server.sim

        # a call in the worker when it dies fails with UNAVAILABLE, at once
        big = np.zeros((20000, arm.nu))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            fut = pool.submit(once.rollout, aid, np.tile(arm.qpos0, (16, 1)), np.zeros(arm.nv), big, 1e-3)
            t0 = time.monotonic()
            while sim.depth < 1:
                assert time.monotonic() - t0 < 60 and not fut.done()
                time.sleep(0.005)
            time.sleep(0.3)  # let the worker start on it (the rollout takes ~1 s)
            old = sim._proc
            old.kill()
            with pytest.raises(WireError) as e:
                fut.result(timeout=60)
        assert e.value.code == "UNAVAILABLE" and "worker" in e.value.message, e.value
        # the server's restart thread reaps the same process object: a join here can lose the
        # waitpid race and return before the exit code is recorded, so wait for the record
        t0 = time.monotonic()
        while old.exitcode is None and time.monotonic() - t0 < 30:
            time.sleep(0.01)
        assert old.exitcode == -signal.SIGKILL

        # the next calls succeed again (the client retries UNAVAILABLE while the new worker starts)
        t0 = time.monotonic()
        pos, rot = c.forward_kinematics(cid, q)
        recovered_in = time.monotonic() - t0
        epos, erot = simad.forward_kinematics(chain, q)
        np.testing.assert_array_equal(pos, epos)
        np.testing.assert_array_equal(rot, erot)
        assert sim.restarts == 1 and sim._proc.pid != old.pid and sim._proc.is_alive()
        assert recovered_in < 60
        # every model loaded before the crash works in the new worker, bit for bit
        tr = c.rollout(cid, q[:2], np.zeros(chain.nv), u, 0.01, "rk4")
        etr = simad.rollout(chain, q[:2], np.zeros(chain.nv), u, 0.01, "rk4")
        np.testing.assert_array_equal(tr.q, etr.q)
        np.testing.assert_array_equal(tr.qd, etr.qd)
        qa = arm.qpos0 + 0.1
        np.testing.assert_array_equal(c.forward_kinematics(aid, qa)[0], simad.forward_kinematics(arm, qa)[0])
        # and loading still works
        nid = c.load_model(urdf=TWO_LINK_URDF).model_id
        two = simad.load_urdf(TWO_LINK_URDF)
        np.testing.assert_array_equal(c.forward_kinematics(nid, np.zeros(2))[0],
                                      simad.forward_kinematics(two, np.zeros(2))[0])
        assert c.health() == "SERVING" and sim.restarts == 1
