"""URDF and MJCF loaders: sizes, names and hashes; kinematics and inertias against Pinocchio
(URDF) and MuJoCo (MJCF); warnings for skipped shapes; every error path names element and field."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pathlib
import warnings

import numpy as np
import pytest
from reference import PIN_TOL, assert_close

import simad
from simad.model import rotations as rot
from simad.model.mjcf import load_mjcf
from simad.model.urdf import load_urdf

MJ_TOL = 1e-10  # agreement with MuJoCo, f64 (inertias: summed geom solids)
N_CONFIGS = 5

# ---------------------------------------------------------------------------------------------
# Fixtures: an inline URDF arm (links deliberately not in parents-first document order)
# ---------------------------------------------------------------------------------------------
ARM_URDF = """<?xml version="1.0"?>
<robot name="arm">
  <link name="side">
    <inertial><origin xyz="0 0.05 0"/><mass value="0.3"/>
      <inertia ixx="0.001" ixy="0" ixz="0" iyy="0.002" iyz="0" izz="0.001"/></inertial>
  </link>
  <link name="link3">
    <inertial><origin xyz="0.05 0 0" rpy="0.1 0.2 0.3"/><mass value="0.5"/>
      <inertia ixx="0.003" ixy="0.0001" ixz="0" iyy="0.002" iyz="0" izz="0.004"/></inertial>
    <collision><geometry><mesh filename="package://arm/meshes/link3.stl"/></geometry></collision>
  </link>
  <link name="base">
    <inertial><origin xyz="0 0 0.05" rpy="0.3 -0.2 0.5"/><mass value="2.0"/>
      <inertia ixx="0.02" ixy="0.001" ixz="-0.002" iyy="0.03" iyz="0.0005" izz="0.025"/></inertial>
    <collision><origin xyz="0 0 0.05" rpy="0 0 0.4"/><geometry><box size="0.2 0.3 0.1"/></geometry></collision>
  </link>
  <link name="link1">
    <inertial><origin xyz="0 0 0.15" rpy="-0.4 0.1 0.2"/><mass value="1.2"/>
      <inertia ixx="0.01" ixy="0.0002" ixz="0.0001" iyy="0.012" iyz="-0.0003" izz="0.004"/></inertial>
    <collision name="ball"><origin xyz="0 0 0.1"/><geometry><sphere radius="0.04"/></geometry></collision>
  </link>
  <link name="link2">
    <inertial><origin xyz="0.1 0 0"/><mass value="0.8"/>
      <inertia ixx="0.002" ixy="0" ixz="0" iyy="0.006" iyz="0" izz="0.006"/></inertial>
    <collision><origin xyz="0.1 0 0" rpy="0 1.5707963 0"/><geometry><cylinder radius="0.03" length="0.2"/></geometry></collision>
  </link>
  <link name="tool"/>
  <joint name="j1" type="revolute">
    <parent link="base"/><child link="link1"/>
    <origin xyz="0.01 0.02 0.1" rpy="0.1 -0.2 0.3"/><axis xyz="0 0 1"/>
    <limit lower="-2" upper="2" effort="10" velocity="3"/><dynamics damping="0.5" friction="0.1"/>
  </joint>
  <joint name="j2" type="continuous">
    <parent link="link1"/><child link="link2"/>
    <origin xyz="0 0.05 0.3" rpy="1.2 0.4 -0.7"/><axis xyz="0.3 0.5 0.8"/>
    <limit effort="5" velocity="3"/>
  </joint>
  <joint name="j3" type="prismatic">
    <parent link="link2"/><child link="link3"/>
    <origin xyz="0.2 0 0" rpy="0 0.5 0"/><axis xyz="1 0 0"/>
    <limit lower="-0.1" upper="0.2" effort="0" velocity="1"/>
  </joint>
  <joint name="j4" type="fixed">
    <parent link="link3"/><child link="tool"/><origin xyz="0.1 0 0.02" rpy="0.3 0.2 0.1"/>
  </joint>
  <joint name="j5" type="revolute">
    <parent link="link1"/><child link="side"/><origin xyz="0 -0.05 0.2" rpy="-0.5 0 0.9"/>
    <limit lower="-1" upper="1.5" effort="0" velocity="1"/>
  </joint>
</robot>
"""


def _load_arm(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_urdf(ARM_URDF, **kw)


def _robots_dir() -> pathlib.Path | None:
    """example-robot-data's robots folder (a cmeel package: data only, no Python module)."""
    try:
        dist = importlib.metadata.distribution("example-robot-data")
        path = pathlib.Path(str(dist.locate_file("cmeel.prefix/share/example-robot-data/robots")))
    except importlib.metadata.PackageNotFoundError:
        spec = importlib.util.find_spec("cmeel")
        if spec is None or spec.origin is None:
            return None
        path = pathlib.Path(spec.origin).parents[1] / "cmeel.prefix/share/example-robot-data/robots"
    return path if path.is_dir() else None


