"""Kinematics of the shipped arm and of public robot descriptions against Pinocchio.

Public descriptions come from the `example-robot-data` test extra (Panda, UR5, Solo-12 with a
floating base). Joints are matched to Pinocchio's by name, so a different joint order in the
two engines cannot hide or fake an error.
"""

import importlib.util
import pathlib
import warnings

import numpy as np
import pytest
from reference import PIN_TOL, assert_close

import simad
import simad.models

pin = pytest.importorskip("pinocchio")


def _erd_path(rel: str) -> pathlib.Path | None:
    spec = importlib.util.find_spec("example_robot_data")
    roots = []
    if spec and spec.submodule_search_locations:
        roots += [pathlib.Path(p) for p in spec.submodule_search_locations]
    import site

    for sp in site.getsitepackages():
        roots.append(pathlib.Path(sp) / "cmeel.prefix/share/example-robot-data/robots")
    for r in roots:
        for cand in (r / rel, r.parent / "robots" / rel):
            if cand.exists():
                return cand
    return None


ROBOTS = {
    "arm7": lambda: (simad.models.asset_path("arm7.urdf"), False),
    "panda": lambda: (_erd_path("panda_description/urdf/panda.urdf"), False),
    "ur5": lambda: (_erd_path("ur_description/urdf/ur5_robot.urdf"), False),
    "solo12": lambda: (_erd_path("solo_description/robots/solo12.urdf"), True),
    "quadruped": lambda: (simad.models.asset_path("quadruped.urdf"), True),
    "talos": lambda: (_erd_path("talos_data/robots/talos_reduced.urdf"), True),  # humanoid, 32 dofs + base
    "tiago": lambda: (_erd_path("tiago_description/robots/tiago.urdf"), False),  # 48 dofs; repaired inertias
}


def _load(name):
    path, floating = ROBOTS[name]()
    if path is None:
        pytest.fail(f"{name}: description not found although example-robot-data is a test dependency")
    with warnings.catch_warnings():  # meshes skipped, cylinders as capsules, tiny inertias repaired
        warnings.simplefilter("ignore", UserWarning)
        model = simad.load_urdf(path, floating_base=floating)
    pm = pin.buildModelFromUrdf(str(path), pin.JointModelFreeFlyer()) if floating else pin.buildModelFromUrdf(str(path))
    return model, pm


def _maps(model, pm):
    """(q -> pinocchio q function, our dof index -> pinocchio v index)."""
    vmap = np.zeros(model.nv, int)
    for j, name in enumerate(model.jnt_names):
        jid = pm.getJointId(name)
        assert jid < pm.njoints, f"joint {name} missing in pinocchio"
        nv = 6 if model.jnt_type[j] == simad.JointType.FREE else 1
        vmap[model.jnt_vadr[j] : model.jnt_vadr[j] + nv] = np.arange(pm.idx_vs[jid], pm.idx_vs[jid] + nv)

    def to_pin(q):
        out = pin.neutral(pm)
        for j, name in enumerate(model.jnt_names):
            jid, qa = pm.getJointId(name), model.jnt_qadr[j]
            pq, pn = pm.idx_qs[jid], pm.nqs[jid]
            if model.jnt_type[j] == simad.JointType.FREE:
                out[pq : pq + 7] = np.r_[q[qa : qa + 3], q[qa + 4 : qa + 7], q[qa + 3]]
            elif pn == 2:  # Pinocchio's unbounded revolute: (cos, sin)
                out[pq : pq + 2] = np.cos(q[qa]), np.sin(q[qa])
            else:
                out[pq] = q[qa]
        return out

    return to_pin, vmap


