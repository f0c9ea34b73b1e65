"""Shipped models: the planar-chain generator, the asset files and a name registry.

``load(name)`` returns a ``Model`` for a registered name:

- ``"arm7"``: a 7-DOF serial arm (``assets/arm7.urdf``, base fixed to the world).
- ``"cartpole"``: a cart on a rail with a hinged pole (``assets/cartpole.xml``, MJCF).
- ``"quadruped"``: a 12-DOF legged robot with a free-floating torso (``assets/quadruped.urdf``).
- ``"planar_chain_<n>"``: ``planar_chain(n)`` for 1 <= n <= 512.

The URDF / MJCF loaders are imported lazily, so this module imports without them.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np

from .errors import InputError, ModelError
from .model import Model, ModelBuilder

ASSET_DIR = Path(__file__).resolve().parent / "assets"
MAX_CHAIN_LINKS = 512
_CHAIN_NAME = re.compile(r"planar_chain_(\d+)")
# Chain lengths listed by ``available()``; ``load`` accepts any "planar_chain_<n>" in range.
_LISTED_CHAINS = (1, 2, 3, 7)


# ---------------------------------------------------------------------------------------------
# planar chain
# ---------------------------------------------------------------------------------------------
def _check_chain(n, link_length, mass) -> None:
    """Validates the planar-chain size and lengths (raises ``ModelError``)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ModelError(f"expected an integer, got {n!r}", element="planar_chain", field="n")
    if not 1 <= int(n) <= MAX_CHAIN_LINKS:
        raise ModelError(f"expected 1 <= n <= {MAX_CHAIN_LINKS}, got {int(n)}", element="planar_chain", field="n")
    for field_name, value in (("link_length", link_length), ("mass", mass)):
        if not (isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value) and value > 0):
            raise ModelError(f"expected a positive finite number, got {value!r}", element="planar_chain", field=field_name)


def planar_chain(
    n: int,
    *,
    link_length: float = 1.0,
    mass: float = 1.0,
    com_fraction: float = 0.5,
    inertia=(1 / 12, 1 / 12, 1e-3),
    damping: float = 0.0,
    armature: float = 0.0,
    gravity=(0.0, 0.0, -9.81),
    actuated: bool = True,
) -> Model:
    """An n-link pendulum swinging in the x-z plane (the reference problem).

    Link ``i`` (body ``link<i>``, joint ``joint<i>``) turns about +y; at q = 0 the chain
    hangs along -z. Joint 1 is at the world origin; joint i + 1 at the end of link i,
    i.e. at (0, 0, -link_length) in the frame of link i. A site ``tip`` marks the end of the
    last link. With the defaults every link has length 1 m, mass 1 kg, COM (0, 0, -0.5) m in
    its frame and inertia diag(1/12, 1/12, 1e-3) kg m^2 about the COM.

    Args:
        n: number of links, 1 <= n <= 512.
        link_length: m, > 0. mass: kg per link, > 0.
        com_fraction: COM position along the link, as a fraction of ``link_length``.
        inertia: per link, about the COM in link axes: 3 (diagonal), 6 (xx yy zz xy xz yz) or 3x3.
        damping: N m s/rad per joint. armature: kg m^2 per joint.
        gravity: (3,) m/s^2, world frame.
        actuated: add a motor (gear 1, no control limit) named after each joint.

    Returns:
        The finalized ``Model`` named ``planar_chain_<n>``.

    Raises:
        ModelError: ``n`` out of range (element ``planar_chain``, field ``n``), a non-positive
            ``link_length`` or ``mass``, or an invalid inertia / damping / armature.
    """
    _check_chain(n, link_length, mass)
    n = int(n)
    b = ModelBuilder(f"planar_chain_{n}", gravity=gravity)
    com = (0.0, 0.0, -com_fraction * link_length)
    for i in range(1, n + 1):
        pos = (0.0, 0.0, 0.0) if i == 1 else (0.0, 0.0, -link_length)
        b.add_body(f"link{i}", i - 1, pos=pos, mass=mass, com=com, inertia=inertia)
        b.add_joint(f"link{i}", f"joint{i}", "revolute", axis=(0, 1, 0), damping=damping, armature=armature)
        if actuated:
            b.add_actuator(f"joint{i}", gear=1.0)
    b.add_site("tip", n, pos=(0.0, 0.0, -link_length))
    return b.finalize()


def _fmt(values) -> str:
    """Space-separated floats, printed exactly (shortest round-trip repr)."""
    return " ".join(repr(float(v)) for v in np.asarray(values, dtype=np.float64).reshape(-1))