def _pin_q(model: simad.Model, pm, q: np.ndarray) -> np.ndarray:
    """Our q -> Pinocchio's, joint by name: continuous angle a -> (cos a, sin a); free-flyer
    quaternion (w, x, y, z) -> (x, y, z, w)."""
    qp = np.zeros(pm.nq)
    for j, name in enumerate(model.jnt_names):
        jm = pm.joints[pm.getJointId(name)]
        a, b = int(model.jnt_qadr[j]), jm.idx_q
        if jm.nq == 7:
            qp[b : b + 7] = np.concatenate([q[a : a + 3], q[a + 4 : a + 7], q[a + 3 : a + 4]])
        elif jm.nq == 2:
            qp[b : b + 2] = np.cos(q[a]), np.sin(q[a])
        else:
            qp[b] = q[a]
    return qp


def _assert_fk_equals_pinocchio(model: simad.Model, pm, seed: int, what: str) -> None:
    import pinocchio as pin

    assert model.nv == pm.nv, f"{what}: nv {model.nv} vs Pinocchio {pm.nv}"
    q = simad.random_configuration(model, N_CONFIGS, np.random.default_rng(seed))
    pos, R = simad.forward_kinematics(model, q)
    data = pm.createData()
    links = [(i, n) for i, n in enumerate(model.body_names) if pm.existFrame(n, pin.FrameType.BODY)]
    assert len(links) >= model.nbody - 1, f"{what}: links missing in Pinocchio"
    for b in range(N_CONFIGS):
        pin.forwardKinematics(pm, data, _pin_q(model, pm, q[b]))
        pin.updateFramePlacements(pm, data)
        for i, name in links:
            X = data.oMf[pm.getFrameId(name, pin.FrameType.BODY)]
            assert_close(pos[b, i], X.translation, PIN_TOL, what=f"{what} config {b} link '{name}' position")
            assert_close(R[b, i], X.rotation, PIN_TOL, what=f"{what} config {b} link '{name}' rotation")


# ---------------------------------------------------------------------------------------------
# URDF
# ---------------------------------------------------------------------------------------------
def test_urdf_sizes_names_and_parameters():
    with pytest.warns(UserWarning) as record:
        model = load_urdf(ARM_URDF)
    messages = [str(r.message) for r in record]
    assert any("link 'link3'" in m and "link3.stl" in m for m in messages), messages
    assert any("link 'link2'" in m and "capsule" in m for m in messages), messages
    # parents first, otherwise document order: side (1st in the document) right after link1
    assert model.body_names == ("world", "base", "link1", "side", "link2", "link3", "tool")
    assert model.jnt_names == ("j1", "j5", "j2", "j3")
    assert (model.nq, model.nv, model.nu, model.nframe, model.name) == (4, 4, 4, 7, "arm")
    assert model.actuator_names == ("j1", "j5", "j2", "j3")
    assert_close(model.actuator_gear, np.ones(4), 0)
    assert model.actuator_ctrllimited.tolist() == [True, False, True, False]
    assert_close(model.actuator_ctrlrange[[0, 2]], [[-10, 10], [-5, 5]], 0)
    assert model.jnt_limited.tolist() == [True, True, False, True]
    assert_close(model.jnt_range[[0, 1, 3]], [[-2, 2], [-1, 1.5], [-0.1, 0.2]], 0)
    assert_close(model.jnt_axis[1], [1, 0, 0], 0, what="default URDF axis")
    assert_close(model.jnt_axis[2], np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8]), 1e-15)
    assert_close(model.dof_damping, [0.5, 0, 0, 0], 0)
    # inertia: R I R^T with R from <inertial><origin rpy>, about the COM
    b = model.body_names.index("base")
    R = rot.rpy_to_mat([0.3, -0.2, 0.5])
    inertia = np.array([[0.02, 0.001, -0.002], [0.001, 0.03, 0.0005], [-0.002, 0.0005, 0.025]])
    assert_close(model.body_inertia[b], R @ inertia @ R.T, 1e-15)
    assert_close(model.body_com[b], [0, 0, 0.05], 0)
    assert model.body_mass[model.body_names.index("tool")] == 0.0
    # geoms: box half extents, sphere, cylinder -> capsule (radius, half-length); mesh skipped
    assert model.geom_names == ("base/collision0", "ball", "link2/collision0")
    assert model.geom_type.tolist() == [simad.GeomType.BOX, simad.GeomType.SPHERE, simad.GeomType.CAPSULE]
    assert_close(model.geom_size, [[0.1, 0.15, 0.05], [0.04, 0, 0], [0.03, 0.1, 0]], 1e-15)
    assert_close(model.geom_rot[0], rot.rpy_to_mat([0, 0, 0.4]), 1e-15)


def test_urdf_inertias_equal_pinocchio():
    pin = pytest.importorskip("pinocchio")
    model, pm = _load_arm(), pin.buildModelFromXML(ARM_URDF)
    for name in ("j1", "j5", "j2", "j3"):  # child links without massive fixed children
        body = model.jnt_body[model.jnt_names.index(name)]
        inertia = pm.inertias[pm.getJointId(name)]
        what = f"link '{model.body_names[body]}'"
        assert_close(model.body_mass[body], inertia.mass, 1e-14, what=f"{what} mass")
        assert_close(model.body_com[body], inertia.lever, 1e-14, what=f"{what} com")
        assert_close(model.body_inertia[body], inertia.inertia, 1e-14, what=f"{what} inertia")


