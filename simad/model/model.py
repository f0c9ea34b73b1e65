"""The immutable model: topology, sizes and physical parameters of a robot or scene.

Conventions (shared by every module):
- Body 0 is the world. Every other body has exactly one joint to its parent (possibly
  ``FIXED``); bodies are stored parents-first (``body_parent[i] < i``). A loader whose format
  allows several joints in one body (MJCF) inserts massless intermediate bodies named
  ``"<body>/<joint>"``.
- The pose of body ``i`` in the world is ``T_parent * X_i * M_i(q)`` where ``X_i`` is the
  placement ``(body_rot[i], body_pos[i])`` of the body frame in its parent's frame at q = 0
  and ``M_i`` the joint motion: a rotation by ``q`` about ``jnt_axis`` through ``jnt_anchor``
  (revolute), a translation ``q * jnt_axis`` (prismatic), or the pose ``(x, y, z, qw, qx, qy,
  qz)`` (free; quaternion scalar-first, like MuJoCo). Axis and anchor are in the body frame.
- Velocities: a revolute or prismatic joint has one dof; a free joint has six:
  ``(v, w)``, the linear velocity of the body origin and the angular velocity, both in the
  body's own frame (Pinocchio's convention for its free-flyer).
- Frames are the bodies (frame i == body i) followed by the sites.

The fields marked ``param`` are the differentiable physical parameters; ``Model.param_names``
is derived from those marks (never from a hand-kept list).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from ..errors import InputError, ModelError


class JointType(IntEnum):
    """Joint kinds. The integer values are part of the wire format; never renumber."""

    FIXED = 0
    REVOLUTE = 1
    PRISMATIC = 2
    FREE = 3


JOINT_NQ = {JointType.FIXED: 0, JointType.REVOLUTE: 1, JointType.PRISMATIC: 1, JointType.FREE: 7}
JOINT_NV = {JointType.FIXED: 0, JointType.REVOLUTE: 1, JointType.PRISMATIC: 1, JointType.FREE: 6}


class GeomType(IntEnum):
    """Collision shapes. ``geom_size`` holds (radius, -, -) for a sphere, half-extents for a
    box, (radius, half-length, -) for a capsule along its local z, and nothing for a plane
    (the half-space z <= 0 of the geom frame)."""

    PLANE = 0
    SPHERE = 1
    CAPSULE = 2
    BOX = 3


def param(**kw):
    """Marks a Model field as a differentiable physical parameter."""
    return field(metadata={"param": True}, **kw)


def static(**kw):
    return field(metadata={"param": False}, **kw)


@dataclass(frozen=True, eq=False)
class Model:
    """An immutable robot / scene description. Build one with ``ModelBuilder`` or a loader.

    Sizes: ``nbody`` bodies (world included), ``njnt`` moving joints, ``nq`` configuration
    coordinates, ``nv`` velocity coordinates (dofs), ``nu`` actuators, ``nsite`` sites,
    ``ngeom`` collision shapes, ``nframe = nbody + nsite``. Units are SI (m, kg, s, rad, N, N m).
    """

    name: str = static()
    # --- bodies (nbody,) --------------------------------------------------------------------
    body_names: tuple[str, ...] = static()
    body_parent: np.ndarray = static()  # (nbody,) int32, -1 for the world
    body_jnt: np.ndarray = static()  # (nbody,) int32, joint index or -1 (fixed / world)
    body_rot: np.ndarray = static()  # (nbody, 3, 3) placement rotation in the parent frame
    body_pos: np.ndarray = param()  # (nbody, 3) m, placement translation in the parent frame
    body_mass: np.ndarray = param()  # (nbody,) kg
    body_com: np.ndarray = param()  # (nbody, 3) m, centre of mass in the body frame
    body_inertia: np.ndarray = param()  # (nbody, 3, 3) kg m^2, about the COM, body axes
    # --- joints (njnt,), moving joints only ---------------------------------------------------
    jnt_names: tuple[str, ...] = static()
    jnt_type: np.ndarray = static()  # (njnt,) int32 JointType
    jnt_body: np.ndarray = static()  # (njnt,) int32
    jnt_qadr: np.ndarray = static()  # (njnt,) int32, first index in q
    jnt_vadr: np.ndarray = static()  # (njnt,) int32, first index in qd
    jnt_axis: np.ndarray = static()  # (njnt, 3) unit axis in the body frame
    jnt_anchor: np.ndarray = static()  # (njnt, 3) m, point on the axis, body frame
    jnt_limited: np.ndarray = static()  # (njnt,) bool
    jnt_range: np.ndarray = static()  # (njnt, 2) rad or m; (-inf, inf) when not limited
    # --- dofs (nv,) --------------------------------------------------------------------------
    dof_jnt: np.ndarray = static()  # (nv,) int32
    dof_damping: np.ndarray = param()  # (nv,) N m s/rad or N s/m
    dof_armature: np.ndarray = param()  # (nv,) kg m^2 or kg, added to the mass-matrix diagonal
    dof_stiffness: np.ndarray = param()  # (nv,) N m/rad or N/m: the passive force -stiffness (q - springref)
    dof_springref: np.ndarray = static()  # (nv,) rad or m, the spring's rest position (1-dof joints)
    # --- configuration -----------------------------------------------------------------------
    qpos0: np.ndarray = static()  # (nq,) default configuration
    gravity: np.ndarray = param()  # (3,) m/s^2, world frame
    # --- actuators (nu,): motors, tau[dof] += gear * clip(u, ctrl_range) ----------------------
    actuator_names: tuple[str, ...] = static()
    actuator_dof: np.ndarray = static()  # (nu,) int32
    actuator_gear: np.ndarray = param()  # (nu,)
    actuator_ctrllimited: np.ndarray = static()  # (nu,) bool
    actuator_ctrlrange: np.ndarray = static()  # (nu, 2)
    # servos (MuJoCo's fixed gain, affine bias): the actuator's force is gain * clip(u) + bias[0]
    # + bias[1] L + bias[2] dL/dt with L = gear * q, and tau[dof] += gear * force; a motor has
    # gain 1, bias 0; a position servo gain kp, bias (0, -kp, -kv)
    actuator_gain: np.ndarray = static()  # (nu,)
    actuator_bias: np.ndarray = static()  # (nu, 3)
    # --- sites: named frames fixed to a body -------------------------------------------------
    site_names: tuple[str, ...] = static()
    site_body: np.ndarray = static()  # (nsite,) int32
    site_rot: np.ndarray = static()  # (nsite, 3, 3) in the body frame
    site_pos: np.ndarray = static()  # (nsite, 3) m, in the body frame
    # --- collision geometry ------------------------------------------------------------------
    geom_names: tuple[str, ...] = static()
    geom_type: np.ndarray = static()  # (ngeom,) int32 GeomType
    geom_body: np.ndarray = static()  # (ngeom,) int32
    geom_rot: np.ndarray = static()  # (ngeom, 3, 3) in the body frame
    geom_pos: np.ndarray = static()  # (ngeom, 3) m, in the body frame
    geom_size: np.ndarray = param()  # (ngeom, 3) m, see GeomType
    geom_friction: np.ndarray = param()  # (ngeom,) Coulomb coefficient
    geom_restitution: np.ndarray = param()  # (ngeom,) in [0, 1]

    # ----------------------------------------------------------------------------------------
    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                v.setflags(write=False)

    @property
    def nbody(self) -> int:
        return len(self.body_names)

    @property
    def njnt(self) -> int:
        return len(self.jnt_names)

    @property
    def nq(self) -> int:
        return int(self.qpos0.shape[0])

    @property
    def nv(self) -> int:
        return int(self.dof_jnt.shape[0])

    @property
    def nu(self) -> int:
        return len(self.actuator_names)

    @property
    def nsite(self) -> int:
        return len(self.site_names)

    @property
    def ngeom(self) -> int:
        return len(self.geom_names)

    @property
    def nframe(self) -> int:
        return self.nbody + self.nsite

    @property
    def frame_names(self) -> tuple[str, ...]:
        return self.body_names + self.site_names

    @property
    def has_free_joint(self) -> bool:
        cached = self.__dict__.get("_has_free")
        if cached is None:
            cached = bool(np.any(self.jnt_type == JointType.FREE))
            object.__setattr__(self, "_has_free", cached)
        return cached

    @classmethod
    def param_fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("param"))

    @property
    def param_names(self) -> tuple[str, ...]:
        """The differentiable physical parameters, in declaration order."""
        return self.param_fields()

    def frame_id(self, frame: int | str, field_name: str = "frame") -> int:
        """Index of a frame given by name or index; raises ``InputError`` naming ``field_name``."""
        names = self.frame_names
        if isinstance(frame, (int, np.integer)) and not isinstance(frame, bool):
            if 0 <= int(frame) < len(names):
                return int(frame)
            raise InputError(field_name, f"frame index {int(frame)} out of range [0, {len(names)})")
        if isinstance(frame, str):
            try:
                return names.index(frame)
            except ValueError:
                hint = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
                raise InputError(field_name, f"unknown frame '{frame}' (frames: {hint})") from None
        raise InputError(field_name, f"expected a frame name or index, got {type(frame).__name__}")

    def joint_id(self, joint: int | str, field_name: str = "joint") -> int:
        if isinstance(joint, str):
            if joint in self.jnt_names:
                return self.jnt_names.index(joint)
            raise InputError(field_name, f"unknown joint '{joint}'")
        if 0 <= int(joint) < self.njnt:
            return int(joint)
        raise InputError(field_name, f"joint index {joint} out of range [0, {self.njnt})")

    @property
    def content_hash(self) -> str:
        """SHA-256 of every field (names, topology and parameters): equal models, equal hash."""
        cached = self.__dict__.get("_hash")
        if cached is None:
            h = hashlib.sha256()
            for f in dataclasses.fields(self):
                v = getattr(self, f.name)
                h.update(f.name.encode())
                if isinstance(v, np.ndarray):
                    a = np.ascontiguousarray(v)
                    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
                    h.update(str(a.dtype).encode() + repr(a.shape).encode() + a.tobytes())
                else:
                    h.update(repr(v).encode())
            cached = h.hexdigest()
            object.__setattr__(self, "_hash", cached)
        return cached

    @property
    def massless_joints(self) -> tuple[str, ...]:
        """Moving joints whose dofs move nothing (no armature on the dof, and below the joint no
        mass, or for a revolute joint no mass and no inertia; a free joint also needs inertia):
        the mass matrix is singular at every configuration and forward dynamics is undefined.
        Kinematics does not care. Empty for a well-posed model."""
        cached = self.__dict__.get("_massless")
        if cached is None:
            mass = self.body_mass.astype(np.float64).copy()
            inert = np.abs(self.body_inertia).reshape(self.nbody, 9).sum(axis=1)
            for i in range(self.nbody - 1, 0, -1):  # subtree sums (parents precede children)
                p = int(self.body_parent[i])
                if p > 0:
                    mass[p] += mass[i]
                    inert[p] += inert[i]
            out = []
            for j in range(self.njnt):
                b, t, va = int(self.jnt_body[j]), self.jnt_type[j], int(self.jnt_vadr[j])
                nv = JOINT_NV[JointType(int(t))]
                if np.any(self.dof_armature[va: va + nv] > 0):
                    continue
                if t == JointType.PRISMATIC:
                    dead = mass[b] <= 0
                elif t == JointType.REVOLUTE:
                    dead = mass[b] <= 0 and inert[b] <= 0
                else:
                    dead = mass[b] <= 0 or inert[b] <= 0
                if dead:
                    out.append(self.jnt_names[j])
            cached = tuple(out)
            object.__setattr__(self, "_massless", cached)
        return cached

    def replace(self, **params) -> Model:
        """A new model with some differentiable parameters replaced (validated shapes)."""
        allowed = set(self.param_names)
        new = {}
        for k, v in params.items():
            if k not in allowed:
                raise InputError(k, f"not a differentiable parameter (one of {sorted(allowed)})")
            old = getattr(self, k)
            arr = np.array(v, dtype=np.float64)
            if arr.shape != old.shape:
                raise InputError(k, f"expected shape {old.shape}, got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise InputError(k, "contains NaN or inf")
            new[k] = arr
        return dataclasses.replace(self, **new)

    def with_ground(self, height: float = 0.0, *, friction: float = 1.0, restitution: float = 0.0,
                    name: str = "ground") -> Model:
        """A new model with a static ground plane z = ``height`` (m, world frame; the half-space
        below it is solid) on the world body: what a URDF robot lacks for contact rollouts."""
        vals = {"height": height, "friction": friction, "restitution": restitution}
        for k, v in vals.items():
            if not isinstance(v, (int, float, np.floating, np.integer)) or not np.isfinite(v):
                raise InputError(k, f"expected a finite number, got {v!r}")
        if friction < 0 or not 0 <= restitution <= 1:
            raise InputError("friction" if friction < 0 else "restitution",
                             "friction must be >= 0 and restitution in [0, 1]")
        if name in self.geom_names:
            raise ModelError("duplicate geom name", element=f"geom '{name}'", field="name")
        return dataclasses.replace(
            self,
            geom_names=self.geom_names + (name,),
            geom_type=np.append(self.geom_type, np.int32(GeomType.PLANE)).astype(self.geom_type.dtype),
            geom_body=np.append(self.geom_body, 0).astype(self.geom_body.dtype),
            geom_rot=np.concatenate([self.geom_rot, np.eye(3)[None]]),
            geom_pos=np.concatenate([self.geom_pos, [[0.0, 0.0, float(height)]]]),
            geom_size=np.concatenate([self.geom_size, np.zeros((1, 3))]),
            geom_friction=np.append(self.geom_friction, float(friction)),
            geom_restitution=np.append(self.geom_restitution, float(restitution)),
        )

    def summary(self) -> str:
        return (
            f"Model '{self.name}': nbody={self.nbody} njnt={self.njnt} nq={self.nq} nv={self.nv} "
            f"nu={self.nu} nsite={self.nsite} ngeom={self.ngeom} hash={self.content_hash[:12]}"
        )

    def __repr__(self) -> str:
        return f"<{self.summary()}>"