@pytest.mark.parametrize("name", list(ROBOTS))
def test_fk_and_jacobians_equal_pinocchio(name):
    model, pm = _load(name)
    to_pin, vmap = _maps(model, pm)
    rng = np.random.default_rng(2024)
    q = simad.random_configuration(model, 5, rng)
    pos, rot = simad.forward_kinematics(model, q)
    bodies = [f for f in range(1, model.nbody) if pm.existFrame(model.frame_names[f], pin.FrameType.BODY)]
    assert len(bodies) >= model.nbody - 2, "most links must have a Pinocchio BODY frame of the same name"
    J = simad.frame_jacobian(model, q, bodies)
    data = pm.createData()
    for b in range(q.shape[0]):
        qp = to_pin(q[b])
        pin.framesForwardKinematics(pm, data, qp)
        for k, f in enumerate(bodies):
            fid = pm.getFrameId(model.frame_names[f], pin.FrameType.BODY)
            M = data.oMf[fid]
            what = f"{name} env {b} frame {model.frame_names[f]}"
            assert_close(pos[b, f], M.translation, PIN_TOL, what=what + " position")
            assert_close(rot[b, f], M.rotation, PIN_TOL, what=what + " rotation")
            Jp = pin.computeFrameJacobian(pm, data, qp, fid, pin.LOCAL_WORLD_ALIGNED)
            assert_close(J[b, k], Jp[:, vmap], PIN_TOL, what=what + " Jacobian")


@pytest.mark.parametrize("name", list(ROBOTS))
def test_rnea_crba_and_aba_equal_pinocchio(name):
    """The dynamics functions themselves on the public robots (damping set to zero: Pinocchio's
    RNEA has none; TIAGo with its repaired inertias, see test_loaders)."""
    model, pm = _load(name)
    model = model.replace(dof_damping=np.zeros(model.nv), dof_armature=np.zeros(model.nv))
    to_pin, vmap = _maps(model, pm)
    rng = np.random.default_rng(11)
    B = 3
    q = simad.random_configuration(model, B, rng)
    qd, qdd = rng.normal(size=(2, B, model.nv))
    tau = simad.inverse_dynamics(model, q, qd, qdd)
    M = simad.mass_matrix(model, q)
    acc = simad.forward_dynamics(model, q, qd, tau)
    data = pm.createData()
    P = np.ix_(vmap, vmap)
    for b in range(B):
        qp, vp, ap = to_pin(q[b]), np.zeros(pm.nv), np.zeros(pm.nv)
        vp[vmap], ap[vmap] = qd[b], qdd[b]
        tau_p = pin.rnea(pm, data, qp, vp, ap)
        Mp = pin.crba(pm, data, qp)
        Mp = np.triu(Mp) + np.triu(Mp, 1).T
        tp = np.zeros(pm.nv)
        tp[vmap] = tau[b]
        acc_p = pin.aba(pm, data, qp, vp, tp)
        what = f"{name} env {b}"
        assert_close(tau[b], tau_p[vmap], PIN_TOL * (1 + np.abs(tau_p).max()), what=what + " RNEA")
        assert_close(M[b], Mp[P], PIN_TOL * (1 + np.abs(Mp).max()), what=what + " CRBA")
        # the issue's 1e-9 (the mass matrices' condition numbers reach ~1e5 on the humanoids)
        assert_close(acc[b], acc_p[vmap], 1e-9 * (1 + np.abs(acc_p).max()), what=what + " ABA")
        assert_close(acc[b], qdd[b], 1e-9 * (1 + np.abs(qdd[b]).max()), what=what + " ABA(RNEA(qdd)) = qdd")


@pytest.mark.parametrize("name,frame", [("arm7", "ee_link"), ("panda", "panda_hand"), ("ur5", "tool0")])
def test_ik_on_robots(name, frame):
    model, _ = _load(name)
    rng = np.random.default_rng(7)
    q = simad.random_configuration(model, 300, rng)
    pos, rot = simad.forward_kinematics(model, q)
    f = model.frame_id(frame)
    res = simad.inverse_kinematics(model, frame, pos[:, f], rot[:, f])
    assert res.success.mean() >= 0.99, f"{name}: IK success {res.success.mean():.3f}"
    p2, _ = simad.forward_kinematics(model, res.q)
    assert np.linalg.norm(p2[res.success, f] - pos[res.success, f], axis=1).max() < 1e-6