def test_urdf_content_hash_is_stable_and_sensitive():
    a, b = _load_arm(), _load_arm()
    assert a.content_hash == b.content_hash
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heavier = load_urdf(ARM_URDF.replace('<mass value="0.8"/>', '<mass value="0.81"/>'))
    assert heavier.content_hash != a.content_hash


def test_urdf_from_path(tmp_path):
    path = tmp_path / "arm.urdf"
    path.write_text(ARM_URDF)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_path, by_str = load_urdf(path, name="renamed"), load_urdf(str(path), name="renamed")
    assert by_path.content_hash == by_str.content_hash
    assert by_path.name == "renamed" and by_path.nq == 4


@pytest.mark.parametrize("floating_base", [False, True])
def test_urdf_fk_equals_pinocchio_inline(floating_base):
    pin = pytest.importorskip("pinocchio")
    model = _load_arm(floating_base=floating_base)
    if floating_base:
        pm = pin.buildModelFromXML(ARM_URDF, pin.JointModelFreeFlyer())
        assert model.jnt_names[0] == "root_joint" and model.nq == 11 and model.nv == 10
    else:
        pm = pin.buildModelFromXML(ARM_URDF)
    _assert_fk_equals_pinocchio(model, pm, seed=3, what=f"arm floating={floating_base}")


@pytest.mark.parametrize(
    "relpath,floating_base",
    [
        ("panda_description/urdf/panda.urdf", False),
        ("panda_description/urdf/panda.urdf", True),
        ("ur_description/urdf/ur5_robot.urdf", False),
    ],
)
def test_urdf_fk_equals_pinocchio_example_robots(relpath, floating_base):
    pin = pytest.importorskip("pinocchio")
    robots = _robots_dir()
    if robots is None:
        pytest.skip("example-robot-data is not installed")
    path = robots / relpath
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # meshes, mimic joints
        model = load_urdf(path, floating_base=floating_base)
    pm = pin.buildModelFromUrdf(str(path), pin.JointModelFreeFlyer()) if floating_base else pin.buildModelFromUrdf(str(path))
    assert model.nq == pm.nq and model.nu == pm.nv - (6 if floating_base else 0)
    _assert_fk_equals_pinocchio(model, pm, seed=11, what=relpath)


def _urdf(links: str, joints: str = "", name: str = "r") -> str:
    return f'<robot name="{name}">{links}{joints}</robot>'


_L = '<link name="{}"><inertial><mass value="1"/><inertia ixx="1" iyy="1" izz="1" ixy="0" ixz="0" iyz="0"/></inertial></link>'
_AB = _L.format("a") + _L.format("b")
_ABC = _AB + _L.format("c")


def _j(name: str, parent: str, child: str, kind: str = "fixed", extra: str = "") -> str:
    return f'<joint name="{name}" type="{kind}"><parent link="{parent}"/><child link="{child}"/>{extra}</joint>'


@pytest.mark.parametrize(
    "text,kwargs,element,field",
    [
        ('<robot name="r"><link name="a"></robot>', {}, "urdf", "xml"),
        ("<mujoco/>", {}, "urdf", "root"),
        ('<robot name="r"/>', {}, "robot 'r'", "link"),
        (_urdf(_L.format("a") + _L.format("a")), {}, "link 'a'", "name"),
        (_urdf(_ABC, _j("j", "a", "b") + _j("j", "b", "c")), {}, "joint 'j'", "name"),
        (_urdf(_AB, _j("j", "x", "b")), {}, "joint 'j'", "parent"),
        (_urdf(_AB, _j("j", "a", "y")), {}, "joint 'j'", "child"),
        (_urdf(_ABC, _j("j1", "a", "c") + _j("j2", "b", "c")), {}, "joint 'j2'", "child"),
        (_urdf(_ABC, _j("j1", "b", "c") + _j("j2", "c", "b")), {}, "joint 'j2'", "child"),
        (_urdf(_AB), {}, "link 'b'", "parent"),
        (_urdf(_AB.replace('value="1"', 'value="-1"', 1), _j("j", "a", "b")), {}, "link 'a'", "mass.value"),
        (_urdf(_AB.replace('value="1"', 'value="heavy"', 1), _j("j", "a", "b")), {}, "link 'a'", "mass.value"),
        (_urdf(_AB.replace('ixy="0"', 'ixy="5"', 1), _j("j", "a", "b")), {}, "link 'a'", "inertia"),
        (_urdf(_AB, _j("j", "a", "b", "fixed", '<origin xyz="0 zero 0"/>')), {}, "joint 'j'", "origin.xyz"),
        (_urdf(_AB, _j("j", "a", "b", "revolute", '<limit lower="x" upper="1"/>')), {}, "joint 'j'", "limit.lower"),
        (_urdf(_AB, _j("j", "a", "b", "revolute", '<limit lower="1" upper="-1"/>')), {}, "joint 'j'", "limit"),
        (_urdf(_AB, _j("j", "a", "b", "planar")), {}, "joint 'j'", "type"),
        (_urdf(_AB, _j("j", "a", "b", "screw")), {}, "joint 'j'", "type"),
        (_urdf(_L.format("world") + _L.format("b"), _j("j", "world", "b")), {"floating_base": True}, "link 'world'", "name"),
        (_urdf(_AB + _L.format("world"), _j("j", "a", "b") + _j("w", "b", "world")), {}, "link 'world'", "name"),
        ("/no/such/robot.urdf", {}, "urdf", "source"),
    ],
    ids=[
        "malformed", "root", "no-links", "dup-link", "dup-joint", "unknown-parent", "unknown-child", "two-parents",
        "cycle", "two-roots", "negative-mass", "non-numeric-mass", "inertia-not-psd", "non-numeric-origin",
        "non-numeric-limit", "lower-gt-upper", "planar", "unknown-type", "floating-world", "non-root-world", "missing-file",
    ],
)  # fmt: skip
def test_urdf_errors_name_element_and_field(text, kwargs, element, field):
    with pytest.raises(simad.ModelError) as info:
        load_urdf(text, **kwargs)
    err = info.value
    assert element in err.element and err.field == field, f"got element={err.element!r} field={err.field!r}: {err}"
    assert element in str(err) and field in str(err)


