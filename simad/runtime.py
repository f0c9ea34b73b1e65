"""The process-wide Taichi runtime: backend, precision, caches, and per-model device data.

Taichi's backend and default float type are process settings (``ti.init``), and its runtime
is not thread-safe: one thread owns it. ``init`` is called by entry points (server, CLI,
tests); every engine call initialises lazily with the defaults (``SIMAD_ARCH``,
``SIMAD_PRECISION`` environment variables, else cpu / f64).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import threading
import weakref
from dataclasses import dataclass

import numpy as np
import taichi as ti

from .errors import InputError


def _patch_inlined_functions_in_real_functions() -> None:
    """Taichi 1.7's frontend builds an inlined ``ti.func`` into the *kernel's* AST builder even
    while it compiles a ``ti.real_func`` (which has a builder of its own), so the inlined
    function's ``if`` and ``for`` statements land in the wrong function: conditions act as
    always true, loops compute nothing or crash (taichi-dev/taichi issue 8514, open; measured
    here on 1.7.4). Every other construct asks for the builder of the callable being compiled
    (``runtime.compiling_callable``); this makes the inlining path ask for it too. Outside
    real functions the builder is the kernel's, as before."""
    from taichi.lang import impl, kernel_impl

    original = kernel_impl.Kernel.ast_builder
    if getattr(original, "_simad_patched", False):
        return

    def ast_builder(self):
        compiling = impl.get_runtime().compiling_callable
        return compiling.ast_builder() if compiling is not None else original(self)

    ast_builder._simad_patched = True
    kernel_impl.Kernel.ast_builder = ast_builder


def _patch_position_info() -> None:
    """Taichi's frontend formats a source excerpt with a caret line (``get_pos_info``: textwrap
    on the line and on the caret) for *every* AST node it builds, for its error messages, also
    when it only needs the kernel's IR to look it up in the offline cache. Static unrolling and
    inlining build the same nodes again and again (280 k calls for the service's warm-up): 40 %
    of a cached warm-up's 62 s under cProfile. This memoises the excerpt by what it is made of
    (function, node position, the source lines shown): the same text, once per position."""
    from taichi.lang.ast import ast_transformer_utils as atu

    ctx_cls = atu.ASTTransformerContext
    original = ctx_cls.get_pos_info
    if getattr(original, "_simad_patched", False):
        return
    memo: dict = {}
    multiline_ends_at_body = ("For", "While", "FunctionDef", "If")

    def get_pos_info(self, node):
        lineno, end_lineno = node.lineno, node.end_lineno
        if lineno == end_lineno or end_lineno is None:
            last = lineno
        elif node.__class__.__name__ in multiline_ends_at_body:
            last = max(node.body[0].lineno - 1, lineno)
        else:
            last = end_lineno
        key = (self.file, self.lineno_offset, self.indent, self.func.func.__name__, lineno, end_lineno,
               node.col_offset, node.end_col_offset, last, tuple(self.src[lineno - 1:last]))
        info = memo.get(key)
        if info is None:
            if len(memo) > 200_000:  # bounded: a long-lived process compiling many distinct kernels
                memo.clear()
            info = memo[key] = original(self, node)
        return info

    get_pos_info._simad_patched = True
    get_pos_info._simad_original = original
    ctx_cls.get_pos_info = get_pos_info


def _patch_source_lookup() -> None:
    """The frontend looks a function's source up again (``inspect``: module lookup, tokenizing
    the file's block) each time it inlines the function: 2,254 times in the service's warm-up,
    ~10 % of a cached warm-up. Source files do not change under a running process, so the
    lookup is kept per function object."""
    from taichi.lang import kernel_impl

    if getattr(kernel_impl.getsourcelines, "_simad_patched", False):
        return
    lines = functools.cache(kernel_impl.getsourcelines)
    getsourcefile = functools.cache(kernel_impl.getsourcefile)

    def getsourcelines(obj):
        src, start = lines(obj)
        return list(src), start  # the caller's own list

    getsourcelines._simad_patched = True
    kernel_impl.getsourcelines, kernel_impl.getsourcefile = getsourcelines, getsourcefile


