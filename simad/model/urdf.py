"""URDF loader: a ``<robot>`` description -> ``Model``.

Mapping (see ``load_urdf`` for the details):
- each ``<link>`` becomes a body of the same name; the joint whose child it is places it: the
  body frame is the URDF joint frame, i.e. the child link frame, at ``<origin xyz rpy>`` in
  the parent link frame. The joint axis is in that frame and passes through its origin.
- ``revolute`` / ``continuous`` -> revolute, ``prismatic`` -> prismatic, ``floating`` -> free,
  ``fixed`` -> no joint; ``planar`` is not supported. Each 1-dof joint gets one motor
  (gear 1) named after the joint.
- the root link (the one link that is no joint's child) is fixed to the world, or attached by
  a free joint named ``"root_joint"`` with ``floating_base=True`` (Pinocchio's FreeFlyer). A
  root link named ``"world"`` *is* the world: its children attach to body 0.
- ``<collision>`` shapes become geoms; meshes are skipped with a warning.

Only the standard library's ``xml.etree.ElementTree`` and numpy are used. The small XML helpers
at the top (``read_xml``, ``parse_floats``) are shared with the MJCF loader.
"""

from __future__ import annotations

import heapq
import pathlib
import warnings
import xml.etree.ElementTree as ET

import numpy as np

from ..errors import ModelError
from . import rotations as rot
from .builder import ModelBuilder
from .model import Model

ROOT_JOINT = "root_joint"
_JOINT_TYPES = {"revolute": "revolute", "continuous": "revolute", "prismatic": "prismatic", "fixed": "fixed", "floating": "free"}
_ONE_DOF = ("revolute", "continuous", "prismatic")


# ---------------------------------------------------------------------------------------------
# XML helpers (shared with mjcf.py)
# ---------------------------------------------------------------------------------------------
# kg m^2: a link's inertia tensor whose negative eigenvalues are no larger than this is repaired
# (the negative part dropped, with a warning) instead of rejected
NEGLIGIBLE_INERTIA = 1e-6

def read_xml(source, kind: str) -> ET.Element:
    """Parses a file path or XML text into its root element.

    Args:
        source: a ``str`` whose stripped form starts with ``'<'`` is XML text; any other ``str``
            or a ``pathlib.Path`` is a file path.
        kind: the format name used as the error element ("urdf", "mjcf").

    Raises:
        ModelError: unreadable file (field 'source') or malformed XML (field 'xml').
    """
    if isinstance(source, str) and source.strip().startswith("<"):
        text = source.strip()
    elif isinstance(source, (str, pathlib.Path)):
        try:
            text = pathlib.Path(source).read_bytes()  # bytes: the parser honours the encoding declaration
        except OSError as e:
            raise ModelError(f"cannot read '{source}': {e.strerror or e}", element=kind, field="source") from e
    else:
        raise ModelError(f"expected a path or XML text, got {type(source).__name__}", element=kind, field="source")
    try:
        return ET.fromstring(text)
    except ET.ParseError as e:
        raise ModelError(f"malformed XML: {e}", element=kind, field="xml") from None


def parse_floats(text, element: str, field: str, n: int | None = None) -> np.ndarray:
    """Whitespace-separated numbers of an attribute value, all finite; exactly ``n`` if given.

    Raises:
        ModelError: naming ``element`` and ``field`` (the attribute) on a bad value.
    """
    try:
        vals = np.array([float(t) for t in str(text).split()], dtype=np.float64)
    except ValueError:
        raise ModelError(f"expected numbers, got {text!r}", element=element, field=field) from None
    if n is not None and vals.size != n:
        raise ModelError(f"expected {n} numbers, got {vals.size} ({text!r})", element=element, field=field)
    if not np.all(np.isfinite(vals)):
        raise ModelError(f"expected finite numbers, got {text!r}", element=element, field=field)
    return vals


def _attr(el, attr: str, element: str, n: int, default):
    """Attribute ``attr`` of ``el`` (``None`` element allowed) as ``n`` floats, or ``default``.

    The error field is ``"<tag>.<attr>"``, e.g. ``"origin.xyz"`` or ``"mass.value"``."""
    if el is None or el.get(attr) is None:
        return default
    vals = parse_floats(el.get(attr), element, f"{el.tag}.{attr}", n)
    return float(vals[0]) if n == 1 else vals


