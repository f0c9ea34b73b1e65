"""MJCF (MuJoCo XML) loader: a ``<mujoco>`` description -> ``Model``.

The supported subset (see ``load_mjcf``) covers kinematic trees of hinge / slide / free joints,
inertias (explicit or inferred from geoms like MuJoCo's compiler), collision geoms, sites and
motors, with ``<default>`` classes and the ``<compiler angle eulerseq autolimits
inertiafromgeom>`` settings. Bodies are numbered like MuJoCo's (document pre-order, world 0)
as long as no body holds several joints.

Semantics worth knowing:
- MuJoCo's hinge / slide kinematics is relative to ``ref`` (the body sits at its declared
  pose when q == ref, and qpos0 == ref). simad's joint motion is relative to 0, so a nonzero
  ``ref`` is folded into the placement: X' = X * M(-ref), and qpos0 = ref.
- A body with k > 1 joints becomes k - 1 massless bodies ``"<body>/<joint>"`` followed by the
  body itself, one joint each (the ``Model`` convention), built here so that every joint's
  ``ref`` can be folded into its own placement.
- A free joint's body pose (pos, quat) becomes the joint's qpos0 and the body placement is the
  identity, as in MuJoCo.
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ET

import numpy as np

from ..errors import ModelError
from . import rotations as rot
from .builder import ModelBuilder
from .model import Model
from .urdf import parse_floats, read_xml

DEFAULT_DENSITY = 1000.0  # kg/m^3, MuJoCo's default geom density
_ORIENTATIONS = ("quat", "axisangle", "euler", "xyaxes", "zaxis")
_ACTUATOR_TAGS = ("general", "motor", "position", "velocity", "intvelocity", "damper", "cylinder", "muscle", "adhesion")
_GEOM_NSIZE = {"plane": 0, "sphere": 1, "capsule": 2, "cylinder": 2, "box": 3, "ellipsoid": 3, "mesh": 0, "hfield": 0, "sdf": 0}
_UNSUPPORTED_BODY_CHILDREN = ("frame", "replicate", "attach", "composite", "flexcomp")


def _bool(value: str, element: str, field: str) -> bool | None:
    """MJCF 'true' / 'false' / 'auto' -> True / False / None."""
    v = str(value).strip().lower()
    if v in ("true", "false", "auto"):
        return None if v == "auto" else v == "true"
    raise ModelError(f"expected true, false or auto, got {value!r}", element=element, field=field)


def _z_to_quat(vec: np.ndarray) -> np.ndarray:
    """The minimal rotation taking +z to ``vec`` (MuJoCo's rule: antiparallel -> pi about x)."""
    v = vec / np.linalg.norm(vec)
    axis = np.cross([0.0, 0.0, 1.0], v)
    s = np.linalg.norm(axis)
    axis = axis / s if s >= 1e-10 else np.array([1.0, 0.0, 0.0])
    half = 0.5 * math.atan2(s, v[2])
    return np.concatenate([[math.cos(half)], math.sin(half) * axis])


def _fromto(text: str, element: str):
    """(pos (3,), quat (4,), half-length) of a geom or site given by ``fromto``: centred between
    the end points, its z axis pointing from the 'to' end to the 'from' end (as MuJoCo does)."""
    p = parse_floats(text, element, "fromto", 6)
    half = 0.5 * np.linalg.norm(p[3:] - p[:3])
    if half < 1e-12:
        raise ModelError("fromto end points coincide", element=element, field="fromto")
    return 0.5 * (p[:3] + p[3:]), _z_to_quat(p[:3] - p[3:]), half


def _geom_mass_inertia(gtype: str, size: np.ndarray, density: float, mass: float | None):
    """(mass kg, principal inertia (3,) kg m^2 about the geom centre in geom axes) of a solid
    geom, MuJoCo's formulas; ``mass`` (if given) overrides ``density``. None for other shapes."""
    if gtype == "sphere":
        r = size[0]
        vol, k = 4.0 / 3.0 * math.pi * r**3, np.full(3, 0.4 * r * r)
    elif gtype == "box":
        a, b, c = size[:3]
        vol, k = 8.0 * a * b * c, np.array([b * b + c * c, a * a + c * c, a * a + b * b]) / 3.0
    elif gtype == "ellipsoid":
        a, b, c = size[:3]
        vol, k = 4.0 / 3.0 * math.pi * a * b * c, np.array([b * b + c * c, a * a + c * c, a * a + b * b]) / 5.0
    elif gtype == "cylinder":
        r, h = size[0], 2.0 * size[1]
        vol, k = math.pi * r * r * h, np.array([(3 * r * r + h * h) / 12.0, (3 * r * r + h * h) / 12.0, r * r / 2.0])
    elif gtype == "capsule":
        # cylinder of height h plus two hemispheres; each hemisphere's COM is 3r/8 from the
        # cap plane, hence the parallel-axis term (h/2 + 3r/8)^2 minus the (3r/8)^2 own shift.
        r, h = size[0], 2.0 * size[1]
        vc, vs = math.pi * r * r * h, 4.0 / 3.0 * math.pi * r**3
        vol = vc + vs
        ixx = vc * (3 * r * r + h * h) / 12.0 + vs * (0.4 * r * r + h * h / 4.0 + 3.0 * h * r / 8.0)
        k = np.array([ixx, ixx, vc * r * r / 2.0 + vs * 0.4 * r * r]) / vol
    else:
        return None
    rho = mass / vol if mass is not None else density
    return rho * vol, rho * vol * k


class _Loader:
    """One MJCF document -> ModelBuilder calls (state: defaults, compiler settings, counters)."""

    def __init__(self, root: ET.Element, name: str | None):
        self.root = root
        self.angle, self.eulerseq, self.autolimits, self.fromgeom = math.pi / 180.0, "xyz", True, "auto"
        self.totalmass = -1.0
        self._compiler()
        self.defaults: dict[str, dict[str, dict[str, str]]] = {}
        for d in root.findall("default"):
            self._parse_default(d, {}, top=True)
        self.defaults.setdefault("main", {})
        gravity = np.array([0.0, 0.0, -9.81])
        for opt in root.findall("option"):
            if opt.get("gravity") is not None:
                gravity = parse_floats(opt.get("gravity"), "option", "gravity", 3)
            for fluid in ("density", "viscosity"):
                if opt.get(fluid) is not None and float(parse_floats(opt.get(fluid), "option", fluid, 1)[0]) != 0.0:
                    warnings.warn(f"MJCF option {fluid}: fluid forces ignored", stacklevel=4)
        self.b = ModelBuilder(name if name is not None else root.get("model", "mjcf"), gravity=gravity)
        # MuJoCo-style ids for generated names; explicit names are reserved up front so a
        # generated "body3" never collides with a body the document names "body3" later.
        self.count = {"body": 1, "joint": 0, "geom": 0, "site": 0, "actuator": 0}
        self.taken = {k: {e.get("name") for e in root.iter(k) if e.get("name")} for k in ("body", "joint", "geom", "site")}
        self.taken["joint"] |= {e.get("name") for e in root.iter("freejoint") if e.get("name")}
        self.taken["body"].add("world")
        self.joints: set[str] = set()
        self.actuator_names: set[str] = set()

    # -- document-level settings ------------------------------------------------------------
    def _compiler(self) -> None:
        for c in self.root.findall("compiler"):
            angle = c.get("angle", "degree" if self.angle != 1.0 else "radian")
            if angle not in ("degree", "radian"):
                raise ModelError(f"expected degree or radian, got {angle!r}", element="compiler", field="angle")
            self.angle = math.pi / 180.0 if angle == "degree" else 1.0
            seq = c.get("eulerseq", self.eulerseq)
            if len(seq) != 3 or any(ch not in "xyzXYZ" for ch in seq):
                raise ModelError(f"expected 3 letters from xyzXYZ, got {seq!r}", element="compiler", field="eulerseq")
            self.eulerseq = seq
            if c.get("autolimits") is not None:
                self.autolimits = bool(_bool(c.get("autolimits"), "compiler", "autolimits"))
            self.fromgeom = c.get("inertiafromgeom", self.fromgeom)
            if self.fromgeom not in ("auto", "true", "false"):
                raise ModelError(
                    f"expected auto, true or false, got {self.fromgeom!r}", element="compiler", field="inertiafromgeom"
                )
            if c.get("settotalmass") is not None:
                self.totalmass = float(parse_floats(c.get("settotalmass"), "compiler", "settotalmass", 1)[0])
            if c.get("coordinate", "local") != "local":
                raise ModelError("only local coordinates are supported", element="compiler", field="coordinate")

    def _parse_default(self, el: ET.Element, inherited: dict, top: bool) -> None:
        """Default classes: each class copies its parent's table, then its own elements override."""
        cls = el.get("class", "main" if top else None)
        if cls is None:
            raise ModelError("a nested <default> needs a class", element="default", field="class")
        if cls in self.defaults:
            raise ModelError("duplicate default class", element=f"default '{cls}'", field="class")
        table = {tag: dict(attrs) for tag, attrs in inherited.items()}
        for child in el:
            if child.tag == "default":
                continue
            # every actuator shortcut edits the same actuator defaults, as in MuJoCo
            tag = "actuator" if child.tag in _ACTUATOR_TAGS else child.tag
            table.setdefault(tag, {}).update(child.attrib)
        self.defaults[cls] = table
        for child in el.findall("default"):
            self._parse_default(child, table, top=False)

    def _resolve(self, el: ET.Element, tag: str, childclass: str | None, element: str) -> dict[str, str]:
        """Attributes of ``el`` over the defaults of its class (own class, else childclass, else main)."""
        cls = el.get("class") or childclass or "main"
        if cls not in self.defaults:
            raise ModelError(f"unknown default class '{cls}'", element=element, field="class")
        out = dict(self.defaults[cls].get(tag, {}))
        out.update(el.attrib)
        out.pop("class", None)
        return out

    def _name(self, kind: str, given: str | None) -> str:
        """The element's name, or a generated unique ``"<kind><id>"`` (MuJoCo id)."""
        idx = self.count[kind]
        self.count[kind] += 1
        if given:
            return given
        name = f"{kind}{idx}"
        while name in self.taken.get(kind, ()):
            name += "_"
        self.taken.setdefault(kind, set()).add(name)
        return name

    # -- small attribute readers --------------------------------------------------------------
    def _vec(self, attrs: dict, key: str, element: str, n: int, default) -> np.ndarray:
        return parse_floats(attrs[key], element, key, n) if key in attrs else np.asarray(default, dtype=np.float64)

    def _num(self, attrs: dict, key: str, element: str, default: float) -> float:
        """A single-number attribute, or ``default``."""
        return float(parse_floats(attrs[key], element, key, 1)[0]) if key in attrs else float(default)

    def _first(self, attrs: dict, key: str, element: str, default: float) -> float:
        """The first number of a multi-valued attribute (MJCF friction, gear), or ``default``."""
        if key not in attrs:
            return default
        v = parse_floats(attrs[key], element, key)
        if v.size == 0:
            raise ModelError("expected at least one number", element=element, field=key)
        return float(v[0])

    def _quat(self, attrs: dict, element: str) -> np.ndarray:
        """Unit quaternion (w, x, y, z) of the orientation attributes (at most one of them)."""
        given = [k for k in _ORIENTATIONS if k in attrs]
        if len(given) > 1:
            raise ModelError(f"at most one orientation attribute allowed, got {given}", element=element, field=given[1])
        if not given:
            return np.array([1.0, 0.0, 0.0, 0.0])
        key = given[0]
        v = parse_floats(attrs[key], element, key, {"quat": 4, "axisangle": 4, "euler": 3, "xyaxes": 6, "zaxis": 3}[key])
        if key == "quat":
            q = v
        elif key == "axisangle":
            if np.linalg.norm(v[:3]) < 1e-12:
                raise ModelError("axis has zero length", element=element, field=key)
            half = 0.5 * v[3] * self.angle
            q = np.concatenate([[math.cos(half)], math.sin(half) * v[:3] / np.linalg.norm(v[:3])])
        elif key == "euler":
            q = self._euler(v * self.angle)
        elif key == "zaxis":
            if np.linalg.norm(v) < 1e-12:
                raise ModelError("axis has zero length", element=element, field=key)
            q = _z_to_quat(v)
        else:
            x, y = v[:3], v[3:]
            x = x / max(np.linalg.norm(x), 1e-300)
            y = y - x * (x @ y)
            if np.linalg.norm(y) < 1e-12 or not np.all(np.isfinite(x)):
                raise ModelError("x and y axes are degenerate", element=element, field=key)
            y = y / np.linalg.norm(y)
            q = rot.mat_to_quat(np.stack([x, y, np.cross(x, y)], axis=1))
        n = np.linalg.norm(q)
        if n < 1e-12:
            raise ModelError("quaternion has zero norm", element=element, field=key)
        return q / n

    def _euler(self, angles: np.ndarray) -> np.ndarray:
        """MuJoCo's euler rule: lowercase axes rotate with the frame (intrinsic: q = q * r),
        uppercase axes are fixed (extrinsic: q = r * q)."""
        q = np.array([1.0, 0.0, 0.0, 0.0])
        for ch, a in zip(self.eulerseq, angles, strict=True):
            r = np.zeros(4)
            r[0], r[1 + "xyz".index(ch.lower())] = math.cos(0.5 * a), math.sin(0.5 * a)
            q = rot.quat_mul(q, r) if ch.islower() else rot.quat_mul(r, q)
        return q

    # -- bodies -------------------------------------------------------------------------------
    def worldbody(self, wb: ET.Element) -> None:
        childclass = wb.get("childclass")
        for child in wb:
            if child.tag in ("joint", "freejoint", "inertial"):
                raise ModelError(f"<{child.tag}> is not allowed in the worldbody", element="worldbody", field=child.tag)
        for g in self._geoms(wb, childclass, "world"):
            self._add_geom(0, g)
        self._sites(wb, 0, childclass)
        for child in wb.findall("body"):
            self.body(child, 0, childclass, top=True)

    def body(self, el: ET.Element, parent: int, childclass: str | None, top: bool) -> None:
        """Adds one <body> (and its joints, geoms, sites), then its child bodies."""
        name = self._name("body", el.get("name"))
        element = f"body '{name}'"
        childclass = el.get("childclass", childclass)
        if childclass is not None and childclass not in self.defaults:
            raise ModelError(f"unknown default class '{childclass}'", element=element, field="childclass")
        for child in el:
            if child.tag in _UNSUPPORTED_BODY_CHILDREN:
                raise ModelError(f"<{child.tag}> is not supported", element=element, field=child.tag)
        if el.get("mocap", "false") == "true":
            warnings.warn(f"MJCF {element}: mocap body loaded as a fixed body", stacklevel=4)
        pos = self._vec(el.attrib, "pos", element, 3, np.zeros(3))
        quat = self._quat(el.attrib, element)
        joints = [self._joint(j, childclass) for j in el if j.tag in ("joint", "freejoint")]
        geoms = self._geoms(el, childclass, name)
        mass, com, inertia = self._body_inertia(el, element, geoms)
        if any(j["type"] == "free" for j in joints):
            if not top:
                raise ModelError("a free joint must be in a child of the worldbody", element=element, field="type")
            if len(joints) > 1:
                raise ModelError("a free joint must be the only joint of its body", element=element, field="type")
            self.b.set_qpos0(joints[0]["name"], np.concatenate([pos, quat]))
            pos, quat = np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0])
        bid = self._chain(name, parent, pos, rot.quat_to_mat(quat), joints, (mass, com, inertia))
        for g in geoms:
            self._add_geom(bid, g)
        self._sites(el, bid, childclass)
        for child in el.findall("body"):
            self.body(child, bid, childclass, top=False)

    def _chain(self, name: str, parent: int, pos, R, joints: list[dict], inertial) -> int:
        """The body (after k - 1 massless bodies for k > 1 joints); each joint's ref folded."""
        for k, j in enumerate(joints):
            last = k == len(joints) - 1
            pos, R = self._fold_ref(pos, R, j)
            mass, com, inertia = inertial if last else (0.0, np.zeros(3), None)
            bname = name if last else f"{name}/{j['name']}"
            parent = self.b.add_body(bname, parent, pos=pos, rot=R, mass=mass, com=com, inertia=inertia)
            rng = j["range"] if j["limited"] else None
            self.b.add_joint(
                parent, j["name"], j["type"], axis=j["axis"], anchor=j["anchor"], range=rng,
                damping=j["damping"], armature=j["armature"], stiffness=j["stiffness"], springref=j["springref"],
            )  # fmt: skip
            if j["ref"] != 0.0:
                self.b.set_qpos0(j["name"], [j["ref"]])
            pos, R = np.zeros(3), np.eye(3)
        if not joints:
            mass, com, inertia = inertial
            parent = self.b.add_body(name, parent, pos=pos, rot=R, mass=mass, com=com, inertia=inertia)
        return parent

    @staticmethod
    def _fold_ref(pos, R, j: dict):
        """Placement X * M(-ref): simad's motion M(q) equals MuJoCo's M(q - ref) after it."""
        if j["ref"] == 0.0 or j["type"] == "free":
            return pos, R
        a, c = j["axis"], j["anchor"]
        if j["type"] == "slide":
            return pos - R @ (j["ref"] * a), R
        Rj = rot.axis_angle_to_mat(a, -j["ref"])  # rotation about the axis through the anchor c
        return pos + R @ (c - Rj @ c), R @ Rj

    def _joint(self, el: ET.Element, childclass: str | None) -> dict:
        free = el.tag == "freejoint"
        name = self._name("joint", el.get("name"))
        element = f"joint '{name}'"
        attrs = {} if free else self._resolve(el, "joint", childclass, element)
        jtype = "free" if free else attrs.get("type", "hinge")
        if jtype == "ball":
            raise ModelError("ball joints are not supported", element=element, field="type")
        if jtype not in ("hinge", "slide", "free"):
            raise ModelError(f"unknown joint type {jtype!r} (known: hinge, slide, free)", element=element, field="type")
        axis = self._vec(attrs, "axis", element, 3, (0.0, 0.0, 1.0))
        if np.linalg.norm(axis) < 1e-12:
            raise ModelError("axis has zero length", element=element, field="axis")
        scale = self.angle if jtype == "hinge" else 1.0  # only hinge angles are in compiler units
        limited = _bool(attrs.get("limited", "auto"), element, "limited")
        if limited is None:
            limited = "range" in attrs and self.autolimits
        rng = self._vec(attrs, "range", element, 2, (0.0, 0.0)) * scale
        if limited and rng[0] > rng[1]:
            raise ModelError(f"lower {rng[0]} > upper {rng[1]}", element=element, field="range")
        if self._num(attrs, "frictionloss", element, 0.0) != 0.0:
            warnings.warn(f"MJCF {element}: frictionloss ignored", stacklevel=5)
        stiffness = self._num(attrs, "stiffness", element, 0.0)
        if jtype == "free" and stiffness != 0.0:
            warnings.warn(f"MJCF {element}: a free joint's stiffness ignored", stacklevel=5)
            stiffness = 0.0
        self.joints.add(name)
        return {
            "name": name,
            "type": jtype,
            "axis": axis / np.linalg.norm(axis),
            "anchor": self._vec(attrs, "pos", element, 3, np.zeros(3)),
            "limited": bool(limited) and jtype != "free",  # MuJoCo ignores a free joint's range
            "range": rng,
            "ref": 0.0 if jtype == "free" else self._num(attrs, "ref", element, 0.0) * scale,
            "damping": self._num(attrs, "damping", element, 0.0),
            "armature": self._num(attrs, "armature", element, 0.0),
            "stiffness": stiffness,
            "springref": 0.0 if jtype == "free" else self._num(attrs, "springref", element, 0.0) * scale,
        }

    # -- inertia ------------------------------------------------------------------------------
    def _body_inertia(self, el: ET.Element, element: str, geoms: list[dict]):
        """(mass, com, inertia about the COM in body axes): <inertial>, or the geoms' solids."""
        inertial = el.find("inertial")
        if inertial is not None and self.fromgeom != "true":
            return self._explicit_inertial(inertial, element)
        if self.fromgeom == "false":
            return 0.0, np.zeros(3), np.zeros((3, 3))
        parts = []  # (mass, pos, R, principal inertia) of each solid geom
        for g in geoms:
            mi = _geom_mass_inertia(g["type"], g["size"], g["density"], g["mass"])
            if mi is not None and mi[0] > 0:
                parts.append((mi[0], g["pos"], g["rot"], mi[1]))
        total = sum(p[0] for p in parts)
        if total <= 0:
            return 0.0, np.zeros(3), np.zeros((3, 3))
        com = sum(m * p for m, p, _, _ in parts) / total
        inertia = np.zeros((3, 3))
        for m, p, R, diag in parts:
            d = p - com  # parallel-axis shift from the geom centre to the body COM
            inertia += R @ np.diag(diag) @ R.T + m * ((d @ d) * np.eye(3) - np.outer(d, d))
        return total, com, 0.5 * (inertia + inertia.T)

    def _explicit_inertial(self, inertial: ET.Element, body_element: str):
        element = f"inertial of {body_element}"
        attrs = inertial.attrib
        mass = self._num(attrs, "mass", element, 0.0)
        if mass < 0:
            raise ModelError(f"mass must be >= 0, got {mass}", element=element, field="mass")
        com = self._vec(attrs, "pos", element, 3, np.zeros(3))
        if "fullinertia" in attrs:
            if any(k in attrs for k in _ORIENTATIONS):
                raise ModelError("fullinertia excludes an orientation attribute", element=element, field="fullinertia")
            ixx, iyy, izz, ixy, ixz, iyz = parse_floats(attrs["fullinertia"], element, "fullinertia", 6)
            return mass, com, np.array([[ixx, ixy, ixz], [ixy, iyy, iyz], [ixz, iyz, izz]])
        diag = self._vec(attrs, "diaginertia", element, 3, np.zeros(3))
        if np.any(diag < 0):
            raise ModelError(f"principal moments must be >= 0, got {diag.tolist()}", element=element, field="diaginertia")
        R = rot.quat_to_mat(self._quat(attrs, element))
        return mass, com, R @ np.diag(diag) @ R.T

    # -- geoms and sites ----------------------------------------------------------------------
    def _geoms(self, el: ET.Element, childclass: str | None, body: str) -> list[dict]:
        return [self._geom(g, childclass, body) for g in el.findall("geom")]

    def _geom(self, el: ET.Element, childclass: str | None, body: str) -> dict:
        name = self._name("geom", el.get("name"))
        element = f"geom '{name}'"
        a = self._resolve(el, "geom", childclass, element)
        gtype = a.get("type", "sphere")
        if gtype not in _GEOM_NSIZE:
            raise ModelError(f"unknown geom type {gtype!r} (known: {sorted(_GEOM_NSIZE)})", element=element, field="type")
        size = self._vec(a, "size", element, None, np.zeros(0))
        pos, quat = self._vec(a, "pos", element, 3, np.zeros(3)), self._quat(a, element)
        if "fromto" in a:
            if gtype not in ("capsule", "cylinder", "box", "ellipsoid"):
                raise ModelError(f"fromto is not allowed on a {gtype}", element=element, field="fromto")
            pos, quat, half = _fromto(a["fromto"], element)
            # the first size is the radius; a box / ellipsoid gets it for both of its x and y
            r = size[:1] if size.size else np.zeros(1)
            size = np.concatenate([r, [half]] if gtype in ("capsule", "cylinder") else [r, r, [half]])
        need = _GEOM_NSIZE[gtype]
        if size.size < need or np.any(size[:need] <= 0):
            raise ModelError(f"{gtype} needs {need} positive size values, got {size.tolist()}", element=element, field="size")
        mass = float(parse_floats(a["mass"], element, "mass", 1)[0]) if "mass" in a else None
        density = self._num(a, "density", element, DEFAULT_DENSITY)
        if (mass is not None and mass < 0) or density < 0:
            raise ModelError(
                "mass and density must be >= 0", element=element, field="mass" if mass is not None and mass < 0 else "density"
            )
        contype = int(self._num(a, "contype", element, 1))
        conaffinity = int(self._num(a, "conaffinity", element, 1))
        return {
            "name": name, "element": element, "body": body, "type": gtype, "size": size, "pos": pos,
            "quat": quat, "rot": rot.quat_to_mat(quat), "mass": mass, "density": density,
            "friction": self._first(a, "friction", element, 1.0),
            "collides": contype != 0 or conaffinity != 0,
            "mesh": a.get("mesh"),
        }  # fmt: skip

    def _add_geom(self, body: int, g: dict) -> None:
        """Adds a collision geom: cylinder -> capsule (warned), mesh / ellipsoid / hfield skipped
        (warned), visual-only geoms (contype = conaffinity = 0) skipped."""
        gtype, size, where = g["type"], g["size"], f"MJCF {g['element']} of body '{g['body']}'"
        if gtype == "ellipsoid":
            warnings.warn(f"{where}: ellipsoid ignored for collisions (its inferred mass is kept)", stacklevel=4)
            return
        if gtype in ("mesh", "hfield", "sdf"):
            what = f"mesh '{g['mesh']}'" if gtype == "mesh" else gtype
            warnings.warn(f"{where}: {what} ignored (unsupported shape: no collision, no inferred mass)", stacklevel=4)
            return
        if not g["collides"]:
            return
        if gtype == "cylinder":
            warnings.warn(f"{where}: cylinder approximated by a capsule for collisions", stacklevel=4)
            gtype = "capsule"
        self.b.add_geom(body, gtype, size=size, pos=g["pos"], quat=g["quat"], friction=g["friction"], name=g["name"])

    def _sites(self, el: ET.Element, body: int, childclass: str | None) -> None:
        """Adds the sites; one named like a body is renamed (MJCF names sites and bodies
        apart, simad's frames share one namespace), with a warning."""
        for s in el.findall("site"):
            name = self._name("site", s.get("name"))
            element = f"site '{name}'"
            a = self._resolve(s, "site", childclass, element)
            if name in self.taken["body"]:
                new = name + "_site"
                while new in self.taken["body"] or new in self.taken["site"]:
                    new += "_"
                warnings.warn(f"MJCF {element}: renamed '{new}', its name is a body's", stacklevel=5)
                self.taken["site"].add(new)
                name = new
            if "fromto" in a:
                pos, quat, _ = _fromto(a["fromto"], element)
            else:
                pos, quat = self._vec(a, "pos", element, 3, np.zeros(3)), self._quat(a, element)
            self.b.add_site(name, body, pos=pos, quat=quat)

    # -- actuators ----------------------------------------------------------------------------
    def actuators(self, section: ET.Element) -> None:
        for el in section:
            k = self.count["actuator"]
            self.count["actuator"] += 1
            name = el.get("name") or el.get("joint") or f"actuator{k}"
            if not el.get("name") and name in self.actuator_names:  # a second unnamed motor on a joint
                name = f"actuator{k}"
            self.actuator_names.add(name)
            element = f"actuator '{name}'"
            if el.tag not in ("motor", "position", "velocity", "general"):  # activation dynamics, muscles...
                warnings.warn(f"MJCF {element}: <{el.tag}> actuators are not supported (motor, position, velocity, "
                              "general): skipped", stacklevel=4)
                continue
            a = self._resolve(el, "actuator", None, element)
            gain_bias = self._gain_bias(el.tag, a, element)
            if gain_bias is None:
                continue
            joint = a.get("joint")
            if joint is None:
                warnings.warn(f"MJCF {element}: only joint transmissions are supported (tendon, site...): skipped",
                              stacklevel=4)
                continue
            if joint not in self.joints:
                raise ModelError(f"unknown joint '{joint}'", element=element, field="joint")
            gear = self._first(a, "gear", element, 1.0)
            limited = _bool(a.get("ctrllimited", "auto"), element, "ctrllimited")
            if limited is None:
                limited = "ctrlrange" in a and self.autolimits
            if limited and "ctrlrange" not in a:
                raise ModelError("ctrllimited needs a ctrlrange", element=element, field="ctrlrange")
            cr = parse_floats(a["ctrlrange"], element, "ctrlrange", 2) if limited else None
            if cr is not None and cr[0] > cr[1]:
                raise ModelError(f"lower {cr[0]} > upper {cr[1]}", element=element, field="ctrlrange")
            if "forcerange" in a:
                warnings.warn(f"MJCF {element}: forcerange ignored", stacklevel=4)
            self.b.add_actuator(joint, gear=gear, ctrl_range=cr, name=name, gain=gain_bias[0], bias=gain_bias[1])

    def _gain_bias(self, tag: str, a: dict, element: str):
        """(gain, bias (3,)) of MuJoCo's actuator shortcuts (force = gain ctrl + bias . (1, L, dL/dt)),
        or None (warned) for a <general> with another gain, bias or activation type."""
        if tag == "motor":
            return 1.0, (0.0, 0.0, 0.0)
        if tag == "position":
            kp, kv = self._num(a, "kp", element, 1.0), self._num(a, "kv", element, 0.0)
            return kp, (0.0, -kp, -kv)
        if tag == "velocity":
            kv = self._num(a, "kv", element, 1.0)
            return kv, (0.0, 0.0, -kv)
        kinds = (a.get("gaintype", "fixed"), a.get("biastype", "none"), a.get("dyntype", "none"))
        if kinds[0] != "fixed" or kinds[1] not in ("none", "affine") or kinds[2] != "none":
            warnings.warn(f"MJCF {element}: <general> with gaintype/biastype/dyntype {kinds} is not supported "
                          "(fixed, affine or none, none): skipped", stacklevel=5)
            return None
        gain = self._first(a, "gainprm", element, 1.0)
        bias = np.zeros(3)
        if kinds[1] == "affine" and a.get("biasprm"):
            b = parse_floats(a["biasprm"], element, "biasprm")[:3]
            bias[: b.size] = b
        return gain, tuple(bias)