if ti.__version__[:2] == (1, 7):
    _patch_inlined_functions_in_real_functions()
    _patch_position_info()
    _patch_source_lookup()

_ARCHES = ("cpu", "gpu", "cuda", "vulkan", "metal")
_PRECISIONS = {"f64": np.float64, "f32": np.float32}
# Taichi compile settings per mode. Measured on the fused rollout / value_and_grad / linearize
# kernels (cold offline cache, f64, this 2-core CPU; numbers in the README):
# - "max": every Taichi IR pass. Its control-flow-graph optimisation is quadratic in kernel
#   size: 23 s / 274 s / 206 s to compile, and no faster at run time than "balanced".
# - "balanced" (default): cfg_optimization off: 5 s / 42 s / 39 s, same run time.
# - "fast": advanced_optimization off: 3 s / 14 s / 10 s, but kernels run ~1.5x slower, and
#   round differently (a 20,000-step arm rollout: 1e-11 relative from "balanced").
_COMPILE_MODES = {
    "max": {},
    "balanced": {"cfg_optimization": False},
    "fast": {"advanced_optimization": False},
}
# Taichi's reverse mode keeps loop-carried scalars on a stack of this depth. Differentiated
# kernels in simad never carry values across more than a handful of iterations (see DESIGN.md
# section 1); it is set explicitly because the default size can segfault.
AD_STACK_SIZE = 256


@dataclass(frozen=True)
class RuntimeConfig:
    arch: str
    precision: str
    compile: str
    offline_cache: bool
    debug: bool
    generation: int  # increases at every (re-)initialisation; device caches key on it
    threads: int = 1  # CPU worker threads of Taichi's parallel loops (1 on other arches)

    @property
    def dtype(self) -> type:
        return _PRECISIONS[self.precision]


_lock = threading.RLock()
_config: RuntimeConfig | None = None
_generation = 0


