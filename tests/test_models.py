"""Shipped models: the planar-chain generator against its definition, the analytic planar
formula and MuJoCo; the shipped robots (URDF / MJCF assets) against Pinocchio and MuJoCo."""

import numpy as np
import pytest
from reference import PIN_TOL, assert_close

import simad
from simad import models

MJ_TOL = 1e-10  # agreement with MuJoCo's kinematics and compiled parameters, f64
ANALYTIC_TOL = 1e-10  # agreement with closed-form kinematics, f64
EXACT = 1e-15  # parameters that are copied, not computed
TRIANGLE_SLACK = 1e-12  # kg m^2, slack on A + B >= C for principal moments

# arm7.urdf uses <cylinder> collisions on purpose; the loader approximates them by capsules.
pytestmark = pytest.mark.filterwarnings("ignore:.*cylinder collision approximated by a capsule:UserWarning")


def _ry(a):
    """Rotation about +y by angle a (rad)."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


# ---------------------------------------------------------------------------------------------
# planar_chain: the reference problem
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 7])
def test_planar_chain_sizes_names_and_parameters(n):
    m = models.planar_chain(n)
    assert (m.nbody, m.njnt, m.nq, m.nv, m.nu, m.nsite, m.ngeom) == (n + 1, n, n, n, n, 1, 0)
    assert m.name == f"planar_chain_{n}"
    assert m.body_names == ("world",) + tuple(f"link{i}" for i in range(1, n + 1))
    assert m.jnt_names == tuple(f"joint{i}" for i in range(1, n + 1))
    assert m.actuator_names == m.jnt_names and m.site_names == ("tip",)
    assert m.body_parent.tolist() == list(range(-1, n))
    assert np.all(m.jnt_type == simad.JointType.REVOLUTE) and not m.jnt_limited.any()
    assert_close(m.jnt_axis, np.tile([0.0, 1.0, 0.0], (n, 1)), EXACT, what="jnt_axis")
    assert_close(m.jnt_anchor, np.zeros((n, 3)), EXACT, what="jnt_anchor")
    expected_pos = np.zeros((n + 1, 3))
    expected_pos[2:, 2] = -1.0
    assert_close(m.body_pos, expected_pos, EXACT, what="body_pos")
    assert_close(m.body_rot, np.tile(np.eye(3), (n + 1, 1, 1)), EXACT, what="body_rot")
    assert_close(m.body_mass, [0.0] + [1.0] * n, EXACT, what="body_mass")
    assert_close(m.body_com[1:], np.tile([0.0, 0.0, -0.5], (n, 1)), EXACT, what="body_com")
    assert_close(m.body_inertia[1:], np.tile(np.diag([1 / 12, 1 / 12, 1e-3]), (n, 1, 1)), EXACT, what="body_inertia")
    assert_close(m.gravity, [0.0, 0.0, -9.81], EXACT, what="gravity")
    assert_close(m.dof_damping, np.zeros(n), EXACT, what="dof_damping")
    assert_close(m.dof_armature, np.zeros(n), EXACT, what="dof_armature")
    assert m.actuator_dof.tolist() == list(range(n)) and not m.actuator_ctrllimited.any()
    assert_close(m.actuator_gear, np.ones(n), EXACT, what="actuator_gear")
    assert m.site_body.tolist() == [n]
    assert_close(m.site_pos, [[0.0, 0.0, -1.0]], EXACT, what="site_pos")
    assert_close(m.qpos0, np.zeros(n), EXACT, what="qpos0")


def test_planar_chain_keyword_arguments():
    m = models.planar_chain(4, link_length=0.5, mass=2.0, com_fraction=0.25, damping=0.1, armature=0.02, actuated=False)
    assert m.nu == 0
    assert_close(m.body_pos[2:, 2], [-0.5] * 3, EXACT, what="body_pos z")
    assert_close(m.body_com[1:, 2], [-0.125] * 4, EXACT, what="body_com z")
    assert_close(m.body_mass[1:], [2.0] * 4, EXACT, what="body_mass")
    assert_close(m.dof_damping, [0.1] * 4, EXACT, what="dof_damping")
    assert_close(m.dof_armature, [0.02] * 4, EXACT, what="dof_armature")
    assert_close(m.site_pos, [[0.0, 0.0, -0.5]], EXACT, what="site_pos")


@pytest.mark.parametrize(
    "kwargs,field",
    [({"n": 0}, "n"), ({"n": -2}, "n"), ({"n": 513}, "n"), ({"n": 2.5}, "n"), ({"n": True}, "n"),
     ({"n": 3, "link_length": 0.0}, "link_length"), ({"n": 3, "mass": -1.0}, "mass")],
)  # fmt: skip
def test_planar_chain_rejects_bad_arguments(kwargs, field):
    n = kwargs.pop("n")
    with pytest.raises(simad.ModelError) as err:
        models.planar_chain(n, **kwargs)
    assert err.value.element == "planar_chain" and err.value.field == field


def test_planar_chain_fk_equals_planar_formula(rng):
    """A rotation about +y by a maps (0, 0, -1) to (-sin a, 0, -cos a), so the tip of the
    chain is at x = -sum_k sin(phi_k), z = -sum_k cos(phi_k), phi_k = q_1 + ... + q_k."""
    m = models.planar_chain(3)
    q = np.concatenate([[[0, 0, 0], [np.pi / 2, 0, 0], [0.3, -0.7, 1.1]], rng.uniform(-np.pi, np.pi, (5, 3))])
    pos, rot = simad.forward_kinematics(m, q)
    phi = np.cumsum(q, axis=1)
    joints = np.zeros((q.shape[0], 4, 3))  # joint k+1 (and the tip, k = 3) world positions
    joints[:, 1:, 0] = -np.cumsum(np.sin(phi), axis=1)
    joints[:, 1:, 2] = -np.cumsum(np.cos(phi), axis=1)
    assert_close(pos[:, 1:4], joints[:, :3], ANALYTIC_TOL, what="body origins vs planar formula")
    assert_close(pos[:, m.frame_id("tip")], joints[:, 3], ANALYTIC_TOL, what="tip vs planar formula")
    assert_close(pos[1, m.frame_id("tip")], [-3.0, 0.0, 0.0], ANALYTIC_TOL, what="tip at q = (pi/2, 0, 0)")
    for k in range(3):
        expected = np.stack([_ry(a) for a in phi[:, k]])
        assert_close(rot[:, k + 1], expected, ANALYTIC_TOL, what=f"link{k + 1} rotation")


# ---------------------------------------------------------------------------------------------
# planar_chain_mjcf against MuJoCo
# ---------------------------------------------------------------------------------------------
def _mj_inertia(mm, i):
    """MuJoCo's body inertia about the COM in body axes: R(iquat) diag(I) R^T."""
    import mujoco

    R = np.zeros(9)
    mujoco.mju_quat2Mat(R, mm.body_iquat[i])
    R = R.reshape(3, 3)
    return R @ np.diag(mm.body_inertia[i]) @ R.T


