"""Forward kinematics, frame Jacobians and the FK VJP against Pinocchio and finite differences."""

import numpy as np
import pytest
from reference import FD_ATOL, FD_RTOL, PIN_TOL, assert_close, random_tree, tangent_fd, to_pinocchio_q

import simad

pin = pytest.importorskip("pinocchio")


def _pin_frames(pm, fmap, qp):
    data = pm.createData()
    pin.framesForwardKinematics(pm, data, qp)
    return np.array([data.oMf[f].translation for f in fmap]), np.array([data.oMf[f].rotation for f in fmap])


@pytest.mark.parametrize("seed,free_root", [(0, False), (1, False), (2, True), (3, True)])
def test_fk_equals_pinocchio_on_random_trees(seed, free_root):
    rng = np.random.default_rng(seed)
    model, pm, fmap = random_tree(rng, nbody=9, free_root=free_root)
    q = simad.random_configuration(model, 6, rng)
    pos, rot = simad.forward_kinematics(model, q)
    assert pos.shape == (6, model.nframe, 3) and rot.shape == (6, model.nframe, 3, 3)
    for b in range(6):
        ppos, prot = _pin_frames(pm, fmap, to_pinocchio_q(model, q[b]))
        assert_close(pos[b], ppos, PIN_TOL, what=f"seed {seed} env {b} frame positions")
        assert_close(rot[b], prot, PIN_TOL, what=f"seed {seed} env {b} frame rotations")


@pytest.mark.parametrize("seed,free_root", [(4, False), (5, True)])
def test_jacobian_equals_pinocchio_local_world_aligned(seed, free_root):
    rng = np.random.default_rng(seed)
    model, pm, fmap = random_tree(rng, nbody=9, free_root=free_root)
    q = simad.random_configuration(model, 5, rng)
    frames = list(range(1, model.nframe))
    J = simad.frame_jacobian(model, q, frames)
    assert J.shape == (5, len(frames), 6, model.nv)
    data = pm.createData()
    for b in range(5):
        qp = to_pinocchio_q(model, q[b])
        for k, f in enumerate(frames):
            Jp = pin.computeFrameJacobian(pm, data, qp, fmap[f], pin.LOCAL_WORLD_ALIGNED)
            assert_close(J[b, k], Jp, PIN_TOL, what=f"env {b} frame {model.frame_names[f]}")


@pytest.mark.parametrize("free_root", [False, True])
def test_jacobian_against_finite_differences(free_root):
    rng = np.random.default_rng(7)
    model, _, _ = random_tree(rng, nbody=7, free_root=free_root)
    q = simad.random_configuration(model, 1, rng)[0]
    f = model.nframe - 1
    J = simad.frame_jacobian(model, q, f)
    pos0, rot0 = simad.forward_kinematics(model, q)
    fd_p = tangent_fd(lambda qq: simad.forward_kinematics(model, qq)[0][f], model, q)
    fd_R = tangent_fd(lambda qq: simad.forward_kinematics(model, qq)[1][f], model, q)
    # angular velocity column k: vee(dR/dq_k R^T)
    W = np.einsum("kij,lj->kil", fd_R, rot0[f])
    fd_w = np.stack([W[:, 2, 1], W[:, 0, 2], W[:, 1, 0]], 1)
    assert_close(J[:3].T, fd_p, FD_ATOL, FD_RTOL, "linear Jacobian vs FD")
    assert_close(J[3:].T, fd_w, FD_ATOL, FD_RTOL, "angular Jacobian vs FD")


@pytest.mark.parametrize("free_root", [False, True])
def test_fk_vjp_against_finite_differences(free_root):
    rng = np.random.default_rng(11)
    model, _, _ = random_tree(rng, nbody=8, free_root=free_root)
    q = simad.random_configuration(model, 3, rng)
    pb = rng.normal(size=(3, model.nframe, 3))
    rb = rng.normal(size=(3, model.nframe, 3, 3))
    g = simad.forward_kinematics_vjp(model, q, pb, rb)
    assert g.shape == (3, model.nv)
    for b in range(3):
        loss = lambda qq: float(np.sum(simad.forward_kinematics(model, qq)[0] * pb[b]) + np.sum(simad.forward_kinematics(model, qq)[1] * rb[b]))  # noqa: E731
        fd = tangent_fd(loss, model, q[b])
        assert_close(g[b], fd, FD_ATOL, FD_RTOL, f"FK VJP (tangent) env {b}")
    # coordinate-space gradient: plain central differences in q (quaternion normalised inside FK)
    gc = simad.forward_kinematics_vjp(model, q, pb, rb, space="coords")
    assert gc.shape == (3, model.nq)
    loss0 = lambda qq: float(np.sum(simad.forward_kinematics(model, qq)[0] * pb[0]) + np.sum(simad.forward_kinematics(model, qq)[1] * rb[0]))  # noqa: E731
    eps = 1e-6
    fdc = np.array([(loss0(q[0] + e) - loss0(q[0] - e)) / (2 * eps) for e in np.eye(model.nq) * eps])
    assert_close(gc[0], fdc, FD_ATOL, FD_RTOL, "FK VJP (coords)")