def test_a_negligible_non_psd_inertia_is_repaired_with_a_warning():
    """TIAGo's antenna links: 1 mg, an ixy larger than ixx and iyy (eigenvalue -3.5e-8 kg m^2).
    Such a tensor loads with its negative part dropped and a warning naming the link; a larger
    defect (the "inertia-not-psd" case above) is still an error."""
    tiny = ('<link name="antenna"><inertial><mass value="0.000001"/><inertia ixx="0.00000002371" '
            'ixy="0.00000006119" ixz="0.00000001179" iyy="0.00000002833" iyz="0.00000000774" '
            'izz="0.00000003849"/></inertial></link>')
    text = _urdf(_L.format("a") + tiny, _j("j", "a", "antenna", "revolute", '<axis xyz="0 0 1"/>'))
    with pytest.warns(UserWarning, match=r"link 'antenna'.*not positive semidefinite"):
        model = load_urdf(text)
    i = model.body_names.index("antenna")
    file_inertia = np.array([[2.371e-8, 6.119e-8, 1.179e-8], [6.119e-8, 2.833e-8, 0.774e-8],
                             [1.179e-8, 0.774e-8, 3.849e-8]])
    eig = np.linalg.eigvalsh(model.body_inertia[i])
    assert eig.min() >= -1e-20
    assert np.abs(model.body_inertia[i] - file_inertia).max() <= -np.linalg.eigvalsh(file_inertia).min() + 1e-20
    qdd = simad.forward_dynamics(model, np.zeros(1), np.zeros(1), np.ones(1))
    assert np.isfinite(qdd).all() and qdd[0] > 0


def test_urdf_malformed_xml_reports_parser_message():
    with pytest.raises(simad.ModelError, match="mismatched tag"):
        load_urdf('<robot name="r"><link name="a"></robot>')


def test_urdf_world_root_is_the_world():
    text = _urdf(_L.format("world") + _AB, _j("w", "world", "a") + _j("j", "a", "b", "revolute"))
    model = load_urdf(text)
    assert model.body_names == ("world", "a", "b") and model.body_parent.tolist() == [-1, 0, 1]