CHAIN_VARIANTS = [
    (1, {}),
    (3, {}),
    (8, {}),
    (5, {"link_length": 0.4, "mass": 0.7, "com_fraction": 0.3, "damping": 0.2, "armature": 0.01,
         "inertia": [[0.02, 0.003, -0.001], [0.003, 0.015, 0.002], [-0.001, 0.002, 0.01]], "gravity": (0.5, 0.0, -9.0)}),
]  # fmt: skip


@pytest.mark.parametrize("n,kwargs", CHAIN_VARIANTS)
def test_planar_chain_mjcf_parameters_equal_mujoco(n, kwargs):
    mujoco = pytest.importorskip("mujoco")
    m = models.planar_chain(n, **kwargs)
    mm = mujoco.MjModel.from_xml_string(models.planar_chain_mjcf(n, **kwargs))
    assert (mm.nbody, mm.njnt, mm.nq, mm.nv, mm.nu, mm.nsite) == (m.nbody, m.njnt, m.nq, m.nv, m.nu, m.nsite)
    assert [mujoco.mj_id2name(mm, mujoco.mjtObj.mjOBJ_BODY, i) for i in range(1, mm.nbody)] == list(m.body_names[1:])
    assert mm.opt.timestep == 0.01 and mm.opt.integrator == mujoco.mjtIntegrator.mjINT_EULER
    assert_close(mm.opt.gravity, m.gravity, EXACT, what="gravity")
    assert_close(mm.body_mass, m.body_mass, MJ_TOL, what="body_mass")
    assert_close(mm.body_pos, m.body_pos, MJ_TOL, what="body_pos")
    assert_close(mm.body_ipos, m.body_com, MJ_TOL, what="body_com")
    inertia = np.stack([_mj_inertia(mm, i) for i in range(mm.nbody)])
    assert_close(inertia[1:], m.body_inertia[1:], MJ_TOL, what="body_inertia")
    assert_close(mm.jnt_axis, m.jnt_axis, EXACT, what="jnt_axis")
    assert_close(mm.dof_damping, m.dof_damping, EXACT, what="dof_damping")
    assert_close(mm.dof_armature, m.dof_armature, EXACT, what="dof_armature")
    assert_close(mm.actuator_gear[:, 0], m.actuator_gear, EXACT, what="actuator_gear")
    assert not mm.actuator_ctrllimited.any() and not mm.jnt_limited.any()