def _mjcf_inertial(model: Model, i: int) -> str:
    """The ``<inertial>`` element of body i: diaginertia if diagonal, else fullinertia."""
    a = model.body_inertia[i]
    if np.count_nonzero(a - np.diag(np.diag(a))) == 0:
        spec = f'diaginertia="{_fmt(np.diag(a))}"'
    else:  # MuJoCo's order: ixx iyy izz ixy ixz iyz
        spec = f'fullinertia="{_fmt([a[0, 0], a[1, 1], a[2, 2], a[0, 1], a[0, 2], a[1, 2]])}"'
    return f'<inertial pos="{_fmt(model.body_com[i])}" mass="{_fmt([model.body_mass[i]])}" {spec}/>'


def planar_chain_mjcf(n: int, **kwargs) -> str:
    """``planar_chain(n, **kwargs)`` as MJCF text for MuJoCo (the reference engine).

    Same bodies (world = body 0, then link1..linkn), joints, inertials, site and motors;
    Euler integration with a 0.01 s step. The bodies have no geoms, hence no contacts.

    Args:
        n, **kwargs: as for ``planar_chain``.

    Returns:
        The MJCF document, loadable with ``mujoco.MjModel.from_xml_string``.
    """
    m = planar_chain(n, **kwargs)
    lines = [
        f'<mujoco model="{m.name}">',
        '  <compiler angle="radian" inertiafromgeom="false" autolimits="true"/>',
        f'  <option timestep="0.01" gravity="{_fmt(m.gravity)}" integrator="Euler"/>',
        "  <worldbody>",
    ]
    for i in range(1, m.nbody):
        pad = "  " * (i + 1)
        j = m.body_jnt[i]
        lines += [
            f'{pad}<body name="{m.body_names[i]}" pos="{_fmt(m.body_pos[i])}">',
            f'{pad}  <joint name="{m.jnt_names[j]}" type="hinge" axis="{_fmt(m.jnt_axis[j])}" '
            f'damping="{_fmt([m.dof_damping[j]])}" armature="{_fmt([m.dof_armature[j]])}" '
            f'stiffness="{_fmt([m.dof_stiffness[j]])}" springref="{_fmt([m.dof_springref[j]])}"/>',
            f"{pad}  {_mjcf_inertial(m, i)}",
        ]
    lines.append(f'{"  " * (m.nbody + 1)}<site name="tip" pos="{_fmt(m.site_pos[0])}"/>')
    lines += [f"{'  ' * (i + 1)}</body>" for i in range(m.nbody - 1, 0, -1)]
    lines += ["  </worldbody>", "  <actuator>"]
    gears = zip(m.actuator_names, m.actuator_gear, strict=True)
    lines += [f'    <motor name="{a}" joint="{a}" gear="{_fmt([g])}"/>' for a, g in gears]
    lines += ["  </actuator>", "</mujoco>", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# assets and registry
# ---------------------------------------------------------------------------------------------
def asset_path(name: str) -> Path:
    """The path of a file shipped in ``simad/assets`` (e.g. ``"arm7.urdf"``).

    Raises:
        InputError: (field ``name``) if no such asset is shipped.
    """
    files = sorted(p.name for p in ASSET_DIR.iterdir() if p.is_file()) if ASSET_DIR.is_dir() else []
    if not isinstance(name, str) or name not in files:
        raise InputError("name", f"unknown asset {name!r} (assets: {', '.join(files)})")
    return ASSET_DIR / name


def _load_arm7() -> Model:
    from .model.urdf import load_urdf

    return load_urdf(asset_path("arm7.urdf"))


def _load_cartpole() -> Model:
    from .model.mjcf import load_mjcf

    return load_mjcf(asset_path("cartpole.xml"))


def _load_quadruped() -> Model:
    from .model.urdf import load_urdf

    return load_urdf(asset_path("quadruped.urdf"), floating_base=True)


_REGISTRY = {"arm7": _load_arm7, "cartpole": _load_cartpole, "quadruped": _load_quadruped}


def available() -> list[str]:
    """Names ``load`` accepts: the shipped robots and a few planar chains.

    Any ``"planar_chain_<n>"`` with 1 <= n <= 512 loads as well; only some are listed.
    """
    return sorted(_REGISTRY) + [f"planar_chain_{n}" for n in _LISTED_CHAINS]


def load(name: str) -> Model:
    """Loads a shipped model by name (see the module docstring and ``available()``).

    Raises:
        InputError: (field ``name``) for an unknown name or a chain length out of range.
    """
    if isinstance(name, str) and name in _REGISTRY:
        with warnings.catch_warnings():
            # the shipped URDFs use cylinders on purpose; the capsule approximation is known
            warnings.filterwarnings("ignore", message=".*approximated by a capsule.*")
            return _REGISTRY[name]()
    match = _CHAIN_NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise InputError("name", f"unknown model {name!r} (known: {', '.join(available())}, planar_chain_<n>)")
    n = int(match.group(1))
    if not 1 <= n <= MAX_CHAIN_LINKS:
        raise InputError("name", f"expected planar_chain_<n> with 1 <= n <= {MAX_CHAIN_LINKS}, got n = {n}")
    return planar_chain(n)
