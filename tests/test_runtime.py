"""Runtime: lazy initialisation, precision, compile-once-for-every-model."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from reference import random_tree

import simad
from simad import kinematics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.path.join(ROOT, "tests"))
    env.pop("SIMAD_PRECISION", None)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_bad_runtime_settings_are_rejected():
    with pytest.raises(simad.InputError) as e:
        simad.init(arch="tpu")
    assert e.value.field == "arch"
    with pytest.raises(simad.InputError) as e:
        simad.init(precision="f16")
    assert e.value.field == "precision"
    with pytest.raises(simad.InputError) as e:
        simad.init(compile="O3")
    assert e.value.field == "compile"


def test_spread_gives_every_cpu_thread_a_share_of_a_small_batch(monkeypatch):
    from simad import runtime

    cfg = runtime.config()
    monkeypatch.setattr(runtime, "_config", runtime.RuntimeConfig(**{**cfg.__dict__, "threads": 2}))
    # Taichi's CPU loops split into per-thread blocks of at least 512 iterations
    assert runtime.spread(256) == 4 and runtime.spread(3) == 342 and runtime.spread(1000) == 2
    assert runtime.spread(1024) == 1 and runtime.spread(5000) == 1
    assert kinematics.batch_mode(8) == (1, True) and kinematics.batch_mode(64) == (16, False)
    monkeypatch.setattr(runtime, "_config", runtime.RuntimeConfig(**{**cfg.__dict__, "threads": 1}))
    assert runtime.spread(256) == 1


def test_a_spread_batch_equals_its_envs_run_one_by_one(rng):
    """B = 40 runs the parallel kernels with 26 iterations per env (2 threads); every env must
    come out as when it runs alone (B = 1, the serial kernels)."""
    from simad import models

    m = models.load("quadruped")  # a free base and 12 motors
    B, T = 40, 6
    q = simad.random_configuration(m, B, rng)
    v = 0.3 * rng.normal(size=(B, m.nv))
    u = 0.2 * rng.normal(size=(B, T, m.nu))
    tau = rng.normal(size=(B, m.nv))
    pos, _ = simad.forward_kinematics(m, q)
    qdd = simad.forward_dynamics(m, q, v, tau)
    tr = simad.rollout(m, q, v, u, 1e-3)
    g = simad.rollout_vjp(m, q, v, u, 1e-3, q_bar=np.ones((B, T + 1, m.nq)))
    for b in (0, 13, 27, 39):
        np.testing.assert_allclose(simad.forward_kinematics(m, q[b])[0], pos[b], rtol=0, atol=1e-12)
        np.testing.assert_allclose(simad.forward_dynamics(m, q[b], v[b], tau[b]), qdd[b], rtol=1e-12, atol=1e-12)
        one = simad.rollout(m, q[b], v[b], u[b], 1e-3)
        np.testing.assert_allclose(one.q[0], tr.q[b], rtol=0, atol=1e-11)
        gb = simad.rollout_vjp(m, q[b:b + 1], v[b:b + 1], u[b:b + 1], 1e-3, q_bar=np.ones((1, T + 1, m.nq)))
        np.testing.assert_allclose(gb.controls[0], g.controls[b], rtol=1e-11, atol=1e-11)


def test_lazy_init_uses_cpu_f64_defaults():
    out = _run(
        """
        import numpy as np, simad
        from reference import random_tree
        m, _, _ = random_tree(np.random.default_rng(0), nbody=4)
        pos, rot = simad.forward_kinematics(m, np.zeros(m.nq))
        cfg = simad.runtime_config()
        print(cfg.arch, cfg.precision, pos.dtype)
        """
    )
    assert out.split() == ["cpu", "f64", "float64"]


def test_f32_precision_matches_f64_within_its_tolerance():
    out = _run(
        """
        import numpy as np, simad
        from reference import random_tree
        simad.init(precision="f32")
        m, _, _ = random_tree(np.random.default_rng(1), nbody=6, free_root=True)
        q = simad.random_configuration(m, 8, np.random.default_rng(2))
        pos, rot = simad.forward_kinematics(m, q)
        J = simad.frame_jacobian(m, q, m.nframe - 1)
        print(pos.dtype, J.dtype)
        print(repr(np.concatenate([pos.ravel(), J.ravel()]).astype(np.float64).tolist()))
        """
    )
    dtype_line, values = out.strip().split("\n", 1)
    assert dtype_line.split() == ["float32", "float32"]
    m, _, _ = random_tree(np.random.default_rng(1), nbody=6, free_root=True)
    q = simad.random_configuration(m, 8, np.random.default_rng(2))
    pos, _ = simad.forward_kinematics(m, q)
    J = simad.frame_jacobian(m, q, m.nframe - 1)
    ref = np.concatenate([pos.ravel(), J.ravel()])
    got = np.array(eval(values))
    assert np.abs(got - ref).max() < 2e-5 * max(1.0, np.abs(ref).max())


def test_a_new_model_does_not_compile_again():
    kernels = [kinematics._fk_kernel, kinematics._jacobian_kernel, kinematics._fk_vjp_kernel]
    rng = np.random.default_rng(0)
    m1, _, _ = random_tree(rng, nbody=5)
    q1 = simad.random_configuration(m1, 2, rng)
    simad.forward_kinematics(m1, q1)
    simad.frame_jacobian(m1, q1, 1)
    simad.forward_kinematics_vjp(m1, q1)
    before = [len(k._primal.compiled_kernels) for k in kernels]
    m2, _, _ = random_tree(rng, nbody=11, free_root=True, nsite=4)
    q2 = simad.random_configuration(m2, 2, rng)
    simad.forward_kinematics(m2, q2)
    simad.frame_jacobian(m2, q2, [1, 2, 3])
    simad.forward_kinematics_vjp(m2, q2)
    assert [len(k._primal.compiled_kernels) for k in kernels] == before


def _affine_kernel():
    import taichi as ti

    from simad.launch import fast_kernel

    @fast_kernel
    @ti.kernel
    def affine(a: ti.types.ndarray(ndim=2), out: ti.types.ndarray(ndim=2), s: float, k: ti.i32):
        for i, j in ti.ndrange(a.shape[0], a.shape[1]):
            out[i, j] = a[i, j] * s + k + 10.0 * j

    return affine


def _expect(a, s, k):
    return a * s + k + 10.0 * np.arange(a.shape[1])[None, :]


def test_the_fast_launch_sees_new_arrays_in_place_changes_and_reshapes():
    """The CPU launch keeps its context and sets again only the arrays that changed; a new
    object, one at a freed array's address, an in-place change of shape or contents must
    all reach the kernel."""
    simad.init()
    affine = _affine_kernel()
    a1, a2 = np.arange(12.0).reshape(3, 4), -np.arange(12.0).reshape(3, 4)
    out = np.zeros((3, 4))
    for a, s, k in ((a1, 2.0, 1), (a1, 2.0, 1), (a2, 3.0, 1), (a1, -1.0, 4)):  # the first two: Taichi's path, then the plan's
        affine(a, out, s, k)
        np.testing.assert_array_equal(out, _expect(a, s, k))
    a1 *= 5.0  # same object, new contents
    affine(a1, out, 1.0, 0)
    np.testing.assert_array_equal(out, _expect(a1, 1.0, 0))
    a1.shape, out.shape = (4, 3), (4, 3)  # same objects and memory, new shapes
    affine(a1, out, 1.0, 0)
    np.testing.assert_array_equal(out, _expect(a1, 1.0, 0))
    for i in range(30):  # fresh arrays every call: freed memory is handed out again
        a, o = np.full((2, 5), float(i)), np.zeros((2, 5))
        affine(a, o, 1.0, i)
        np.testing.assert_array_equal(o, _expect(a, 1.0, i))
        del a, o


def test_the_fast_launch_keeps_one_context_per_thread():
    import threading

    simad.init()
    affine = _affine_kernel()
    lock, errors = threading.Lock(), []

    def work(seed):
        rng = np.random.default_rng(seed)
        a, out = rng.normal(size=(3, 4)), np.zeros((3, 4))
        for i in range(40):
            a += 1.0
            with lock:  # Taichi's runtime is not for concurrent launches; the contexts are per thread
                affine(a, out, float(seed), i)
                got = out.copy()
            if not np.array_equal(got, _expect(a, float(seed), i)):
                errors.append((seed, i))

    threads = [threading.Thread(target=work, args=(s,)) for s in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


_BROKEN_KERNELS = """
import taichi as ti


