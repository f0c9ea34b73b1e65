"""``ModelBuilder``: a mutable description, validated and frozen into a ``Model`` by ``finalize``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelError
from . import rotations as rot
from .model import JOINT_NQ, JOINT_NV, GeomType, JointType, Model

_JOINT_ALIASES = {
    "fixed": JointType.FIXED,
    "revolute": JointType.REVOLUTE,
    "continuous": JointType.REVOLUTE,
    "hinge": JointType.REVOLUTE,
    "prismatic": JointType.PRISMATIC,
    "slide": JointType.PRISMATIC,
    "free": JointType.FREE,
    "floating": JointType.FREE,
}
_GEOM_ALIASES = {"plane": GeomType.PLANE, "sphere": GeomType.SPHERE, "capsule": GeomType.CAPSULE, "box": GeomType.BOX}
_GEOM_NSIZE = {GeomType.PLANE: 0, GeomType.SPHERE: 1, GeomType.CAPSULE: 2, GeomType.BOX: 3}
MAX_BODIES = 4096


@dataclass
class _Body:
    name: str
    parent: int
    pos: np.ndarray
    rot: np.ndarray
    mass: float
    com: np.ndarray
    inertia: np.ndarray
    joints: list = field(default_factory=list)


@dataclass
class _Joint:
    name: str
    type: JointType
    axis: np.ndarray
    anchor: np.ndarray
    limited: bool
    range: tuple[float, float]
    damping: float
    armature: float
    stiffness: float = 0.0
    springref: float = 0.0


def _vec(value, n, element, field_name):
    try:
        a = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ModelError(f"expected {n} numbers, got {value!r}", element=element, field=field_name) from None
    if a.shape != (n,):
        raise ModelError(f"expected {n} numbers, got {a.size}", element=element, field=field_name)
    if not np.all(np.isfinite(a)):
        raise ModelError("contains NaN or inf", element=element, field=field_name)
    return a


def _scalar(value, element, field_name, *, lo=None):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ModelError(f"expected a number, got {value!r}", element=element, field=field_name) from None
    if not math.isfinite(v):
        raise ModelError(f"must be finite, got {v}", element=element, field=field_name)
    if lo is not None and v < lo:
        raise ModelError(f"must be >= {lo}, got {v}", element=element, field=field_name)
    return v


def _rotation(rot_=None, quat=None, element="", field_name="rot"):
    if rot_ is not None and quat is not None:
        raise ModelError("give either rot or quat, not both", element=element, field=field_name)
    if quat is not None:
        q = _vec(quat, 4, element, "quat")
        if np.linalg.norm(q) < 1e-9:
            raise ModelError("quaternion has zero norm", element=element, field="quat")
        return rot.quat_to_mat(q / np.linalg.norm(q))
    if rot_ is None:
        return np.eye(3)
    R = np.asarray(rot_, dtype=np.float64)
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        raise ModelError(f"expected a finite 3x3 rotation matrix, got shape {R.shape}", element=element, field=field_name)
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-6 or np.linalg.det(R) < 0:
        raise ModelError("not a proper rotation matrix (R R^T != I or det < 0)", element=element, field=field_name)
    return R


def _inertia(value, element):
    a = np.asarray(value if value is not None else np.zeros(3), dtype=np.float64)
    if a.shape == (3,):
        a = np.diag(a)
    elif a.shape == (6,):  # ixx, iyy, izz, ixy, ixz, iyz
        ixx, iyy, izz, ixy, ixz, iyz = a
        a = np.array([[ixx, ixy, ixz], [ixy, iyy, iyz], [ixz, iyz, izz]])
    if a.shape != (3, 3):
        raise ModelError(f"expected 3, 6 or 3x3 values, got shape {a.shape}", element=element, field="inertia")
    if not np.all(np.isfinite(a)):
        raise ModelError("contains NaN or inf", element=element, field="inertia")
    if np.abs(a - a.T).max() > 1e-9 * max(1.0, np.abs(a).max()):
        raise ModelError("inertia matrix is not symmetric", element=element, field="inertia")
    a = 0.5 * (a + a.T)
    eig = np.linalg.eigvalsh(a)
    if eig.min() < -1e-12 * max(1.0, abs(eig.max())):
        raise ModelError(
            f"inertia is not positive definite (eigenvalues {np.round(eig, 12).tolist()})", element=element, field="inertia"
        )
    return a


class ModelBuilder:
    """Builds a ``Model`` body by body.

    Example:
        >>> b = ModelBuilder("pendulum")
        >>> link = b.add_body("link", parent="world", mass=1.0, com=(0, 0, -0.5), inertia=(0.1, 0.1, 1e-3))
        >>> b.add_joint(link, "hinge", "revolute", axis=(0, 1, 0))
        >>> model = b.finalize()
    """

    def __init__(self, name: str = "model", gravity=(0.0, 0.0, -9.81)):
        self.name = str(name)
        self.gravity = _vec(gravity, 3, f"model '{name}'", "gravity")
        self._bodies: list[_Body] = [_Body("world", -1, np.zeros(3), np.eye(3), 0.0, np.zeros(3), np.zeros((3, 3)))]
        self._sites: list[tuple] = []
        self._geoms: list[tuple] = []
        self._actuators: list[tuple] = []
        self._qpos0: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------------------------------
    def body_id(self, body: int | str, element: str = "", field_name: str = "parent") -> int:
        if isinstance(body, str):
            for i, b in enumerate(self._bodies):
                if b.name == body:
                    return i
            raise ModelError(f"unknown body '{body}'", element=element, field=field_name)
        if isinstance(body, (int, np.integer)) and 0 <= int(body) < len(self._bodies):
            return int(body)
        raise ModelError(f"unknown body {body!r}", element=element, field=field_name)

    def add_body(self, name, parent=0, *, pos=(0, 0, 0), rot=None, quat=None, mass=0.0, com=(0, 0, 0), inertia=None) -> int:
        """Adds a body attached to ``parent`` (name or index) and returns its index.

        Args:
            pos, rot / quat: placement of the body frame in the parent's frame at q = 0
                (quat scalar-first).
            mass: kg, >= 0. com: centre of mass in the body frame (m).
            inertia: about the COM in body axes: 3 (diagonal), 6 (xx, yy, zz, xy, xz, yz) or 3x3.
        """
        element = f"body '{name}'"
        if not isinstance(name, str) or not name:
            raise ModelError("body name must be a non-empty string", element="body", field="name")
        if any(b.name == name for b in self._bodies):
            raise ModelError("duplicate body name", element=element, field="name")
        if len(self._bodies) >= MAX_BODIES:
            raise ModelError(f"more than {MAX_BODIES} bodies", element=element, field="name")
        pid = self.body_id(parent, element, "parent")
        body = _Body(
            name,
            pid,
            _vec(pos, 3, element, "pos"),
            _rotation(rot, quat, element),
            _scalar(mass, element, "mass", lo=0.0),
            _vec(com, 3, element, "com"),
            _inertia(inertia, element),
        )
        self._bodies.append(body)
        return len(self._bodies) - 1

    def add_joint(
        self,
        body,
        name: str,
        type: str | JointType = "revolute",
        *,
        axis=(0, 0, 1),
        anchor=(0, 0, 0),
        range=None,
        limited: bool | None = None,
        damping: float = 0.0,
        armature: float = 0.0,
        stiffness: float = 0.0,
        springref: float = 0.0,
    ) -> None:
        """Adds a joint moving ``body`` relative to its parent (several joints compose in order).

        Args:
            type: "revolute"/"hinge"/"continuous", "prismatic"/"slide", "free"/"floating", "fixed".
            axis: joint axis in the body frame (normalised here). anchor: a point on the axis.
            range: (lower, upper) limits in rad or m; ``limited`` defaults to ``range is not None``.
            damping: viscous damping per dof. armature: rotor inertia added per dof.
            stiffness: a spring's stiffness (N m/rad or N/m; 1-dof joints only): the passive
                force -stiffness (q - springref), springref in rad or m (MuJoCo's joint spring).
        """
        bid = self.body_id(body, f"joint '{name}'", "body")
        element = f"joint '{name}'"
        if bid == 0:
            raise ModelError("the world body cannot have a joint", element=element, field="body")
        if not isinstance(name, str) or not name:
            raise ModelError("joint name must be a non-empty string", element="joint", field="name")
        if any(j.name == name for b in self._bodies for j in b.joints):
            raise ModelError("duplicate joint name", element=element, field="name")
        jtype = _JOINT_ALIASES.get(type, None) if isinstance(type, str) else type
        if jtype is None or jtype not in JointType.__members__.values():
            raise ModelError(f"unknown joint type {type!r} (known: {sorted(_JOINT_ALIASES)})", element=element, field="type")
        jtype = JointType(jtype)
        if jtype == JointType.FIXED:
            return  # a fixed joint is the absence of motion
        a = _vec(axis, 3, element, "axis")
        n = np.linalg.norm(a)
        if jtype in (JointType.REVOLUTE, JointType.PRISMATIC) and n < 1e-9:
            raise ModelError("axis has zero length", element=element, field="axis")
        a = a / n if n > 0 else np.array([0.0, 0.0, 1.0])
        if limited is None:
            limited = range is not None
        lo, hi = -math.inf, math.inf
        if limited:
            if range is None:
                raise ModelError("limited joint needs a range", element=element, field="range")
            if jtype == JointType.FREE:
                raise ModelError("a free joint cannot be limited", element=element, field="range")
            r = np.asarray(range, dtype=np.float64).reshape(-1)
            if r.shape != (2,) or not np.all(np.isfinite(r)):
                raise ModelError(f"expected (lower, upper) finite, got {range!r}", element=element, field="range")
            lo, hi = float(r[0]), float(r[1])
            if lo > hi:
                raise ModelError(f"lower {lo} > upper {hi}", element=element, field="range")
        stiff = _scalar(stiffness, element, "stiffness", lo=0.0)
        if stiff > 0 and jtype == JointType.FREE:
            raise ModelError("a free joint cannot have a spring", element=element, field="stiffness")
        self._bodies[bid].joints.append(
            _Joint(
                name,
                jtype,
                a,
                _vec(anchor, 3, element, "anchor"),
                bool(limited),
                (lo, hi),
                _scalar(damping, element, "damping", lo=0.0),
                _scalar(armature, element, "armature", lo=0.0),
                stiff,
                _scalar(springref, element, "springref"),
            )
        )

    def set_qpos0(self, joint: str, value) -> None:
        """Default configuration of a joint (1 value, or 7 for a free joint: x y z qw qx qy qz)."""
        self._qpos0[joint] = np.asarray(value, dtype=np.float64).reshape(-1)

    def add_site(self, name, body, *, pos=(0, 0, 0), rot=None, quat=None) -> None:
        """Adds a named frame fixed to ``body`` (an end-effector or tool point)."""
        element = f"site '{name}'"
        bid = self.body_id(body, element, "body")
        self._sites.append((name, bid, _rotation(rot, quat, element), _vec(pos, 3, element, "pos")))

    def add_geom(self, body, type, *, size=(), pos=(0, 0, 0), rot=None, quat=None, friction=0.5, restitution=0.0, name=None):
        """Adds a collision shape to ``body``: see ``GeomType`` for the meaning of ``size``."""
        name = name or f"geom{len(self._geoms)}"
        element = f"geom '{name}'"
        bid = self.body_id(body, element, "body")
        gtype = _GEOM_ALIASES.get(type) if isinstance(type, str) else type
        if gtype is None or gtype not in GeomType.__members__.values():
            raise ModelError(f"unknown geom type {type!r} (known: {sorted(_GEOM_ALIASES)})", element=element, field="type")
        gtype = GeomType(gtype)
        s = np.asarray(size, dtype=np.float64).reshape(-1)
        need = _GEOM_NSIZE[gtype]
        if s.size < need or not np.all(np.isfinite(s)) or np.any(s[:need] <= 0):
            raise ModelError(f"{gtype.name.lower()} needs {need} positive size values, got {s.tolist()}", element=element, field="size")
        full = np.zeros(3)
        full[:need] = s[:need]
        fr = _scalar(friction, element, "friction", lo=0.0)
        e = _scalar(restitution, element, "restitution", lo=0.0)
        if e > 1.0:
            raise ModelError(f"must be in [0, 1], got {e}", element=element, field="restitution")
        self._geoms.append((name, gtype, bid, _rotation(rot, quat, element), _vec(pos, 3, element, "pos"), full, fr, e))

    def add_actuator(self, joint: str, *, gear: float = 1.0, ctrl_range=None, name: str | None = None,
                     gain: float = 1.0, bias=(0.0, 0.0, 0.0)) -> None:
        """An actuator on a 1-dof joint: tau += gear * (gain * clip(u, ctrl_range) + bias[0]
        + bias[1] gear q + bias[2] gear qd). The defaults make a motor (tau += gear * clip(u)); a
        position servo with gains kp, kv is gain=kp, bias=(0, -kp, -kv) (MuJoCo's <position>)."""
        self._actuators.append((name or joint, joint, gear, ctrl_range, gain, bias))

    # ------------------------------------------------------------------------------------------
    def finalize(self) -> Model:
        """Validates and freezes the description into a ``Model`` (raises ``ModelError``)."""
        bodies = self._expand_multi_joint_bodies()
        nb = len(bodies)
        body_jnt = -np.ones(nb, np.int32)
        jnames, jtype, jbody, jqadr, jvadr, jaxis, janchor, jlim, jrange = [], [], [], [], [], [], [], [], []
        dof_jnt, dof_damp, dof_arm, dof_stiff, dof_ref, qpos0 = [], [], [], [], [], []
        for i, b in enumerate(bodies):
            if i and not (0 <= b.parent < i):
                raise ModelError(f"parent index {b.parent} must precede body {i}", element=f"body '{b.name}'", field="parent")
            if not b.joints:
                continue
            j = b.joints[0]
            body_jnt[i] = len(jnames)
            jnames.append(j.name)
            jtype.append(int(j.type))
            jbody.append(i)
            jqadr.append(len(qpos0))
            jvadr.append(len(dof_jnt))
            jaxis.append(j.axis)
            janchor.append(j.anchor)
            jlim.append(j.limited)
            jrange.append(j.range)
            nv = JOINT_NV[j.type]
            dof_jnt += [len(jnames) - 1] * nv
            dof_damp += [j.damping] * nv
            dof_arm += [j.armature] * nv
            dof_stiff += [j.stiffness] * nv
            dof_ref += [j.springref] * nv
            q0 = np.array([0.0, 0, 0, 1, 0, 0, 0]) if j.type == JointType.FREE else np.zeros(JOINT_NQ[j.type])
            if j.name in self._qpos0:
                given = self._qpos0[j.name]
                if given.shape != q0.shape or not np.all(np.isfinite(given)):
                    raise ModelError(f"expected {q0.size} finite values, got {given.tolist()}", element=f"joint '{j.name}'", field="qpos0")
                q0 = given.copy()
                if j.type == JointType.FREE:
                    n = np.linalg.norm(q0[3:])
                    if n < 1e-9:
                        raise ModelError("quaternion has zero norm", element=f"joint '{j.name}'", field="qpos0")
                    q0[3:] /= n
            qpos0 += list(q0)
        unknown = set(self._qpos0) - set(jnames)
        if unknown:
            raise ModelError(f"unknown joint(s) {sorted(unknown)}", element="qpos0", field="joint")
        masses = np.array([b.mass for b in bodies])  # all-massless is fine for kinematics

        act_names, act_dof, act_gear, act_lim, act_range, act_gain, act_bias = [], [], [], [], [], [], []
        for name, joint, gear, cr, gain, bias in self._actuators:
            element = f"actuator '{name}'"
            if joint not in jnames:
                raise ModelError(f"unknown joint '{joint}'", element=element, field="joint")
            ji = jnames.index(joint)
            if jtype[ji] == JointType.FREE:
                raise ModelError("a motor needs a 1-dof joint, not a free joint", element=element, field="joint")
            if name in act_names:
                raise ModelError("duplicate actuator name", element=element, field="name")
            act_names.append(name)
            act_dof.append(jvadr[ji])
            act_gear.append(_scalar(gear, element, "gear"))
            act_gain.append(_scalar(gain, element, "gain"))
            act_bias.append(_vec(bias, 3, element, "bias"))
            if cr is None:
                act_lim.append(False)
                act_range.append((-math.inf, math.inf))
            else:
                r = np.asarray(cr, dtype=np.float64).reshape(-1)
                if r.shape != (2,) or not np.all(np.isfinite(r)) or r[0] > r[1]:
                    raise ModelError(f"expected finite (lower, upper), got {cr!r}", element=element, field="ctrl_range")
                act_lim.append(True)
                act_range.append((float(r[0]), float(r[1])))

        frame_names = [b.name for b in bodies] + [s[0] for s in self._sites]
        if len(set(frame_names)) != len(frame_names):
            dup = sorted({n for n in frame_names if frame_names.count(n) > 1})
            raise ModelError(f"site name(s) {dup} clash with body or site names", element="site", field="name")
        gnames = [g[0] for g in self._geoms]
        if len(set(gnames)) != len(gnames):
            raise ModelError("duplicate geom name", element="geom", field="name")

        f64 = lambda rows, shape: np.asarray(rows, dtype=np.float64).reshape(shape)  # noqa: E731
        i32 = lambda rows: np.asarray(rows, dtype=np.int32).reshape(-1)  # noqa: E731
        nj, ns, ng = len(jnames), len(self._sites), len(self._geoms)
        return Model(
            name=self.name,
            body_names=tuple(b.name for b in bodies),
            body_parent=i32([b.parent for b in bodies]),
            body_jnt=body_jnt,
            body_rot=f64([b.rot for b in bodies], (nb, 3, 3)),
            body_pos=f64([b.pos for b in bodies], (nb, 3)),
            body_mass=masses,
            body_com=f64([b.com for b in bodies], (nb, 3)),
            body_inertia=f64([b.inertia for b in bodies], (nb, 3, 3)),
            jnt_names=tuple(jnames),
            jnt_type=i32(jtype),
            jnt_body=i32(jbody),
            jnt_qadr=i32(jqadr),
            jnt_vadr=i32(jvadr),
            jnt_axis=f64(jaxis, (nj, 3)),
            jnt_anchor=f64(janchor, (nj, 3)),
            jnt_limited=np.asarray(jlim, dtype=bool).reshape(-1),
            jnt_range=f64(jrange, (nj, 2)),
            dof_jnt=i32(dof_jnt),
            dof_damping=f64(dof_damp, (-1,)),
            dof_armature=f64(dof_arm, (-1,)),
            dof_stiffness=f64(dof_stiff, (-1,)),
            dof_springref=f64(dof_ref, (-1,)),
            qpos0=f64(qpos0, (-1,)),
            gravity=self.gravity.copy(),
            actuator_names=tuple(act_names),
            actuator_dof=i32(act_dof),
            actuator_gear=f64(act_gear, (-1,)),
            actuator_ctrllimited=np.asarray(act_lim, dtype=bool).reshape(-1),
            actuator_ctrlrange=f64(act_range, (len(act_names), 2)),
            actuator_gain=f64(act_gain, (-1,)),
            actuator_bias=f64(act_bias, (len(act_names), 3)),
            site_names=tuple(s[0] for s in self._sites),
            site_body=i32([s[1] for s in self._sites]),
            site_rot=f64([s[2] for s in self._sites], (ns, 3, 3)),
            site_pos=f64([s[3] for s in self._sites], (ns, 3)),
            geom_names=tuple(gnames),
            geom_type=i32([g[1] for g in self._geoms]),
            geom_body=i32([g[2] for g in self._geoms]),
            geom_rot=f64([g[3] for g in self._geoms], (ng, 3, 3)),
            geom_pos=f64([g[4] for g in self._geoms], (ng, 3)),
            geom_size=f64([g[5] for g in self._geoms], (ng, 3)),
            geom_friction=f64([g[6] for g in self._geoms], (-1,)),
            geom_restitution=f64([g[7] for g in self._geoms], (-1,)),
        )

    def _expand_multi_joint_bodies(self) -> list[_Body]:
        """Splits a body with k > 1 joints into k - 1 massless bodies plus the body itself.

        Body indices of sites and geoms are remapped to the real (last) body of each chain.
        """
        if all(len(b.joints) <= 1 for b in self._bodies):
            return self._bodies
        out: list[_Body] = []
        remap = {}
        for i, b in enumerate(self._bodies):
            parent = remap.get(b.parent, -1)
            pos, rot_ = b.pos, b.rot
            for j in b.joints[:-1]:
                out.append(_Body(f"{b.name}/{j.name}", parent, pos, rot_, 0.0, np.zeros(3), np.zeros((3, 3)), [j]))
                parent = len(out) - 1
                pos, rot_ = np.zeros(3), np.eye(3)
            out.append(_Body(b.name, parent, pos, rot_, b.mass, b.com, b.inertia, b.joints[-1:]))
            remap[i] = len(out) - 1
        self._sites = [(s[0], remap[s[1]], *s[2:]) for s in self._sites]
        self._geoms = [(g[0], g[1], remap[g[2]], *g[3:]) for g in self._geoms]
        self._bodies = out
        return out