# ---------------------------------------------------------------------------------------------
# MJCF
# ---------------------------------------------------------------------------------------------
ROBOT_MJCF = """
<mujoco model="mjtest">
  <compiler angle="degree"/>
  <option gravity="0 0 -9.5"/>
  <default>
    <joint damping="0.1" armature="0.01"/>
    <geom density="800"/>
    <default class="limb">
      <joint range="-45 90" damping="0.2"/>
      <geom type="capsule" size="0.04"/>
      <motor ctrlrange="-2 2" gear="5"/>
    </default>
  </default>
  <asset><mesh name="m" vertex="0 0 0 1 0 0 0 1 0 0 0 1"/></asset>
  <worldbody>
    <geom name="floor" type="plane" size="5 5 0.1"/>
    <site name="origin_site" pos="0 0 0.01"/>
    <body name="torso" pos="0.1 0.2 1.0" quat="0.9 0.1 0.3 -0.2">
      <freejoint name="root"/>
      <geom type="box" size="0.2 0.1 0.15"/>
      <geom type="sphere" size="0.08" pos="0 0 0.25" mass="0.7"/>
      <body name="arm" pos="0.2 0 0" euler="10 20 30" childclass="limb">
        <joint name="shoulder" type="hinge" axis="0 1 0" pos="0 0 0.05"/>
        <geom fromto="0 0 0 0.3 0 -0.1"/>
        <body name="forearm" pos="0.3 0 -0.1" axisangle="1 1 0 40">
          <joint name="elbow" axis="1 0 0" ref="15"/>
          <joint name="twist" axis="0 0 1" range="-10 10" ref="-5"/>
          <geom type="cylinder" fromto="0 0 0 0 0 -0.25" size="0.03"/>
          <site name="hand" pos="0 0 -0.25" euler="0 90 0"/>
          <body name="finger" pos="0 0 -0.3">
            <joint name="slider" type="slide" axis="1 0 1" range="0 0.1" ref="0.02"/>
            <inertial pos="0.01 0 0" quat="0.8 0.2 0.1 0.3" mass="0.2" diaginertia="0.001 0.002 0.0025"/>
            <geom type="mesh" mesh="m"/>
          </body>
        </body>
      </body>
    </body>
    <body name="pend" pos="1 0 1" xyaxes="0 1 0 -1 0 0.2">
      <joint name="hinge2" axis="1 0 0" range="-1 1" limited="false"/>
      <inertial pos="0 0 -0.5" mass="1" fullinertia="0.1 0.12 0.05 0.01 0.0 0.002"/>
      <body>
        <joint axis="0 1 0"/>
        <geom type="box" size="0.05 0.05 0.2" pos="0 0 -0.2" euler="0 0 30"/>
        <geom type="sphere" size="0.05" pos="0.1 0 -0.4"/>
        <geom type="ellipsoid" size="0.03 0.04 0.05" pos="0 0.1 -0.3" quat="1 0.2 0 0.3"/>
        <geom type="box" size="0.02" fromto="0 0 0 0.1 0.1 -0.1"/>
        <site pos="0 0 -0.4"/>
        <site name="pend" type="capsule" size="0.01" fromto="0 0 0 0 0.1 -0.2"/>
      </body>
    </body>
  </worldbody>
  <actuator>
    <motor joint="shoulder" class="limb"/>
    <motor name="m_elbow" joint="elbow" gear="3 0 0 0 0 0"/>
    <motor joint="slider" ctrlrange="-1 1" ctrllimited="false"/>
    <motor joint="hinge2" ctrlrange="-4 3"/>
  </actuator>
</mujoco>
"""


def _load_robot_mjcf():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_mjcf(ROBOT_MJCF)


def _mj_names(mm, obj, n):
    import mujoco

    return [mujoco.mj_id2name(mm, obj, i) for i in range(n)]


def test_mjcf_parameters_equal_mujoco():
    mujoco = pytest.importorskip("mujoco")
    mm, model = mujoco.MjModel.from_xml_string(ROBOT_MJCF), _load_robot_mjcf()
    assert (model.nq, model.nv, model.nu, model.name) == (mm.nq, mm.nv, mm.nu, "mjtest")
    # the two-joint body "forearm" becomes "forearm/elbow" + "forearm"; unnamed -> MuJoCo ids
    names = _mj_names(mm, mujoco.mjtObj.mjOBJ_BODY, mm.nbody)
    assert names[:6] == ["world", "torso", "arm", "forearm", "finger", "pend"] and names[6] is None
    assert model.body_names == ("world", "torso", "arm", "forearm/elbow", "forearm", "finger", "pend", "body6")
    assert model.jnt_names == ("root", "shoulder", "elbow", "twist", "slider", "hinge2", "joint6")
    assert model.site_names == ("origin_site", "hand", "site2", "pend_site")  # renamed: 'pend' is a body
    assert_close(model.gravity, mm.opt.gravity, 0, what="gravity")
    assert_close(model.qpos0, mm.qpos0, MJ_TOL, what="qpos0")
    assert model.jnt_limited.tolist() == mm.jnt_limited.astype(bool).tolist()
    lim = model.jnt_limited
    assert_close(model.jnt_range[lim], mm.jnt_range[lim], MJ_TOL, what="jnt_range")
    assert_close(model.dof_damping, mm.dof_damping, 0, what="dof_damping")
    assert_close(model.dof_armature, mm.dof_armature, 0, what="dof_armature")
    assert_close(model.actuator_gear, mm.actuator_gear[:, 0], 0, what="actuator_gear")
    assert model.actuator_ctrllimited.tolist() == mm.actuator_ctrllimited.astype(bool).tolist()
    climited = model.actuator_ctrllimited
    assert_close(model.actuator_ctrlrange[climited], mm.actuator_ctrlrange[climited], 0, what="ctrlrange")
    for i, name in enumerate(names):
        k = model.body_names.index(name or f"body{i}")
        R = rot.quat_to_mat(mm.body_iquat[i])
        assert_close(model.body_mass[k], mm.body_mass[i], MJ_TOL, 1e-12, what=f"body {name} mass")
        assert_close(model.body_com[k], mm.body_ipos[i], MJ_TOL, what=f"body {name} com")
        assert_close(model.body_inertia[k], R @ np.diag(mm.body_inertia[i]) @ R.T, MJ_TOL, 1e-12, what=f"body {name} inertia")
    for name in ("arm", "pend"):  # placements of bodies without free joint or ref
        i, k = names.index(name), model.body_names.index(name)
        assert_close(model.body_pos[k], mm.body_pos[i], MJ_TOL, what=f"body {name} pos")
        assert_close(model.body_rot[k], rot.quat_to_mat(mm.body_quat[i]), MJ_TOL, what=f"body {name} rot")