def _origin(parent_el, element: str) -> tuple[np.ndarray, np.ndarray]:
    """(pos (3,), rot (3, 3)) of the ``<origin xyz rpy>`` child of ``parent_el`` (identity if absent)."""
    o = parent_el.find("origin")
    xyz = _attr(o, "xyz", element, 3, np.zeros(3))
    rpy = _attr(o, "rpy", element, 3, np.zeros(3))
    return xyz, rot.rpy_to_mat(rpy)


# ---------------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------------
def _collect(root: ET.Element, robot: str):
    """Links (name -> element, in document order) and joints (list of dicts), names checked."""
    links: dict[str, ET.Element] = {}
    for el in root.findall("link"):
        name = el.get("name")
        if not name:
            raise ModelError("a <link> has no name", element="link", field="name")
        if name in links:
            raise ModelError("duplicate link name", element=f"link '{name}'", field="name")
        links[name] = el
    if not links:
        raise ModelError("the robot has no <link>", element=f"robot '{robot}'", field="link")
    joints, seen = [], set()
    for el in root.findall("joint"):  # direct children only: <transmission> also holds <joint>
        name = el.get("name")
        if not name:
            raise ModelError("a <joint> has no name", element="joint", field="name")
        element = f"joint '{name}'"
        if name in seen:
            raise ModelError("duplicate joint name", element=element, field="name")
        seen.add(name)
        ends = {}
        for side in ("parent", "child"):
            e = el.find(side)
            link = e.get("link") if e is not None else None
            if link not in links:
                what = f"unknown link '{link}'" if link else f"missing <{side} link=...>"
                raise ModelError(what, element=element, field=side)
            ends[side] = link
        joints.append({"name": name, "el": el, "parent": ends["parent"], "child": ends["child"], "element": element})
    return links, joints


def _topological_order(links: dict[str, ET.Element], joints: list[dict]):
    """Links parents-first, stable w.r.t. document order, and the parent joint of each link.

    Kahn's algorithm that always takes the earliest link (in document order) whose parent is
    placed: a document already written parents-first keeps its order.
    """
    parent_joint: dict[str, dict] = {}
    for j in joints:
        if j["child"] in parent_joint:
            first = parent_joint[j["child"]]["name"]
            raise ModelError(f"link '{j['child']}' already has parent joint '{first}'", element=j["element"], field="child")
        if j["child"] == j["parent"]:
            raise ModelError("a link cannot be its own parent (cycle)", element=j["element"], field="child")
        parent_joint[j["child"]] = j
    index = {name: i for i, name in enumerate(links)}
    roots = [name for name in links if name not in parent_joint]
    if len(roots) > 1:
        raise ModelError(
            f"link '{roots[1]}' has no parent joint but '{roots[0]}' is already the root (one root link allowed)",
            element=f"link '{roots[1]}'",
            field="parent",
        )
    children: dict[str, list[str]] = {}
    for j in joints:
        children.setdefault(j["parent"], []).append(j["child"])
    order, heap = [], [(index[r], r) for r in roots]
    while heap:
        _, link = heapq.heappop(heap)
        order.append(link)
        for c in children.get(link, ()):
            heapq.heappush(heap, (index[c], c))
    if len(order) < len(links):
        _raise_cycle(links, parent_joint, set(order))
    return order, parent_joint


def _raise_cycle(links, parent_joint, placed):
    """Every link has a parent joint but some are unreachable from the root: follow parents to a cycle."""
    link = next(name for name in links if name not in placed)
    path = []
    while link not in path:
        path.append(link)
        link = parent_joint[link]["parent"]
    cycle = path[path.index(link) :] + [link]
    raise ModelError(
        "joints form a cycle: " + " <- ".join(f"'{c}'" for c in cycle), element=parent_joint[link]["element"], field="child"
    )


