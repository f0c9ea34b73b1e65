"""The gRPC service through a real channel on 127.0.0.1: every endpoint equals the direct engine
call bit for bit, bad input gets its status code and field, auth, TLS, load, deadlines."""

from __future__ import annotations

import concurrent.futures
import time
import urllib.request

import numpy as np
import pytest
from serving import ServerThread
from simad_client import Client, WireError

import simad
from simad import models
from simad.mpc import ilqr

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def srv():
    with ServerThread(metrics_port=0, max_batch=512, max_steps=5000, max_queue=64) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv):
    with Client(srv.address, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def arm(client):
    return client.load_model(builtin="arm7"), models.load("arm7")


def _problem(model, rng, B=3, T=20):
    # well inside the joint limits: the arm's light wrist against a stiff soft limit diverges at dt = 0.01
    q0 = model.qpos0 + 0.3 * rng.standard_normal((B, model.nq))
    qd0 = 0.1 * rng.standard_normal((B, model.nv))
    u = 0.2 * rng.standard_normal((B, T, model.nu))
    return q0, qd0, u


def test_model_lifecycle_and_content_hash(client, arm):
    info, model = arm
    assert info.content_hash == model.content_hash and (info.nq, info.nv, info.nu) == (model.nq, model.nv, model.nu)
    assert info.frame_names == model.frame_names and set(info.param_names) == set(model.param_names)
    np.testing.assert_array_equal(info.params["body_mass"], model.body_mass)
    again = client.load_model(urdf=models.asset_path("arm7.urdf").read_text())
    assert again.model_id != info.model_id
    assert client.get_model(again.model_id).nv == 7
    assert again.model_id in {m.model_id for m in client.list_models()}
    client.delete_model(again.model_id)
    with pytest.raises(WireError) as e:
        client.get_model(again.model_id)
    assert (e.value.code, e.value.field) == ("NOT_FOUND", "model_id")
    assert client.get_model(info.model_id).model_id == info.model_id  # the other id is unaffected


def test_model_from_a_builder_spec_equals_the_builder(client):
    spec = {
        "name": "pendulum",
        "bodies": [{"name": "link", "parent": "world", "pos": [0, 0, 0], "mass": 2.0, "com": [0, 0, -0.5],
                    "inertia": [0.1, 0.1, 0.01]}],
        "joints": [{"name": "hinge", "body": "link", "type": "revolute", "axis": [0, 1, 0], "damping": 0.1,
                    "stiffness": 3.0, "springref": 0.2}],
        "actuators": [{"joint": "hinge", "gear": 2.0, "ctrl_range": [-1, 1], "gain": 2.0, "bias": [0, -2, -0.1]}],
        "sites": [{"name": "tip", "body": "link", "pos": [0, 0, -1]}],
    }
    info = client.load_model(spec=spec)
    b = simad.ModelBuilder("pendulum")
    b.add_body("link", 0, mass=2.0, com=(0, 0, -0.5), inertia=(0.1, 0.1, 0.01))
    b.add_joint("link", "hinge", "revolute", axis=(0, 1, 0), damping=0.1, stiffness=3.0, springref=0.2)
    b.add_actuator("hinge", gear=2.0, ctrl_range=(-1, 1), gain=2.0, bias=(0, -2, -0.1))  # a position servo
    b.add_site("tip", "link", pos=(0, 0, -1))
    model = b.finalize()
    assert info.content_hash == model.content_hash
    # the spring and the servo act through the wire as in the engine: at rest at q = 0 the spring
    # pulls toward 0.2, the servo (u = 0) back toward 0
    tr = client.rollout(info.model_id, [0.0], [0.0], np.zeros((3, 1)), 0.01)
    np.testing.assert_array_equal(tr.q, simad.rollout(model, [0.0], [0.0], np.zeros((3, 1)), 0.01).q)
    assert np.asarray(tr.q)[..., -1, 0].item() > 0.0


def test_kinematics_endpoints_equal_the_engine_bit_for_bit(client, arm, rng):
    info, model = arm
    q = simad.random_configuration(model, 5, rng)
    pos, rot = client.forward_kinematics(info.model_id, q)
    epos, erot = simad.forward_kinematics(model, q)
    np.testing.assert_array_equal(pos, epos)
    np.testing.assert_array_equal(rot, erot)
    frames = [model.frame_names[-1], model.frame_names[3]]
    J = client.frame_jacobian(info.model_id, q, frames)
    np.testing.assert_array_equal(J, simad.frame_jacobian(model, q, frames))
    tgt = epos[:, -1]
    r = client.inverse_kinematics(info.model_id, model.frame_names[-1], tgt, seed=3)
    e = simad.inverse_kinematics(model, model.frame_names[-1], tgt, seed=3)
    np.testing.assert_array_equal(r.q, e.q)
    assert r.success.all() and r.success.dtype == bool


def test_simulation_and_gradient_endpoints_equal_the_engine_bit_for_bit(client, arm, rng):
    info, model = arm
    mid = info.model_id
    q0, qd0, u = _problem(model, rng)
    tr = client.rollout(mid, q0, qd0, u, 0.01, "rk4")
    e = simad.rollout(model, q0, qd0, u, 0.01, "rk4")
    for a, b in ((tr.q, e.q), (tr.qd, e.qd), (tr.u, e.u)):
        np.testing.assert_array_equal(a, b)
    streamed = client.rollout(mid, q0, qd0, u, 0.01, "rk4", stream=True, chunk_bytes=3000)
    np.testing.assert_array_equal(streamed.q, e.q)
    np.testing.assert_array_equal(streamed.u, e.u)
    # closed loop
    T = u.shape[1]
    K = -0.5 * np.tile(np.eye(model.nu, 2 * model.nv), (T, 1, 1))  # a stabilising PD-like feedback
    qref = np.broadcast_to(model.qpos0, (T, model.nq))
    c = client.rollout(mid, q0, qd0, u, 0.01, gains=K, q_ref=qref)
    np.testing.assert_array_equal(c.q, simad.rollout(model, q0, qd0, u, 0.01, gains=K, q_ref=qref).q)
    # VJP with caller cotangents and parameters
    qb = rng.standard_normal(e.q.shape)
    g = client.rollout_vjp(mid, q0, qd0, u, 0.01, qb, integrator="rk4", params=["body_mass", "gravity"])
    ge = simad.rollout_vjp(model, q0, qd0, u, 0.01, qb, integrator="rk4", params=["body_mass", "gravity"])
    np.testing.assert_array_equal(g.controls, ge.controls)
    np.testing.assert_array_equal(g.q0, ge.q0)
    np.testing.assert_array_equal(g.params["body_mass"], ge.params["body_mass"])
    # value and gradient of a built-in cost, with a parameter override
    cost = simad.QuadraticCost(terminal_q_weight=np.ones(model.nq), u_weight=np.full(model.nu, 1e-3),
                               frames=(model.frame_names[-1],), terminal_frame_weight=np.ones(1),
                               frame_ref=np.array([[0.3, 0.2, 0.5]]), obstacle_frames=(model.frame_names[-1],),
                               obstacles=np.array([[0.3, 0.2, 0.5, 0.5]]), obstacle_weight=np.array([10.0]))
    mass = model.body_mass * 1.1
    v = client.value_and_grad(mid, q0, qd0, u, 0.01, cost, params="*", param_overrides={"body_mass": mass})
    ve = simad.value_and_grad(model.replace(body_mass=mass), q0, qd0, u, 0.01, cost)
    np.testing.assert_array_equal(v.loss, ve.loss)
    np.testing.assert_array_equal(v.controls, ve.controls)
    np.testing.assert_array_equal(v.params["body_com"], ve.params["body_com"])
    # linearization and JVP
    A, B = client.linearize(mid, e.q[:, :T], e.qd[:, :T], e.u, 0.01, "rk4")
    Ae, Be = simad.linearize(model, e.q[:, :T], e.qd[:, :T], e.u, 0.01, "rk4")
    np.testing.assert_array_equal(A, Ae)
    np.testing.assert_array_equal(B, Be)
    dq0 = rng.standard_normal((3, model.nv))
    _, dq, dqd = client.rollout_jvp(mid, q0, qd0, u, 0.01, dq0=dq0)
    _, dqe, dqde = simad.rollout_jvp(model, q0, qd0, u, 0.01, dq0=dq0)
    np.testing.assert_array_equal(dq, dqe)
    np.testing.assert_array_equal(dqd, dqde)


def test_control_session_linearization_and_feedback_plan(client, arm, rng):
    info, model = arm
    T, dt = 10, 0.01
    q, qd = model.qpos0.copy(), np.zeros(model.nv)
    u0 = 0.1 * rng.standard_normal((T, model.nu))
    with client.control_session(info.model_id, dt, T, controls=u0) as s:
        assert (s.nq, s.nv, s.nu, s.horizon) == (7, 7, 7, T)
        lin = s.step(q, qd)
        tr = simad.rollout(model, q, qd, u0[None], dt)
        np.testing.assert_array_equal(lin.q, tr.q[0])
        A, _ = simad.linearize(model, tr.q[0, :T], tr.qd[0, :T], u0, dt)
        np.testing.assert_array_equal(lin.A, A)
        lin2 = s.step(lin.q[1], lin.qd[1])  # warm start: the nominal controls shifted one step
        np.testing.assert_array_equal(lin2.u[:-1], u0[1:])
    cost = simad.QuadraticCost(q_weight=np.ones(7), q_ref=model.qpos0 + 0.2, u_weight=np.full(7, 1e-3))
    with client.control_session(info.model_id, dt, T, mode="plan", cost=cost, iterations=2) as s:
        plan = s.step(q, qd)
    direct = ilqr(model, q, qd, np.zeros((T, 7)), dt, cost, iterations=2)
    np.testing.assert_array_equal(plan.k, direct.k)
    np.testing.assert_array_equal(plan.gains, direct.gains)
    assert plan.cost == direct.cost and plan.cost < 0.5 * np.sum(0.04 * np.ones(7)) * (T + 1)


def test_control_session_tracks_a_moving_reference(client, arm, rng):
    """A reference longer than the horizon is a trajectory from the first tick: tick n plans with
    its rows n .. n + T (the last held), bit for bit the engine's iLQR on that window."""
    from simad.mpc import shift

    info, model = arm
    T, dt, L = 6, 0.01, 9
    path = model.qpos0 + 0.05 * np.sin(np.arange(L)[:, None] * 0.7 + np.arange(7))  # (L, nq), L > T + 1
    cost = simad.QuadraticCost(q_weight=np.ones(7), q_ref=path, u_weight=np.full(7, 1e-3))
    q, qd, u, mu = model.qpos0.copy(), np.zeros(7), np.zeros((T, 7)), 1e-6
    with client.control_session(info.model_id, dt, T, mode="plan", cost=cost) as s:
        for n in range(4):  # the window slides past the end at n = 3 (rows 3 .. 9, row 8 held)
            plan = s.step(q, qd)
            window = path[np.minimum(n + np.arange(T + 1), L - 1)]
            direct = ilqr(model, q, qd, u, dt, simad.QuadraticCost(q_weight=np.ones(7), q_ref=window,
                                                                   u_weight=np.full(7, 1e-3)), mu=mu)
            np.testing.assert_array_equal(plan.k, direct.k)
            assert plan.cost == direct.cost
            u, mu = shift(direct.k), direct.mu
            q, qd = direct.q_ref[1], direct.qd_ref[1]
    # a reference of exactly T + 1 rows stays fixed to the horizon (the old meaning)
    fixed = simad.QuadraticCost(q_weight=np.ones(7), q_ref=path[: T + 1], u_weight=np.full(7, 1e-3))
    with client.control_session(info.model_id, dt, T, mode="plan", cost=fixed) as s:
        s.step(model.qpos0, np.zeros(7))
        second = s.step(model.qpos0, np.zeros(7))
    p0 = ilqr(model, model.qpos0, np.zeros(7), np.zeros((T, 7)), dt, fixed)
    p1 = ilqr(model, model.qpos0, np.zeros(7), shift(p0.k), dt, fixed, mu=p0.mu)
    np.testing.assert_array_equal(second.k, p1.k)


def test_a_model_deleted_under_an_open_control_session_is_not_found(client):
    """Deleting the model a session uses ends the session's next tick with NOT_FOUND (not
    INTERNAL), and the server keeps serving."""
    spec = {"name": "only_here", "bodies": [{"name": "rod", "parent": "world", "mass": 1.2345, "com": [0, 0, -0.5],
                                             "inertia": [0.1, 0.1, 0.01]}],
            "joints": [{"name": "hinge", "body": "rod", "type": "revolute", "axis": [0, 1, 0]}],
            "actuators": [{"joint": "hinge", "gear": 1.0}]}
    info = client.load_model(spec=spec)  # content no other model of this server shares
    with client.control_session(info.model_id, 0.01, 5) as s:
        s.step([0.1], [0.0])
        client.delete_model(info.model_id)
        with pytest.raises(WireError) as e:
            s.step([0.1], [0.0])
    assert (e.value.code, e.value.field) == ("NOT_FOUND", "start.model_id") and "deleted" in e.value.message
    assert client.health() == "SERVING"


BAD_CASES = [
    # (description, call(client, mid, model) , code, field)
    ("wrong q0 shape", lambda c, m, M: c.rollout(m, np.zeros((2, 6)), np.zeros(7), np.zeros((5, 7)), 0.01),
     "INVALID_ARGUMENT", "rollout.q0"),
    ("NaN in controls", lambda c, m, M: c.rollout(m, M.qpos0, np.zeros(7), np.full((5, 7), np.nan), 0.01),
     "INVALID_ARGUMENT", "rollout.controls"),
    ("inf in qd0", lambda c, m, M: c.rollout(m, M.qpos0, np.full(7, np.inf), np.zeros((5, 7)), 0.01),
     "INVALID_ARGUMENT", "rollout.qd0"),
    ("negative dt", lambda c, m, M: c.rollout(m, M.qpos0, np.zeros(7), np.zeros((5, 7)), -0.01),
     "INVALID_ARGUMENT", "rollout.dt"),
    ("unknown model", lambda c, m, M: c.rollout("m-nope", M.qpos0, np.zeros(7), np.zeros((5, 7)), 0.01),
     "NOT_FOUND", "rollout.model_id"),
    ("T over the limit", lambda c, m, M: c.rollout(m, M.qpos0, np.zeros(7), np.zeros((6000, 7)), 0.01),
     "RESOURCE_EXHAUSTED", "rollout.controls"),
    ("B over the limit", lambda c, m, M: c.rollout(m, np.zeros((600, 7)), np.zeros(7), np.zeros((2, 7)), 0.01),
     "RESOURCE_EXHAUSTED", "rollout.q0"),
    ("unknown frame", lambda c, m, M: c.frame_jacobian(m, M.qpos0, ["no_such_frame"]), "INVALID_ARGUMENT", "frames[0]"),
    ("unknown parameter", lambda c, m, M: c.rollout_vjp(m, M.qpos0, np.zeros(7), np.zeros((3, 7)), 0.01,
                                                      params=["body_colour"]), "INVALID_ARGUMENT", "options.params"),
    ("bad cotangent shape", lambda c, m, M: c.rollout_vjp(m, M.qpos0, np.zeros(7), np.zeros((3, 7)), 0.01,
                                                        q_bar=np.zeros((1, 3, 7))), "INVALID_ARGUMENT", "q_bar"),
    ("negative cost weight", lambda c, m, M: c.value_and_grad(m, M.qpos0, np.zeros(7), np.zeros((3, 7)), 0.01,
                                                            {"q_weight": -np.ones(7)}), "INVALID_ARGUMENT", "cost.q_weight"),
    ("override shape", lambda c, m, M: c.rollout(m, M.qpos0, np.zeros(7), np.zeros((3, 7)), 0.01,
                                               param_overrides={"body_mass": np.ones(3)}),
     "INVALID_ARGUMENT", "rollout.param_overrides[body_mass]"),
    ("malformed URDF", lambda c, m, M: c.load_model(urdf="<robot name='x'><link name='a'/><joint/></robot"),
     "INVALID_ARGUMENT", "urdf"),
    ("URDF semantic error", lambda c, m, M: c.load_model(urdf="<robot name='x'><link name='a'><inertial><mass value='-1'/>"
                                                           "</inertial></link></robot>"), "INVALID_ARGUMENT", "urdf"),
    ("unknown builtin", lambda c, m, M: c.load_model(builtin="space_shuttle"), "INVALID_ARGUMENT", "builtin"),
    ("linearize shapes", lambda c, m, M: c.linearize(m, np.zeros((4, 7)), np.zeros((3, 7)), np.zeros((4, 7)), 0.01),
     "INVALID_ARGUMENT", "qd"),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_gets_its_code_and_field_and_the_server_keeps_serving(client, arm, case):
    info, model = arm
    _, call, code, field = case
    with pytest.raises(WireError) as e:
        call(client, info.model_id, model)
    assert e.value.code == code, e.value
    assert e.value.field.startswith(field), e.value
    assert client.health() == "SERVING"
    np.testing.assert_array_equal(client.forward_kinematics(info.model_id, model.qpos0)[0],
                                  simad.forward_kinematics(model, model.qpos0)[0])


def test_raw_malformed_tensors_are_rejected_with_the_field(srv, arm):
    import grpc
    from simad_client import codec
    from simad_client.proto import kinematics_pb2, kinematics_pb2_grpc

    info, _ = arm
    with grpc.insecure_channel(srv.address) as ch:
        stub = kinematics_pb2_grpc.KinematicsServiceStub(ch)
        t = codec.to_tensor(np.zeros(7))
        for mutate in (lambda t: setattr(t, "data", t.data[:-3]), lambda t: setattr(t, "dtype", 0),
                       lambda t: t.shape.extend([-1]), lambda t: t.shape.__setitem__(0, 10**12)):
            bad = type(t)()
            bad.CopyFrom(t)
            mutate(bad)
            with pytest.raises(grpc.RpcError) as e:
                stub.ForwardKinematics(kinematics_pb2.ForwardKinematicsRequest(model_id=info.model_id, q=bad))
            assert e.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert dict(e.value.trailing_metadata())["simad-field"] == "q"


def test_oversized_payload_is_refused_by_the_message_limit():
    with ServerThread(max_message_bytes=1 << 20) as s, Client(s.address, timeout=60) as c:
        info = c.load_model(builtin="planar_chain_2")
        with pytest.raises(WireError) as e:
            c.forward_kinematics(info.model_id, np.zeros((200_000, 2)))  # 3.2 MB request
        assert e.value.code == "RESOURCE_EXHAUSTED"
        assert c.health() == "SERVING"


def test_concurrent_clients_get_the_serial_results(srv, arm, rng):
    info, model = arm
    mid = info.model_id
    q0, qd0, u = _problem(model, rng, B=2, T=15)
    cost = {"terminal_q_weight": np.ones(7)}
    serial = {
        "fk": lambda c: c.forward_kinematics(mid, q0)[0],
        "roll": lambda c: c.rollout(mid, q0, qd0, u, 0.01).q,
        "grad": lambda c: c.value_and_grad(mid, q0, qd0, u, 0.01, cost).controls,
        "lin": lambda c: c.linearize(mid, q0, qd0, u[:, 0], 0.01)[0],
    }
    with Client(srv.address, timeout=120) as c0:
        expected = {k: f(c0) for k, f in serial.items()}

    def worker(i):
        n, deadline = 0, time.monotonic() + 4.0
        with Client(srv.address, timeout=120) as c:
            while time.monotonic() < deadline:
                k = list(serial)[(i + n) % len(serial)]
                np.testing.assert_array_equal(serial[k](c), expected[k])
                n += 1
        return n

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        counts = list(pool.map(worker, range(16)))
    assert min(counts) >= 1 and sum(counts) >= 16


def test_overload_is_refused_quickly_and_deadlines_are_honoured(arm):
    _, model = arm
    with ServerThread(max_queue=1) as s, Client(s.address, timeout=120, retries=0) as c:
        mid = c.load_model(builtin="arm7").model_id
        T = 20000
        big = dict(q0=np.tile(model.qpos0, (64, 1)), qd0=np.zeros(7), controls=np.zeros((T, 7)), dt=1e-3)

        def long_call():
            return c.rollout(mid, big["q0"], big["qd0"], big["controls"], big["dt"], stream=True)

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            fut = pool.submit(long_call)
            time.sleep(0.3)
            t0 = time.perf_counter()
            with pytest.raises(WireError) as e:
                c.forward_kinematics(mid, model.qpos0)
            refused_in = time.perf_counter() - t0
            fut.result()
        assert e.value.code == "RESOURCE_EXHAUSTED" and refused_in < 1.0
    with ServerThread(max_queue=8) as s, Client(s.address, timeout=120, retries=0) as c:
        mid = c.load_model(builtin="arm7").model_id
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            fut = pool.submit(lambda: c.rollout(mid, big["q0"], big["qd0"], big["controls"], big["dt"], stream=True))
            time.sleep(0.3)
            with pytest.raises(WireError) as e:
                c.forward_kinematics(mid, model.qpos0, timeout=0.2)
            fut.result()
        assert e.value.code == "DEADLINE_EXCEEDED"
        assert c.forward_kinematics(mid, model.qpos0)[0].shape == (model.nframe, 3)


def test_token_auth_with_health_exempt():
    with ServerThread(token=TOKEN) as s:
        with Client(s.address, timeout=60) as anon, Client(s.address, token="wrong", timeout=60) as bad:
            assert anon.health() == "SERVING"
            for c in (anon, bad):
                with pytest.raises(WireError) as e:
                    c.list_models()
                assert e.value.code == "UNAUTHENTICATED"
        with Client(s.address, token=TOKEN, timeout=60) as ok:
            assert ok.list_models() == [] and ok.server_info()["auth_required"]


def test_tls(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    with ServerThread(tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem")) as s:
        opts = [("grpc.ssl_target_name_override", "localhost")]
        with Client(s.address, root_certificates=str(tmp_path / "cert.pem"), options=opts, timeout=60) as c:
            assert c.server_info()["tls"] is True
            info = c.load_model(builtin="planar_chain_3")
            np.testing.assert_array_equal(c.forward_kinematics(info.model_id, np.zeros(3))[0],
                                          simad.forward_kinematics(models.planar_chain(3), np.zeros(3))[0])
        with Client(s.address, timeout=5, retries=0) as plain:  # a plaintext client cannot talk to it
            with pytest.raises(WireError) as e:
                plain.server_info()
            assert e.value.code == "UNAVAILABLE"


def test_metrics_and_server_info(srv, client, arm):
    info = client.server_info()
    assert info["precision"] == "f64" and info["backend"] == "cpu" and info["limits"]["max_batch"] == 512
    port = srv.server.metrics_server.server_address[1]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'simad_calls_total{method="LoadModel",code="OK"}' in text
    assert "simad_call_seconds_bucket" in text and "simad_queue_depth" in text


def test_reflection_lists_every_service(srv):
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(srv.address) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=30))
    names = {s.name for s in replies[0].list_services_response.service}
    expected = {f"simad.v1.{s}" for s in ("ModelService", "KinematicsService", "SimulationService", "GradientService",
                                          "ControlService", "ServerService")}
    assert expected | {"grpc.health.v1.Health"} <= names, names