def test_mjcf_fk_equals_mujoco():
    mujoco = pytest.importorskip("mujoco")
    mm, model = mujoco.MjModel.from_xml_string(ROBOT_MJCF), _load_robot_mjcf()
    data = mujoco.MjData(mm)
    q = simad.random_configuration(model, N_CONFIGS, np.random.default_rng(5))
    pos, R = simad.forward_kinematics(model, q)
    bodies = [
        (i, model.body_names.index(n or f"body{i}")) for i, n in enumerate(_mj_names(mm, mujoco.mjtObj.mjOBJ_BODY, mm.nbody))
    ]
    mj_sites = _mj_names(mm, mujoco.mjtObj.mjOBJ_SITE, mm.nsite)
    site_names = [n + "_site" if n in model.body_names else n or f"site{s}" for s, n in enumerate(mj_sites)]
    sites = [(s, model.frame_id(n)) for s, n in enumerate(site_names)]
    for b in range(N_CONFIGS):
        data.qpos[:] = q[b]  # same layout: free joint (x, y, z, qw, qx, qy, qz), then 1-dof joints
        mujoco.mj_kinematics(mm, data)
        for i, k in bodies:
            assert_close(pos[b, k], data.xpos[i], MJ_TOL, what=f"config {b} body {model.body_names[k]} position")
            assert_close(R[b, k], data.xmat[i].reshape(3, 3), MJ_TOL, what=f"config {b} body {model.body_names[k]} rotation")
        for s, k in sites:
            assert_close(pos[b, k], data.site_xpos[s], MJ_TOL, what=f"config {b} site {model.frame_names[k]} position")
            assert_close(
                R[b, k], data.site_xmat[s].reshape(3, 3), MJ_TOL, what=f"config {b} site {model.frame_names[k]} rotation"
            )


def test_mjcf_geoms_and_warnings():
    with pytest.warns(UserWarning) as record:
        model = load_mjcf(ROBOT_MJCF)
    messages = [str(r.message) for r in record]
    assert any("mesh 'm'" in m and "finger" in m for m in messages), messages
    assert any("cylinder" in m and "capsule" in m for m in messages), messages
    assert any("ellipsoid ignored" in m for m in messages), messages
    assert any("site 'pend'" in m and "renamed 'pend_site'" in m for m in messages), messages
    assert model.geom_body[0] == 0 and model.geom_type[0] == simad.GeomType.PLANE
    g = model.geom_names.index("geom3")  # the arm capsule from fromto: half-length |to - from| / 2
    assert model.geom_type[g] == simad.GeomType.CAPSULE
    assert_close(model.geom_size[g], [0.04, 0.5 * np.hypot(0.3, 0.1), 0], 1e-15)
    assert_close(model.geom_pos[g], [0.15, 0, -0.05], 1e-15)
    assert_close(model.geom_friction, np.ones(model.ngeom), 0, what="MuJoCo's default friction")


def test_mjcf_radian_and_extrinsic_euler_equal_mujoco():
    mujoco = pytest.importorskip("mujoco")
    text = """<mujoco><compiler angle="radian" eulerseq="ZXy"/><worldbody>
      <body name="a" euler="0.3 -1.1 0.7"><joint range="-0.5 0.4"/><geom size="0.1"/>
        <body name="b" pos="0 0 1" zaxis="0.2 -0.3 0.9" ><joint type="slide"/><geom size="0.1"/></body>
      </body></worldbody></mujoco>"""
    mm, model = mujoco.MjModel.from_xml_string(text), load_mjcf(text)
    for i in (1, 2):
        assert_close(model.body_rot[i], rot.quat_to_mat(mm.body_quat[i]), MJ_TOL, what=f"body {i} rot")
    assert_close(model.jnt_range[0], mm.jnt_range[0], 0, what="radian range")


_BODY = '<body name="b"><joint name="j" {}/><geom size="0.1"/></body>'


def _mj(body: str = "", extra: str = "", compiler: str = "") -> str:
    return f"<mujoco>{compiler}<worldbody>{body}</worldbody>{extra}</mujoco>"


def _act(xml: str) -> str:
    """The one-joint model ``_BODY`` with an actuator section."""
    return _mj(_BODY.format(""), f"<actuator>{xml}</actuator>")


def test_unsupported_mjcf_actuators_and_tendon_transmissions_are_skipped_with_a_warning():
    """Activation dynamics, muscles and tendon transmissions: the model loads with the actuators
    it can simulate, and says which ones it dropped."""
    xml = _act('<intvelocity name="iv" joint="j" kp="10"/><motor name="m" joint="j" gear="3"/>'
               '<general name="g" joint="j" dyntype="filter"/><motor name="t" tendon="tt"/>'
               '<position name="p" joint="j" kp="7" kv="0.5"/>')
    with pytest.warns(UserWarning) as caught:
        model = load_mjcf(xml)
    text = " ".join(str(w.message) for w in caught)
    assert "actuator 'iv'" in text and "<intvelocity>" in text and "actuator 'g'" in text and "actuator 't'" in text
    assert model.actuator_names == ("m", "p") and model.actuator_gear.tolist() == [3.0, 1.0]
    assert_close(model.actuator_gain, [1.0, 7.0], 0)
    assert_close(model.actuator_bias, [[0, 0, 0], [0, -7.0, -0.5]], 0)


