"""Analytic derivatives of the dynamics (simad.rnea_derivatives, simad.aba_derivatives) against
Pinocchio's computeRNEADerivatives / computeABADerivatives on random trees (fixed and floating
base, revolute and prismatic joints with arbitrary axes), against central finite differences
in the tangent space with damping and armature, and bad input."""

import numpy as np
import pytest
from reference import assert_close, random_tree, tangent_fd

import simad
from simad import models

pin = pytest.importorskip("pinocchio")
PIN_TOL = 1e-9  # f64 agreement with Pinocchio (relative to the entries' scale below)
FD_TOL = 2e-6  # central differences, eps 1e-6, relative to the largest entry


def _pin_mats(pm, data):
    """Pinocchio fills only the upper triangle of M and Minv."""
    sym = lambda X: np.triu(X) + np.triu(X, 1).T  # noqa: E731
    return sym(data.M), sym(data.Minv)


@pytest.mark.parametrize("name", ["arm7", "panda", "solo12"])
def test_rnea_and_aba_derivatives_equal_pinocchio(name, rng):
    """Public robots (Solo-12 on a floating base), joints matched by name. Pinocchio's
    derivative algorithms assume depth-first dof order (contiguous subtrees), which URDF
    loading gives; our random trees are not in that order, so they are checked against
    finite differences below."""
    from test_robots import _load, _maps  # noqa: PLC0415

    model, pm = _load(name)
    model = model.replace(dof_damping=np.zeros(model.nv), dof_armature=np.zeros(model.nv))  # Pinocchio has neither
    to_pin, vmap = _maps(model, pm)
    B = 3
    q = simad.random_configuration(model, B, rng)
    qd, qdd, tau = (rng.normal(size=(B, model.nv)) for _ in range(3))
    tq, tv, M = simad.rnea_derivatives(model, q, qd, qdd)
    aq, av, Minv = simad.aba_derivatives(model, q, qd, tau)
    data = pm.createData()
    P = np.ix_(vmap, vmap)  # our (row, column) -> Pinocchio's
    for b in range(B):
        qv, vv, av_, tv_ = to_pin(q[b]), np.zeros(pm.nv), np.zeros(pm.nv), np.zeros(pm.nv)
        vv[vmap], av_[vmap], tv_[vmap] = qd[b], qdd[b], tau[b]
        pin.computeRNEADerivatives(pm, data, qv, vv, av_)
        Mp, _ = _pin_mats(pm, data)
        scale = 1.0 + np.abs(data.dtau_dq).max()
        assert_close(tq[b], data.dtau_dq[P], PIN_TOL * scale, what=f"{name} dtau/dq env {b}")
        assert_close(tv[b], data.dtau_dv[P], PIN_TOL * scale, what=f"{name} dtau/dqd env {b}")
        assert_close(M[b], Mp[P], PIN_TOL * scale, what=f"{name} M env {b}")
        pin.computeABADerivatives(pm, data, qv, vv, tv_)
        _, Minvp = _pin_mats(pm, data)
        scale = 1.0 + np.abs(data.ddq_dq).max()
        assert_close(aq[b], data.ddq_dq[P], PIN_TOL * scale, what=f"{name} dqdd/dq env {b}")
        assert_close(av[b], data.ddq_dv[P], PIN_TOL * scale, what=f"{name} dqdd/dqd env {b}")
        assert_close(Minv[b], Minvp[P], PIN_TOL * (1.0 + np.abs(Minvp).max()), what=f"{name} Minv env {b}")


@pytest.mark.parametrize("seed,free_root", [(0, False), (1, True), (4, True)])
def test_derivatives_of_random_trees_match_finite_differences(seed, free_root):
    """Branching trees in non-depth-first dof order, revolute and prismatic joints with
    arbitrary axes and anchors, fixed joints, a free root; damping and armature."""
    rng = np.random.default_rng(seed)
    model, _, _ = random_tree(rng, nbody=9, free_root=free_root)
    model = _damped(model, rng)
    q = simad.random_configuration(model, 1, rng)[0]
    qd, qdd, tau = rng.normal(size=(3, model.nv))
    tq, tv, M = simad.rnea_derivatives(model, q, qd, qdd)
    fd = tangent_fd(lambda x: simad.inverse_dynamics(model, x, qd, qdd), model, q).T
    assert_close(tq, fd, FD_TOL * np.abs(fd).max(), what="dtau/dq")
    eps = 1e-6
    fdv = np.array([(simad.inverse_dynamics(model, q, qd + eps * e, qdd) - simad.inverse_dynamics(model, q, qd - eps * e, qdd))
                    / (2 * eps) for e in np.eye(model.nv)]).T
    assert_close(tv, fdv, FD_TOL * np.abs(fdv).max(), what="dtau/dqd")
    assert_close(M, simad.mass_matrix(model, q), 1e-12 * np.abs(M).max(), what="M")
    aq, av, _ = simad.aba_derivatives(model, q, qd, tau)
    fda = tangent_fd(lambda x: simad.forward_dynamics(model, x, qd, tau), model, q).T
    assert_close(aq, fda, FD_TOL * np.abs(fda).max(), what="dqdd/dq")