def load_mjcf(source, *, name: str | None = None) -> Model:
    """Loads a MuJoCo MJCF model.

    Args:
        source: path (``str`` or ``pathlib.Path``) of an ``.xml`` file, or the XML text itself
            (a ``str`` whose stripped form starts with ``'<'``).
        name: model name (default: ``<mujoco model=...>``).

    Returns:
        The ``Model``. Supported: ``<compiler angle eulerseq autolimits inertiafromgeom
        settotalmass>``
        (angles in degrees unless ``angle="radian"``), ``<option gravity>``, ``<default>``
        classes (nested, ``class`` / ``childclass``), bodies (pos; quat / axisangle / euler /
        xyaxes / zaxis), ``<inertial>`` (diaginertia or fullinertia) or mass and inertia
        inferred from sphere / box / capsule / cylinder / ellipsoid geoms (density 1000, or the
        geom's ``mass``), hinge / slide / free joints (axis, pos, range, limited, ref, damping,
        armature, stiffness and springref), geoms (plane, sphere, capsule, box; cylinder -> capsule; ellipsoids, meshes
        and height fields skipped for collisions with a warning; visual-only geoms with
        ``contype = conaffinity = 0`` skipped), sites (pos and orientation, or ``fromto``; a site
        named like a body is renamed ``"<name>_site"`` with a warning, since frames share one
        namespace) and ``<motor>`` actuators on joints (gear's first value; an unnamed motor is
        named after its joint), ``<position kp kv>``, ``<velocity kv>`` and ``<general>`` with a
        fixed gain and an affine bias (servos: ``Model.actuator_gain``, ``actuator_bias``); other
        actuator types and transmissions are skipped with a warning.
        Ignored: assets, visuals, cameras, lights, contacts, sensors,
        keyframes, equality constraints and tendons (warned), joint frictionloss and a free
        joint's stiffness (warned), actuator forcerange (warned), mesh inertias (warned), the fluid forces of
        ``<option density viscosity>`` (warned).

    Raises:
        ModelError: naming the element (``"body 'torso'"``, ``"joint 'hip'"``, ``"actuator 'm'"``,
            ``"mjcf"``...) and the field (the attribute, e.g. ``"range"``, ``"type"``, ``"joint"``).
    """
    root = read_xml(source, "mjcf")
    if root.tag != "mujoco":
        raise ModelError(f"expected root element <mujoco>, got <{root.tag}>", element="mjcf", field="root")
    for tag in ("include", "equality", "tendon"):
        for el in root.iter(tag):
            if tag == "include":
                raise ModelError("<include> is not supported", element="include", field="file")
            if len(el):
                warnings.warn(f"MJCF <{tag}> ignored", stacklevel=2)
    loader = _Loader(root, name)
    for wb in root.findall("worldbody"):
        loader.worldbody(wb)
    for section in root.findall("actuator"):
        loader.actuators(section)
    model = loader.b.finalize()
    total = float(model.body_mass[1:].sum())
    if loader.totalmass > 0 and total > 0:  # MuJoCo's compiler: every body's mass and inertia scaled alike
        f = loader.totalmass / total
        model = model.replace(body_mass=model.body_mass * f, body_inertia=model.body_inertia * f)
    return model