def test_vjp_of_position_only_cotangent_and_zero():
    rng = np.random.default_rng(3)
    model, _, _ = random_tree(rng, nbody=5)
    q = simad.random_configuration(model, 2, rng)
    assert np.all(simad.forward_kinematics_vjp(model, q) == 0.0)
    pb = np.zeros((2, model.nframe, 3))
    pb[:, -1, 0] = 1.0  # d x(last frame) / dq == first row of that frame's Jacobian
    J = simad.frame_jacobian(model, q, model.nframe - 1)
    assert_close(simad.forward_kinematics_vjp(model, q, pb), J[:, 0, :], 1e-12, what="VJP == J^T e_x")


def test_single_configuration_and_batch_agree():
    rng = np.random.default_rng(5)
    model, _, _ = random_tree(rng, nbody=6, free_root=True)
    q = simad.random_configuration(model, 40, rng)  # above the serial threshold: parallel launch
    pos, rot = simad.forward_kinematics(model, q)
    p1, r1 = simad.forward_kinematics(model, q[17])
    assert p1.shape == (model.nframe, 3)
    assert np.array_equal(p1, pos[17]) and np.array_equal(r1, rot[17])
    J = simad.frame_jacobian(model, q, "s0")
    assert np.array_equal(simad.frame_jacobian(model, q[17], "s0"), J[17])


def test_other_numeric_inputs_are_converted_like_float64():
    """Integer, bool, float32 and strided inputs mean their float64 values."""
    rng = np.random.default_rng(6)
    model, _, _ = random_tree(rng, nbody=5)
    qi = rng.integers(-2, 3, size=(3, model.nq))
    ref = simad.forward_kinematics(model, qi.astype(np.float64))
    for q in (qi, qi.astype(np.int32), qi.astype(np.float32), np.asfortranarray(qi.astype(np.float64)),
              np.repeat(qi.astype(np.float64), 2, axis=1)[:, ::2], qi.tolist()):
        got = simad.forward_kinematics(model, q)
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])
    qb = qi > 0
    got = simad.forward_kinematics(model, qb)
    assert np.array_equal(got[0], simad.forward_kinematics(model, qb.astype(np.float64))[0])


def test_integrate_difference_roundtrip():
    rng = np.random.default_rng(9)
    model, _, _ = random_tree(rng, nbody=6, free_root=True)
    q0 = simad.random_configuration(model, 4, rng)
    v = rng.normal(size=(4, model.nv))
    q1 = simad.integrate(model, q0, v)
    assert_close(simad.difference(model, q0, q1), v, 1e-12, what="difference(integrate(q, v)) == v")


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda m: simad.forward_kinematics(m, np.zeros((2, m.nq + 1))), "q"),
        (lambda m: simad.forward_kinematics(m, np.zeros((2, 3, m.nq))), "q"),
        (lambda m: simad.forward_kinematics(m, np.full((1, m.nq), np.nan)), "q"),
        (lambda m: simad.forward_kinematics(m, np.zeros((0, m.nq))), "q"),
        (lambda m: simad.forward_kinematics(m, [["a"] * m.nq]), "q"),
        (lambda m: simad.forward_kinematics(m, np.zeros((1, m.nq), complex)), "q"),
        (lambda m: simad.forward_kinematics(m, np.zeros((1, m.nq), object)), "q"),
        (lambda m: simad.forward_kinematics(m, np.zeros((1, m.nq), "datetime64[s]")), "q"),
        (lambda m: simad.forward_kinematics(m, np.array([[np.inf] + [0.0] * (m.nq - 1)])), "q"),
        (lambda m: simad.frame_jacobian(m, np.zeros(m.nq), "no_such_frame"), "frame"),
        (lambda m: simad.frame_jacobian(m, np.zeros(m.nq), 999), "frame"),
        (lambda m: simad.frame_jacobian(m, np.zeros(m.nq), ["b1", "nope"]), "frame[1]"),
        (lambda m: simad.forward_kinematics_vjp(m, np.zeros(m.nq), np.zeros((3, 3))), "pos_bar"),
        (lambda m: simad.forward_kinematics_vjp(m, np.zeros(m.nq), space="bogus"), "space"),
    ],
)
def test_bad_input_names_the_field(call, field):
    model, _, _ = random_tree(np.random.default_rng(0), nbody=4)
    with pytest.raises(simad.InputError) as e:
        call(model)
    assert e.value.field == field, str(e.value)


def test_zero_quaternion_rejected():
    model, _, _ = random_tree(np.random.default_rng(2), nbody=4, free_root=True)
    q = simad.neutral(model, 2)
    q[1, 3:7] = 0.0
    with pytest.raises(simad.InputError, match="quaternion") as e:
        simad.forward_kinematics(model, q)
    assert e.value.field.startswith("q[1")