def _damped(model, rng):
    """Damping, armature and joint springs (the springs act on the 1-dof joints only)."""
    return model.replace(dof_damping=rng.uniform(0.0, 0.5, model.nv), dof_armature=rng.uniform(0.0, 0.2, model.nv),
                         dof_stiffness=rng.uniform(0.0, 3.0, model.nv))


@pytest.mark.parametrize("name", ["arm7", "quadruped"])
def test_aba_derivatives_match_finite_differences_with_damping_and_armature(name, rng):
    model = _damped(models.load(name), rng)
    q = simad.random_configuration(model, 1, rng)[0]
    qd, tau = rng.normal(size=(2, model.nv))
    aq, av, Minv = simad.aba_derivatives(model, q, qd, tau)
    fdq = tangent_fd(lambda x: simad.forward_dynamics(model, x, qd, tau), model, q).T
    eps = 1e-6
    fdv = np.array([(simad.forward_dynamics(model, q, qd + eps * e, tau) - simad.forward_dynamics(model, q, qd - eps * e, tau))
                    / (2 * eps) for e in np.eye(model.nv)]).T
    assert_close(aq, fdq, FD_TOL * np.abs(fdq).max(), what=f"{name} dqdd/dq")
    assert_close(av, fdv, FD_TOL * np.abs(fdv).max(), what=f"{name} dqdd/dqd")
    M = simad.mass_matrix(model, q)
    assert_close(Minv @ M, np.eye(model.nv), 1e-10, what=f"{name} Minv M")
    # RNEA's derivatives at the same point, consistent with ABA's: dqdd/dx = -M^-1 dtau/dx
    a = simad.forward_dynamics(model, q, qd, tau)
    tq, tv, M2 = simad.rnea_derivatives(model, q, qd, a)
    assert_close(M2, M, 1e-12 * np.abs(M).max(), what=f"{name} M")
    assert_close(-Minv @ tq, aq, 1e-9 * (1 + np.abs(aq).max()), what=f"{name} -Minv dtau/dq")
    assert_close(-Minv @ tv, av, 1e-9 * (1 + np.abs(av).max()), what=f"{name} -Minv dtau/dqd")


def test_pendulum_derivative_is_the_analytic_one():
    """I qdd = -m g l sin(q) + tau: dqdd/dq = -m g l cos(q) / I, dqdd/dtau = 1 / I."""
    m, length, ic = 2.0, 0.7, 0.01
    b = simad.ModelBuilder("pendulum")
    b.add_body("bob", "world", mass=m, com=(0, 0, -length), inertia=(ic, ic, ic))
    b.add_joint("bob", "hinge", "revolute", axis=(0, 1, 0))
    model = b.finalize()
    inertia = ic + m * length**2
    for q in (0.0, 0.4, 2.0):
        aq, av, Minv = simad.aba_derivatives(model, [q], [0.3], [0.1])
        assert aq[0, 0] == pytest.approx(-m * 9.81 * length * np.cos(q) / inertia, rel=1e-12)
        assert av[0, 0] == pytest.approx(0.0, abs=1e-12)
        assert Minv[0, 0] == pytest.approx(1.0 / inertia, rel=1e-12)


def test_bad_input_names_the_field():
    model = models.load("arm7")
    with pytest.raises(simad.InputError) as e:
        simad.aba_derivatives(model, np.zeros(model.nq), np.zeros(3), np.zeros(model.nv))
    assert e.value.field == "qd"
    with pytest.raises(simad.InputError) as e:
        simad.rnea_derivatives(model, np.full(model.nq, np.nan), np.zeros(model.nv), np.zeros(model.nv))
    assert e.value.field == "q"


@pytest.mark.parametrize("free", [False, True])
def test_analytic_euler_linearization_equals_the_reverse_pass_one(free, rng):
    """``linearize``'s analytic semi-implicit Euler path against its exact reverse-pass path,
    at points with soft joint limits engaged (q outside the range) and controls clipped."""
    from test_rollout import rich_model  # noqa: PLC0415

    from simad.linearize import _points, _reverse_passes, linearize_euler  # noqa: PLC0415

    m = rich_model(rng, free)
    N, dt = 6, 0.01
    q = simad.random_configuration(m, N, rng)
    j1 = m.jnt_qadr[m.jnt_names.index("j1")]
    q[:3, j1] = [0.5, -0.45, 0.31]  # range (-0.3, 0.3): the soft limit acts
    qd = rng.normal(size=(N, m.nv))
    u = 1.5 * rng.normal(size=(N, m.nu))  # beyond the control ranges for some
    qp, _ = _points(m, q, m.nq, "q")
    A1, B1, s1 = linearize_euler(m, qp, qd, u, dt, 2e3, 20.0)
    A2, B2, s2 = _reverse_passes(m, qp, qd, u, dt, 0, 2e3, 20.0)
    assert not s1.any() and not s2.any()
    assert_close(A1, A2, 1e-11 * np.abs(A2).max(), what="A")
    assert_close(B1, B2, 1e-11 * np.abs(B2).max(), what="B")
    # the limit and the clip really are active at these points: their entries differ from free ones
    A0, B0, _ = linearize_euler(m, qp, qd, np.clip(u, -0.4, 0.4), dt, 0.0, 0.0)
    assert np.abs(A1 - A0).max() > 1e-3 and np.abs(B1 - B0).max() > 1e-3