@ti.func
def helper(x):
    y = x + 1.0
    if y > 0.0:
        for i in range(2):
            y += i
    return y * undefined_name_here


@ti.kernel
def first() -> ti.f64:
    return helper(1.0)


@ti.kernel
def second() -> ti.f64:
    return helper(2.0)
"""


def test_compile_errors_point_at_the_source_after_the_frontend_patches(tmp_path):
    # simad.runtime memoises Taichi's source excerpts and source lookups (frontend speed): the
    # error a kernel author sees must still name the file, the line and the offending token,
    # once per kernel that reaches it, with the memo shared between kernels
    import importlib.util

    import taichi as ti

    path = tmp_path / "broken_kernels.py"
    path.write_text(_BROKEN_KERNELS)
    spec = importlib.util.spec_from_file_location("broken_kernels", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    simad.init()
    from taichi.lang.ast.ast_transformer_utils import ASTTransformerContext

    assert getattr(ASTTransformerContext.get_pos_info, "_simad_patched", False) == (ti.__version__[:2] == (1, 7))
    messages = []
    for kernel, line in ((mod.first, 16), (mod.second, 21)):
        with pytest.raises(Exception) as e:
            kernel()
        msg = str(e.value)
        assert f'File "{path}", line {line}, in {kernel.__name__}' in msg
        assert f'File "{path}", line 11, in helper:\n    return y * undefined_name_here\n' \
               "               ^^^^^^^^^^^^^^^^^^^\n" in msg, msg
        assert 'Name "undefined_name_here" is not defined' in msg
        messages.append(msg.split("in helper:")[1])
    assert messages[0] == messages[1]


_CACHED_KERNELS = """
import numpy as np, simad
from simad import models
simad.init(arch="cpu", precision="f64")
m = models.planar_chain(2)
z = np.zeros((1, 2))
u = np.zeros((1, 3, 2))
cost = simad.QuadraticCost(terminal_q_weight=1.0)
for integrator in ("semi_implicit_euler", "rk4"):
    simad.value_and_grad(m, z, z, u, 0.01, cost, integrator=integrator)
    simad.linearize(m, z, z, u[:, 0], 0.01, integrator=integrator)
simad.rnea_derivatives(m, z, z, z)
simad.aba_derivatives(m, z, z, z)
"""


def test_a_second_process_loads_every_kernel_from_the_offline_cache(tmp_path):
    # the kernels that call real functions (reverse pass, linearizations, analytic derivatives):
    # Taichi keys its offline cache on their IR, dependencies included; a key that differs
    # between processes (it does for a callable calling two or more distinct real functions,
    # see derivatives.py) means a compile in about half of all processes. The key of such a
    # kernel takes one of two values at random, so two more processes catch a regression 3
    # times in 4 per kernel. Compile mode "fast": the key's determinism does not depend on it
    env = dict(os.environ, PYTHONPATH=ROOT, SIMAD_CACHE_DIR=str(tmp_path / "cache"), SIMAD_COMPILE="fast")
    env.pop("SIMAD_PRECISION", None)

    def kernels():
        out = subprocess.run([sys.executable, "-c", _CACHED_KERNELS], capture_output=True, text=True, env=env,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return sorted(p.name for p in (tmp_path / "cache").rglob("*.tic"))

    first = kernels()
    assert len(first) >= 6, first  # rollout, reverse, 2 linearizations, 2 derivatives
    for _ in range(2):
        assert kernels() == first