def test_mjcf_servo_actuators_move_the_joints_as_in_mujoco():
    """<position>, <velocity>, <general> (fixed gain, affine bias) and <motor>, with gears and
    joint damping: the accelerations of one step equal MuJoCo's qacc."""
    mujoco = pytest.importorskip("mujoco")
    xml = """<mujoco><option gravity="0 0 -9.81"/><worldbody>
      <body name="a" pos="0 0 1"><joint name="j1" axis="0 1 0" damping="0.1"/>
        <geom type="capsule" fromto="0 0 0 0 0 -0.5" size="0.05"/>
        <body name="b" pos="0 0 -0.5"><joint name="j2" axis="1 0 0" type="slide"/><geom size="0.1"/></body>
      </body></worldbody>
      <actuator><position name="p" joint="j1" kp="30" kv="2" gear="1.5"/><velocity name="v" joint="j2" kv="4"/>
        <general name="g" joint="j1" gainprm="2" biasprm="0.3 -1 -0.5" biastype="affine" gear="0.7"/>
        <motor name="m" joint="j2" gear="2"/></actuator></mujoco>"""
    model = load_mjcf(xml)
    mm = mujoco.MjModel.from_xml_string(xml)
    md = mujoco.MjData(mm)
    rng = np.random.default_rng(5)
    dt = 1e-3
    for _ in range(3):
        q, qd, u = rng.normal(size=2), rng.normal(size=2), rng.normal(size=4)
        md.qpos[:], md.qvel[:], md.ctrl[:] = q, qd, u
        mujoco.mj_forward(mm, md)
        tr = simad.rollout(model, q, qd, u[None], dt)  # semi-implicit Euler: qd_1 = qd + dt qdd
        qdd = (np.asarray(tr.qd).reshape(-1, 2)[-1] - qd) / dt
        assert_close(qdd, md.qacc, 1e-9 * (1 + np.abs(md.qacc).max()), what="qacc with servos")


@pytest.mark.parametrize(
    "text,element,field",
    [
        ("<mujoco><worldbody></mujoco>", "mjcf", "xml"),
        ("<robot/>", "mjcf", "root"),
        (_mj(_BODY.format('type="screw"')), "joint 'j'", "type"),
        (_mj(_BODY.format('type="ball"')), "joint 'j'", "type"),
        (_act('<motor name="m" joint="nope"/>'), "actuator 'm'", "joint"),
        (_mj('<body name="b"><joint/><inertial mass="-1" diaginertia="1 1 1"/></body>'), "inertial of body 'b'", "mass"),
        (_mj('<body name="b"><joint/><geom name="g" size="0.1" mass="-2"/></body>'), "geom 'g'", "mass"),
        (_mj('<body name="b" pos="0 x 0"><joint/><geom size="0.1"/></body>'), "body 'b'", "pos"),
        (_mj(_BODY.format('range="a b"')), "joint 'j'", "range"),
        (_mj(_BODY.format('range="30 -30"')), "joint 'j'", "range"),
        (_mj('<body name="a"><joint/><geom size="1"/><body name="c"><freejoint/></body></body>'), "body 'c'", "type"),
        (_mj('<body name="b"><joint class="nope"/><geom size="0.1"/></body>'), "joint", "class"),
        (_mj(_BODY.format(""), compiler='<compiler angle="grad"/>'), "compiler", "angle"),
        (_act('<motor name="m" joint="j" ctrllimited="true"/>'), "actuator 'm'", "ctrlrange"),
        (_mj(_BODY.format(""), '<include file="other.xml"/>'), "include", "file"),
    ],
    ids=[
        "malformed", "root", "unknown-joint-type", "ball", "actuator-unknown-joint", "negative-inertial-mass", "negative-geom-mass", "bad-number", "bad-range",
        "lower-gt-upper", "nested-free-joint", "unknown-class", "bad-angle-unit", "ctrllimited-no-range", "include",
    ],
)  # fmt: skip
def test_mjcf_errors_name_element_and_field(text, element, field):
    with pytest.raises(simad.ModelError) as info:
        load_mjcf(text)
    err = info.value
    assert element in err.element and err.field == field, f"got element={err.element!r} field={err.field!r}: {err}"


def test_mjcf_content_hash_is_stable_and_sensitive():
    a, b = _load_robot_mjcf(), _load_robot_mjcf()
    assert a.content_hash == b.content_hash
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = load_mjcf(ROBOT_MJCF.replace('mass="0.7"', 'mass="0.71"'))
    assert c.content_hash != a.content_hash


