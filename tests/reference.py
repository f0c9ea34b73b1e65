"""Independent references for the tests: random kinematic trees built both as a simad Model
and as a Pinocchio model, and finite-difference helpers."""

from __future__ import annotations

import numpy as np

import simad
from simad.model import rotations as rot

# Tolerances are named, so a failure message says which contract broke.
PIN_TOL = 1e-10  # agreement with Pinocchio, f64
FD_EPS = 1e-6  # central finite-difference step
FD_RTOL, FD_ATOL = 1e-6, 1e-7


def random_rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    return rot.quat_to_mat(q / np.linalg.norm(q))


def random_inertia(rng):
    """A physically valid inertia (positive principal moments satisfying the triangle rule)."""
    m = rng.uniform(0.3, 3.0)
    a, b = rng.uniform(0.01, 0.1, 2)
    c = rng.uniform(abs(a - b) + 1e-3, a + b)
    R = random_rotation(rng)
    return m, rng.normal(scale=0.1, size=3), R @ np.diag([a, b, c]) @ R.T


def random_tree(rng, nbody: int = 8, free_root: bool = False, nsite: int = 2):
    """A random tree (revolute / prismatic / fixed joints with arbitrary axes, anchors and
    placements) as (simad Model, pinocchio Model, frame map simad frame -> pinocchio frame id)."""
    import pinocchio as pin

    b = simad.ModelBuilder("random_tree")
    pm = pin.Model()
    # simad body -> (pinocchio joint id, placement of the body frame in that joint's frame)
    where = {0: (0, pin.SE3.Identity())}
    frame_of = {0: pm.getFrameId("universe")}
    kinds = ["revolute", "prismatic", "fixed", "revolute"]
    for i in range(1, nbody):
        parent = 0 if i == 1 else int(rng.integers(0, i))
        X = pin.SE3(random_rotation(rng), rng.normal(scale=0.5, size=3))
        m, com, inertia = random_inertia(rng)
        kind = "free" if (i == 1 and free_root) else kinds[int(rng.integers(0, len(kinds)))]
        name = f"b{i}"
        b.add_body(name, parent, pos=X.translation, rot=X.rotation, mass=m, com=com, inertia=inertia)
        jp, Xp = where[parent]
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        anchor = rng.normal(scale=0.3, size=3) if kind == "revolute" else np.zeros(3)
        if kind == "fixed":
            where[i] = (jp, Xp * X)
        else:
            b.add_joint(name, f"j{i}", kind, axis=axis, anchor=anchor)
            jm = {
                "revolute": lambda: pin.JointModelRevoluteUnaligned(axis),
                "prismatic": lambda: pin.JointModelPrismaticUnaligned(axis),
                "free": pin.JointModelFreeFlyer,
            }[kind]()
            jid = pm.addJoint(jp, jm, Xp * X * pin.SE3(np.eye(3), anchor), f"j{i}")
            where[i] = (jid, pin.SE3(np.eye(3), -anchor))
        jid, Xb = where[i]
        pm.appendBodyToJoint(jid, pin.Inertia(m, com, inertia), Xb)  # Pinocchio maps it by Xb
        frame_of[i] = pm.addFrame(pin.Frame(name, jid, Xb, pin.FrameType.OP_FRAME))
    for s in range(nsite):
        body = int(rng.integers(1, nbody))
        Xs = pin.SE3(random_rotation(rng), rng.normal(scale=0.2, size=3))
        b.add_site(f"s{s}", body, pos=Xs.translation, rot=Xs.rotation)
        jid, Xb = where[body]
        frame_of[nbody + s] = pm.addFrame(pin.Frame(f"s{s}", jid, Xb * Xs, pin.FrameType.OP_FRAME))
    model = b.finalize()
    return model, pm, [frame_of[f] for f in range(model.nframe)]


def to_pinocchio_q(model: simad.Model, q: np.ndarray) -> np.ndarray:
    """Our q -> Pinocchio's: free-joint quaternions (w, x, y, z) -> (x, y, z, w)."""
    out = np.array(q, dtype=np.float64)
    for j in np.flatnonzero(model.jnt_type == simad.JointType.FREE):
        a = model.jnt_qadr[j] + 3
        out[..., a : a + 4] = np.concatenate([q[..., a + 1 : a + 4], q[..., a : a + 1]], -1)
    return out


def tangent_fd(f, model, q, eps=FD_EPS):
    """Central differences of f along each tangent direction of q (1-D): returns (nv, *f.shape)."""
    cols = []
    for k in range(model.nv):
        e = np.zeros(model.nv)
        e[k] = eps
        cols.append((f(simad.integrate(model, q, e)) - f(simad.integrate(model, q, -e))) / (2 * eps))
    return np.array(cols)


def assert_close(actual, expected, atol, rtol=0.0, what=""):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert not np.any(np.isnan(actual)), f"{what}: NaN in result"
    err = np.abs(actual - expected)
    bound = atol + rtol * np.abs(expected)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else ()
    assert np.all(err <= bound), f"{what}: max error {err.max():.3e} at {worst} (actual {actual[worst]}, expected {expected[worst]})"