@pytest.mark.parametrize("n,kwargs", CHAIN_VARIANTS)
def test_planar_chain_fk_equals_mujoco(n, kwargs):
    mujoco = pytest.importorskip("mujoco")
    m = models.planar_chain(n, **kwargs)
    mm = mujoco.MjModel.from_xml_string(models.planar_chain_mjcf(n, **kwargs))
    data = mujoco.MjData(mm)
    q = simad.random_configuration(m, 6, np.random.default_rng(n))
    pos, rot = simad.forward_kinematics(m, q)
    for b in range(q.shape[0]):
        data.qpos[:] = q[b]
        mujoco.mj_kinematics(mm, data)
        assert_close(pos[b, : m.nbody], data.xpos, MJ_TOL, what=f"n={n} env {b} body positions")
        assert_close(rot[b, : m.nbody], data.xmat.reshape(-1, 3, 3), MJ_TOL, what=f"n={n} env {b} body rotations")
        assert_close(pos[b, m.nbody :], data.site_xpos, MJ_TOL, what=f"n={n} env {b} tip site")


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
def test_load_planar_chain_by_name():
    m = models.load("planar_chain_7")
    assert m.nq == 7 and m.content_hash == models.planar_chain(7).content_hash


@pytest.mark.parametrize("name", ["nope", "planar_chain_0", "planar_chain_513", "planar_chain_x", "arm7.urdf", 3])
def test_load_rejects_unknown_names(name):
    with pytest.raises(simad.InputError) as err:
        models.load(name)
    assert err.value.field == "name"


def test_asset_path():
    for name in ("arm7.urdf", "cartpole.xml", "quadruped.urdf"):
        assert models.asset_path(name).is_file()
    for bad in ("missing.urdf", "../models.py", ""):
        with pytest.raises(simad.InputError) as err:
            models.asset_path(bad)
        assert err.value.field == "name"


def test_available_names_all_load():
    names = models.available()
    assert {"arm7", "cartpole", "quadruped"} <= set(names)
    for name in names:
        assert isinstance(models.load(name), simad.Model), name