# ---------------------------------------------------------------------------------------------
# Links: inertia and collision geometry
# ---------------------------------------------------------------------------------------------
def _inertial(link_el: ET.Element, element: str):
    """(mass kg, com (3,) m, inertia (3, 3) kg m^2 about the COM in link axes) of a link.

    URDF gives the inertia in the frame ``<inertial><origin rpy>``: in link axes it is R I R^T."""
    inertial = link_el.find("inertial")
    if inertial is None:
        return 0.0, np.zeros(3), np.zeros((3, 3))
    mass = _attr(inertial.find("mass"), "value", element, 1, 0.0)
    if mass < 0:
        raise ModelError(f"mass must be >= 0, got {mass}", element=element, field="mass.value")
    com, R = _origin(inertial, element)
    i_el = inertial.find("inertia")
    v = {k: _attr(i_el, k, element, 1, 0.0) for k in ("ixx", "ixy", "ixz", "iyy", "iyz", "izz")}
    inertia = np.array(
        [[v["ixx"], v["ixy"], v["ixz"]], [v["ixy"], v["iyy"], v["iyz"]], [v["ixz"], v["iyz"], v["izz"]]], dtype=np.float64
    )
    eig, V = np.linalg.eigh(inertia)
    if eig.min() < -1e-12 * max(1.0, abs(eig.max())):
        shown = np.round(eig, 12).tolist()
        if -eig.min() > NEGLIGIBLE_INERTIA:
            raise ModelError(f"inertia is not positive semidefinite (eigenvalues {shown})", element=element,
                             field="inertia")
        # published descriptions carry such tensors on tiny links (sensors, antennas); Pinocchio
        # takes them as they are, which makes M(q) indefinite. Dropping the negative part keeps
        # the link's dynamics within NEGLIGIBLE_INERTIA of the file's.
        inertia = (V * np.maximum(eig, 0.0)) @ V.T
        warnings.warn(f"URDF {element}: inertia is not positive semidefinite (eigenvalues {shown}); its negative "
                      f"part (<= {NEGLIGIBLE_INERTIA:g} kg m^2) is dropped", stacklevel=3)
    return mass, com, R @ inertia @ R.T


def _add_collisions(b: ModelBuilder, body: int, link: str, link_el: ET.Element, used: set[str]) -> None:
    """Adds the ``<collision>`` shapes of a link as geoms (cylinder -> capsule, mesh skipped)."""
    element = f"link '{link}'"
    for k, col in enumerate(link_el.findall("collision")):
        geo = col.find("geometry")
        shape = geo[0] if geo is not None and len(geo) else None
        kind = shape.tag if shape is not None else None
        if kind == "sphere":
            gtype, size = "sphere", [_attr(shape, "radius", element, 1, 0.0)]
        elif kind == "box":
            gtype, size = "box", 0.5 * _attr(shape, "size", element, 3, np.zeros(3))  # URDF box size = full lengths
        elif kind == "cylinder":
            r, length = _attr(shape, "radius", element, 1, 0.0), _attr(shape, "length", element, 1, 0.0)
            # Same (radius, half-length) as the cylinder: the capsule adds hemispherical caps.
            warnings.warn(f"URDF {element}: cylinder collision approximated by a capsule", stacklevel=3)
            gtype, size = "capsule", [r, 0.5 * length]
        elif kind == "mesh":
            warnings.warn(f"URDF {element}: mesh collision '{shape.get('filename')}' ignored (meshes unsupported)", stacklevel=3)
            continue
        else:
            warnings.warn(f"URDF {element}: collision geometry <{kind}> ignored (unsupported)", stacklevel=3)
            continue
        pos, R = _origin(col, element)
        name = col.get("name")
        if not name or name in used:
            name = f"{link}/collision{k}"
        used.add(name)
        b.add_geom(body, gtype, size=size, pos=pos, rot=R, name=name)


# ---------------------------------------------------------------------------------------------
# Joints
# ---------------------------------------------------------------------------------------------
def _joint_kind(j: dict) -> str:
    kind = j["el"].get("type")
    if kind == "planar":
        raise ModelError("planar joints are not supported", element=j["element"], field="type")
    if kind not in _JOINT_TYPES:
        raise ModelError(f"unknown joint type {kind!r} (known: {sorted(_JOINT_TYPES)})", element=j["element"], field="type")
    return kind