def init(
    arch: str | None = None,
    precision: str | None = None,
    *,
    compile: str | None = None,
    offline_cache: bool = True,
    cache_dir: str | None = None,
    debug: bool = False,
    num_threads: int | None = None,
) -> RuntimeConfig:
    """Initialises (or re-initialises) the Taichi runtime for this process.

    Args:
        arch: "cpu" (default), "gpu" (CUDA or Vulkan, whichever is present), "cuda", "vulkan",
            "metal". Env var ``SIMAD_ARCH``.
        precision: "f64" (default) or "f32": the float type of every kernel. Env var
            ``SIMAD_PRECISION``.
        compile: how hard Taichi optimises kernels: "balanced" (default), "fast" (compiles
            ~3x faster, runs ~1.5x slower: quick scripts, CI) or "max" (all passes: compiles
            5-7x slower for no measured run-time gain). Env var ``SIMAD_COMPILE``.
        offline_cache: keep compiled kernels on disk across processes (``SIMAD_CACHE_DIR``,
            default Taichi's own cache directory).
        debug: Taichi's debug mode (bounds and autodiff access-rule checks; slow).
        num_threads: CPU worker threads (default: all cores).

    Re-initialising invalidates every Taichi ndarray made before; simad's own caches are
    keyed by generation and rebuild themselves.
    """
    global _config, _generation
    import taichi as ti

    arch = (arch or os.environ.get("SIMAD_ARCH") or "cpu").lower()
    precision = (precision or os.environ.get("SIMAD_PRECISION") or "f64").lower()
    compile = (compile or os.environ.get("SIMAD_COMPILE") or "balanced").lower()
    if arch not in _ARCHES:
        raise InputError("arch", f"expected one of {_ARCHES}, got '{arch}'")
    if precision not in _PRECISIONS:
        raise InputError("precision", f"expected one of {tuple(_PRECISIONS)}, got '{precision}'")
    if compile not in _COMPILE_MODES:
        raise InputError("compile", f"expected one of {tuple(_COMPILE_MODES)}, got '{compile}'")
    with _lock:
        if (
            _config is not None
            and (_config.arch, _config.precision, _config.compile, _config.offline_cache, _config.debug)
            == (arch, precision, compile, offline_cache, debug)
        ):
            return _config
        ti_arch = {"cpu": ti.cpu, "gpu": ti.gpu, "cuda": ti.cuda, "vulkan": ti.vulkan, "metal": ti.metal}[arch]
        kwargs = dict(
            arch=ti_arch,
            default_fp=ti.f64 if precision == "f64" else ti.f32,
            default_ip=ti.i32,
            ad_stack_size=AD_STACK_SIZE,
            offline_cache=offline_cache,
            debug=debug,
            log_level=ti.WARN,
            check_out_of_bound=debug,
            unrolling_limit=0,  # the 6x6 spatial-inertia unrolls are deliberate: no warning per kernel
            **_COMPILE_MODES[compile],
        )
        cache_dir = cache_dir or os.environ.get("SIMAD_CACHE_DIR")
        if cache_dir:
            kwargs["offline_cache_file_path"] = cache_dir
        if num_threads:
            kwargs["cpu_max_num_threads"] = int(num_threads)
        if _config is not None:
            ti.reset()
        with contextlib.redirect_stdout(io.StringIO()):  # ti.init prints a banner unconditionally
            ti.init(**kwargs)
        _generation += 1
        threads = int(ti.lang.impl.current_cfg().cpu_max_num_threads) if arch == "cpu" else 1
        _config = RuntimeConfig(arch, precision, compile, offline_cache, debug, _generation, max(threads, 1))
        return _config


# Taichi 1.7's CPU backend runs a parallel range-for as one contiguous block of iterations per
# thread, but never a block shorter than 512 iterations (the minimal block range of its
# make_cpu_multithreaded_range_for pass). A loop over fewer than 1024 envs therefore ran on ONE
# thread (measured here: B = 256 envs of a compute-bound loop, 0.085 s "parallel" and serial
# alike; the same work spread over 1024 iterations, 0.044 s). The batch kernels loop over
# B * spread(B) iterations and work on every spread-th one, so each thread gets its share of
# the envs; the empty iterations cost ~1 ns each.
CPU_MIN_BLOCK = 512


def spread(B: int) -> int:
    """Iterations per env of a parallel batch loop (1 off the CPU or when B is large enough)."""
    threads = config().threads
    if threads <= 1 or B <= 0:
        return 1
    need = CPU_MIN_BLOCK * threads
    return 1 if B >= need else -(-need // B)


def config() -> RuntimeConfig:
    """The current runtime configuration, initialising with the defaults if needed."""
    cfg = _config
    return cfg if cfg is not None else init()


def real_dtype() -> type:
    """numpy float type of the kernels (np.float64 or np.float32)."""
    return config().dtype


# ---------------------------------------------------------------------------------------------
# Per-model device data: the topology and parameters packed into two arrays so that a kernel
# launch passes few arguments (each ndarray argument costs ~5 us of Python launch overhead).
# ---------------------------------------------------------------------------------------------
_device_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def device_data(model, builder, key: str):
    """Returns ``builder(model, dtype)`` cached per (model, runtime generation, key)."""
    cfg = config()
    per_model = _device_cache.setdefault(model, {})
    k = (key, cfg.generation)
    hit = per_model.get(k)
    if hit is None:
        for old in [kk for kk in per_model if kk[0] == key and kk[1] != cfg.generation]:
            del per_model[old]
        hit = builder(model, cfg.dtype)
        per_model[k] = hit
    return hit