# ---------------------------------------------------------------------------------------------
# shipped robots
# ---------------------------------------------------------------------------------------------
# name -> (nq, nv, nu, bodies intentionally massless)
SHIPPED = {
    "arm7": (7, 7, 7, {"world", "flange", "ee_link"}),
    "cartpole": (2, 2, 1, {"world"}),
    "quadruped": (19, 18, 12, {"world"}),
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_sizes_and_masses(name):
    nq, nv, nu, massless = SHIPPED[name]
    m = models.load(name)
    assert (m.nq, m.nv, m.nu) == (nq, nv, nu), m.summary()
    zero = {b for b, mass in zip(m.body_names, m.body_mass, strict=True) if mass <= 0}
    assert zero <= massless, f"{name}: unexpected massless bodies {sorted(zero - massless)}"
    assert np.all(m.body_mass >= 0)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_inertias_are_physical(name):
    m = models.load(name)
    for i in np.flatnonzero(m.body_mass > 0):
        inertia = m.body_inertia[i]
        assert_close(inertia, inertia.T, EXACT, what=f"{name} body {m.body_names[i]} inertia symmetry")
        a, b, c = np.linalg.eigvalsh(inertia)
        assert a > 0, f"{name} body {m.body_names[i]}: inertia not positive definite ({a}, {b}, {c})"
        assert a + b >= c - TRIANGLE_SLACK, f"{name} body {m.body_names[i]}: triangle inequality ({a}, {b}, {c})"


def test_arm7_limits_and_end_effector():
    m = models.load("arm7")
    assert m.jnt_names == tuple(f"joint{i}" for i in range(1, 8))
    assert m.jnt_limited.all() and np.all(m.jnt_range[:, 0] < 0) and np.all(m.jnt_range[:, 1] > 0)
    assert np.all(m.dof_damping > 0)
    assert "ee_link" in m.frame_names and "flange" in m.frame_names
    pos, _ = simad.forward_kinematics(m, m.qpos0[None])
    reach = np.linalg.norm(pos[0, m.frame_id("ee_link")])
    assert 1.2 < reach < 1.45, f"arm7 reach {reach} m"
    assert np.any(m.geom_type == simad.GeomType.SPHERE), "arm7: no sphere at the end effector"


def test_quadruped_structure():
    m = models.load("quadruped")
    assert m.jnt_type[0] == simad.JointType.FREE and m.jnt_qadr[0] == 0
    assert m.jnt_limited[1:].all() and m.nu == 12
    feet = [f"{leg}_foot" for leg in ("FL", "FR", "HL", "HR")]
    assert set(feet) <= set(m.frame_names)
    spheres = m.geom_type == simad.GeomType.SPHERE
    assert spheres.sum() == 4 and np.allclose(m.geom_size[spheres, 0], 0.02)
    assert np.any(m.geom_type == simad.GeomType.BOX)
    assert 9.5 <= m.body_mass.max() <= 10.5


def test_cartpole_structure():
    m = models.load("cartpole")
    assert m.jnt_type.tolist() == [simad.JointType.PRISMATIC, simad.JointType.REVOLUTE]
    assert m.jnt_limited.tolist() == [True, False]
    assert_close(m.jnt_range[0], [-2.0, 2.0], EXACT, what="slider range")
    assert m.actuator_dof.tolist() == [0] and m.actuator_ctrllimited.all()
    assert_close(m.actuator_ctrlrange[0], [-20.0, 20.0], EXACT, what="ctrlrange")
    assert_close(m.actuator_gear, [1.0], EXACT, what="gear")
    assert "pole_tip" in m.site_names
    assert np.any((m.geom_type == simad.GeomType.PLANE) & (m.geom_body == 0)), "no floor plane on the world"


# ---------------------------------------------------------------------------------------------
# FK of the shipped robots against the reference engines
# ---------------------------------------------------------------------------------------------
def _pinocchio(name):
    """(simad model, pinocchio model) of a shipped URDF robot."""
    pin = pytest.importorskip("pinocchio")
    path = str(models.asset_path(f"{name}.urdf"))
    m = models.load(name)
    pm = pin.buildModelFromUrdf(path, pin.JointModelFreeFlyer()) if m.has_free_joint else pin.buildModelFromUrdf(path)
    return m, pm


def _to_pinocchio_q(m, pm, q):
    """Our q (B, nq) -> Pinocchio's, joints matched by name (the free joint is Pinocchio's
    root joint); quaternions (w, x, y, z) -> (x, y, z, w)."""
    out = np.zeros((q.shape[0], pm.nq))
    for j, jname in enumerate(m.jnt_names):
        qa = m.jnt_qadr[j]
        if m.jnt_type[j] == simad.JointType.FREE:
            pa = pm.joints[1].idx_q
            out[:, pa : pa + 3] = q[:, qa : qa + 3]
            out[:, pa + 3 : pa + 6] = q[:, qa + 4 : qa + 7]
            out[:, pa + 6] = q[:, qa + 3]
        else:
            assert pm.existJointName(jname), f"joint '{jname}' not in the URDF"
            out[:, pm.joints[pm.getJointId(jname)].idx_q] = q[:, qa]
    return out


def _frame_map(m, pm):
    """Our frame index -> Pinocchio frame id, by name (world -> universe; links are BODY frames)."""
    import pinocchio as pin

    links = {f.name for f in pm.frames if f.type == pin.BODY}
    missing = links - set(m.frame_names)
    assert not missing, f"URDF links without a simad frame: {sorted(missing)}"
    out = {0: pm.getFrameId("universe")}
    for f, fname in enumerate(m.frame_names[1:], 1):
        if fname in links:
            out[f] = pm.getFrameId(fname, pin.BODY)
        elif pm.existFrame(fname):
            out[f] = pm.getFrameId(fname)
    return out


@pytest.mark.parametrize("name", ["arm7", "quadruped"])
def test_urdf_fk_equals_pinocchio(name):
    import pinocchio as pin

    m, pm = _pinocchio(name)
    assert (pm.nq, pm.nv) == (m.nq, m.nv)
    fmap = _frame_map(m, pm)
    q = simad.random_configuration(m, 8, np.random.default_rng(2024))
    pos, rot = simad.forward_kinematics(m, q)
    qp = _to_pinocchio_q(m, pm, q)
    data = pm.createData()
    for b in range(q.shape[0]):
        pin.framesForwardKinematics(pm, data, qp[b])
        for f, fid in fmap.items():
            what = f"{name} env {b} frame '{m.frame_names[f]}'"
            assert_close(pos[b, f], data.oMf[fid].translation, PIN_TOL, what=what + " position")
            assert_close(rot[b, f], data.oMf[fid].rotation, PIN_TOL, what=what + " rotation")


@pytest.mark.parametrize("name", ["arm7", "quadruped"])
def test_urdf_parameters_equal_pinocchio(name):
    m, pm = _pinocchio(name)
    assert_close(m.body_mass.sum(), sum(i.mass for i in pm.inertias), 1e-12, what=f"{name} total mass")
    for j, jname in enumerate(m.jnt_names):
        if m.jnt_type[j] == simad.JointType.FREE:
            continue
        pj = pm.joints[pm.getJointId(jname)]
        limits = [pm.lowerPositionLimit[pj.idx_q], pm.upperPositionLimit[pj.idx_q]]
        assert_close(m.jnt_range[j], limits, EXACT, what=f"{name} joint '{jname}' range")
        assert_close(m.dof_damping[m.jnt_vadr[j]], pm.damping[pj.idx_v], EXACT, what=f"{name} joint '{jname}' damping")


def test_cartpole_fk_equals_mujoco():
    mujoco = pytest.importorskip("mujoco")
    m = models.load("cartpole")
    mm = mujoco.MjModel.from_xml_path(str(models.asset_path("cartpole.xml")))
    data = mujoco.MjData(mm)
    q = simad.random_configuration(m, 6, np.random.default_rng(7))
    pos, rot = simad.forward_kinematics(m, q)
    for b in range(q.shape[0]):
        data.qpos[:] = q[b]
        mujoco.mj_kinematics(mm, data)
        for f, fname in enumerate(m.frame_names):
            kind = mujoco.mjtObj.mjOBJ_SITE if f >= m.nbody else mujoco.mjtObj.mjOBJ_BODY
            i = mujoco.mj_name2id(mm, kind, fname)
            assert i >= 0, f"cartpole frame '{fname}' not in MuJoCo"
            xpos, xmat = (data.site_xpos, data.site_xmat) if f >= m.nbody else (data.xpos, data.xmat)
            assert_close(pos[b, f], xpos[i], MJ_TOL, what=f"cartpole env {b} frame '{fname}' position")
            assert_close(rot[b, f], xmat[i].reshape(3, 3), MJ_TOL, what=f"cartpole env {b} frame '{fname}' rotation")
    assert_close(m.body_mass, mm.body_mass, EXACT, what="cartpole body_mass")