def _add_joint(b: ModelBuilder, body: int, j: dict, kind: str) -> None:
    """Adds the joint of a child link and, for a 1-dof joint, its motor."""
    el, element = j["el"], j["element"]
    if kind == "fixed":
        return
    if kind == "floating":
        b.add_joint(body, j["name"], "free")
        return
    axis = _attr(el.find("axis"), "xyz", element, 3, np.array([1.0, 0.0, 0.0]))
    limit = el.find("limit")
    rng = None
    # A range needs <limit lower/upper>; a missing bound defaults to 0 (the URDF spec); a
    # <limit> with neither bound (only effort / velocity) leaves the joint unlimited.
    if kind != "continuous" and limit is not None and (limit.get("lower") is not None or limit.get("upper") is not None):
        lo, hi = _attr(limit, "lower", element, 1, 0.0), _attr(limit, "upper", element, 1, 0.0)
        if lo > hi:
            raise ModelError(f"lower {lo} > upper {hi}", element=element, field="limit")
        rng = (lo, hi)
    damping = _attr(el.find("dynamics"), "damping", element, 1, 0.0)
    if el.find("mimic") is not None:
        warnings.warn(f"URDF {element}: <mimic> ignored, the joint is independent", stacklevel=3)
    b.add_joint(body, j["name"], "revolute" if kind == "continuous" else kind, axis=axis, range=rng, damping=damping)
    effort = _attr(limit, "effort", element, 1, 0.0)
    b.add_actuator(j["name"], gear=1.0, ctrl_range=(-effort, effort) if effort > 0 else None, name=j["name"])


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
def load_urdf(source, *, floating_base: bool = False, name: str | None = None) -> Model:
    """Loads a URDF robot.

    Args:
        source: path (``str`` or ``pathlib.Path``) of a ``.urdf`` file, or the XML text itself
            (a ``str`` whose stripped form starts with ``'<'``).
        floating_base: attach the root link to the world by a free joint ``"root_joint"``
            (q = x, y, z, qw, qx, qy, qz) instead of fixing it.
        name: model name (default: the robot's ``name`` attribute).

    Returns:
        The ``Model``: body i > 0 per link (world first, then links parents-first in document
        order), joints named as in the URDF, one motor per revolute / continuous / prismatic
        joint with ``ctrl_range = (-effort, effort)`` when ``<limit effort>`` > 0. Joint limits
        come from ``<limit lower upper>`` (continuous joints are unlimited), damping from
        ``<dynamics damping>``; friction, velocity limits, ``<mimic>`` (warned), visuals,
        materials, transmissions and Gazebo tags are ignored.

    Raises:
        ModelError: naming the element (``"link 'x'"``, ``"joint 'y'"``, ``"urdf"``) and the
            field (``"parent"``, ``"child"``, ``"type"``, ``"mass.value"``, ``"origin.xyz"``...).
    """
    root = read_xml(source, "urdf")
    if root.tag != "robot":
        raise ModelError(f"expected root element <robot>, got <{root.tag}>", element="urdf", field="root")
    robot = root.get("name") or "robot"
    links, joints = _collect(root, robot)
    kinds = {j["name"]: _joint_kind(j) for j in joints}
    order, parent_joint = _topological_order(links, joints)
    b = ModelBuilder(name if name is not None else robot)
    body_of: dict[str, int] = {}
    used_geoms: set[str] = set()
    for link in order:
        element = f"link '{link}'"
        j = parent_joint.get(link)
        if j is not None and link == "world":
            raise ModelError("only the root link may be named 'world' (the world body)", element=element, field="name")
        if j is None and link == "world":
            # By convention (Gazebo, MuJoCo's URDF import) a root link named "world" is the world.
            if floating_base:
                raise ModelError("a root link named 'world' is the fixed world; it cannot float", element=element, field="name")
            body_of[link] = 0
            _add_collisions(b, 0, link, links[link], used_geoms)
            continue
        pos, R = _origin(j["el"], j["element"]) if j is not None else (np.zeros(3), np.eye(3))
        mass, com, inertia = _inertial(links[link], element)
        parent = body_of[j["parent"]] if j is not None else 0
        body = b.add_body(link, parent, pos=pos, rot=R, mass=mass, com=com, inertia=inertia)
        body_of[link] = body
        if j is None:
            if floating_base:
                b.add_joint(body, ROOT_JOINT, "free")
        else:
            _add_joint(b, body, j, kinds[j["name"]])
        _add_collisions(b, body, link, links[link], used_geoms)
    return b.finalize()