def test_urdf_floating_joint_equals_pinocchio():
    pin = pytest.importorskip("pinocchio")
    extra = '<origin xyz="0.1 0.2 0.3" rpy="0.4 0.5 0.6"/>'
    text = _urdf(_ABC, _j("f", "a", "b", "floating", extra) + _j("h", "b", "c", "continuous", extra))
    model = load_urdf(text)
    assert model.jnt_type.tolist() == [simad.JointType.FREE, simad.JointType.REVOLUTE] and model.nu == 1
    _assert_fk_equals_pinocchio(model, pin.buildModelFromXML(text), seed=4, what="floating joint")


@pytest.mark.parametrize("mode", ["auto", "true", "false"])
def test_mjcf_inertiafromgeom_equals_mujoco(mode):
    mujoco = pytest.importorskip("mujoco")
    text = f"""<mujoco><compiler inertiafromgeom="{mode}"/><worldbody>
      <body name="a"><joint/><geom type="box" size="0.1 0.2 0.3" pos="0.1 0 0"/>
        <inertial pos="0 0 0.1" mass="2" diaginertia="0.1 0.2 0.25"/>
        <body name="b" pos="1 0 0"><geom type="capsule" size="0.05 0.2" euler="30 60 0"/></body>
      </body>
    </worldbody></mujoco>"""
    mm, model = mujoco.MjModel.from_xml_string(text), load_mjcf(text)
    assert_close(model.body_mass, mm.body_mass, MJ_TOL, 1e-12, what=f"inertiafromgeom={mode} masses")
    for i in range(1, mm.nbody):
        R = rot.quat_to_mat(mm.body_iquat[i])
        assert_close(model.body_inertia[i], R @ np.diag(mm.body_inertia[i]) @ R.T, MJ_TOL, 1e-12, what=f"body {i} inertia")


@pytest.mark.parametrize("name", ["half_cheetah", "hopper", "walker2d", "swimmer", "reacher", "pusher", "humanoid", "ant"])
def test_gymnasium_models_have_mujocos_mass_matrix_and_accelerations(name):
    """Gymnasium's MuJoCo benchmarks, as published: inferred inertias, settotalmass and joint
    springs (the half cheetah), armature, damping, free bases (the ant, the humanoid: their free
    joints' velocities are expressed differently, so the joint-space block of M is compared),
    fluid options (the swimmer: warned and ignored)."""
    mujoco = pytest.importorskip("mujoco")
    spec = importlib.util.find_spec("gymnasium")  # a test dependency; its mujoco package needs more to import
    assert spec is not None and spec.submodule_search_locations
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "envs" / "mujoco" / "assets" / f"{name}.xml"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = simad.load_mjcf(path)
    if name == "swimmer":
        assert any("viscosity: fluid forces ignored" in str(w.message) for w in caught)
    mm = mujoco.MjModel.from_xml_path(str(path))
    md = mujoco.MjData(mm)
    assert model.nv == mm.nv
    if name == "half_cheetah":
        assert_close(model.body_mass[1:].sum(), 14.0, 1e-12, what="settotalmass")
    qadr, vadr = [], []
    for j, jn in enumerate(model.jnt_names):
        jid = mujoco.mj_name2id(mm, mujoco.mjtObj.mjOBJ_JOINT, jn)
        nq, nv = (7, 6) if model.jnt_type[j] == simad.JointType.FREE else (1, 1)
        qadr += range(mm.jnt_qposadr[jid], mm.jnt_qposadr[jid] + nq)
        vadr += range(mm.jnt_dofadr[jid], mm.jnt_dofadr[jid] + nv)
    q = simad.random_configuration(model, 1, np.random.default_rng(3))[0]
    md.qpos[qadr] = q
    mujoco.mj_forward(mm, md)
    M = np.zeros((mm.nv, mm.nv))
    mujoco.mj_fullM(mm, md, M)
    M = M[np.ix_(vadr, vadr)]
    joints = [k for k in range(model.nv) if model.jnt_type[model.dof_jnt[k]] != simad.JointType.FREE]
    J = np.ix_(joints, joints)
    assert_close(simad.mass_matrix(model, q)[J], M[J], MJ_TOL * (1 + np.abs(M).max()), what=f"{name} M")
    pos, _ = simad.forward_kinematics(model, q)
    for i in range(1, model.nbody):
        bid = mujoco.mj_name2id(mm, mujoco.mjtObj.mjOBJ_BODY, model.body_names[i])
        if bid >= 0:
            assert_close(pos[i], md.xpos[bid], MJ_TOL, what=f"{name} body {model.body_names[i]}")
    if name in ("ant", "humanoid", "swimmer"):  # free-joint velocity frames differ; fluid forces
        return
    # forward dynamics with joint damping, armature and springs (the half cheetah's stiffness 8),
    # MuJoCo's contacts and limits off
    rng = np.random.default_rng(4)
    qd, tau = rng.normal(size=(2, model.nv))
    mm.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_CONTACT | mujoco.mjtDisableBit.mjDSBL_LIMIT
    md.qvel[vadr], md.qfrc_applied[vadr] = qd, tau
    mujoco.mj_forward(mm, md)
    expect = md.qacc[vadr]
    assert_close(simad.forward_dynamics(model, q, qd, tau), expect, MJ_TOL * (1 + np.abs(expect).max()), what=f"{name} qdd")
