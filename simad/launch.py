"""A faster launch path for the engine's Taichi kernels.

Taichi 1.7 spends its Python-side launch in generic work on every call: it re-derives the
compiled variant from every argument (``TaichiCallableTemplateMapper.lookup``), sets each array
through a general converter (torch and paddle checks, element shapes) and asks the program for
the compiled kernel again. Measured with cProfile on a one-point ``linearize`` (23 arrays):
about 20 us per array argument and 0.35 ms per call of lookup on this machine, for a kernel
that computes for ~15 us. The engine's calls are small and frequent (a controller's tick, a
service request), so that overhead is most of their latency.

``fast_kernel(kernel)`` keeps, per variant (the template arguments' values and the arrays'
dtype and rank), the compiled kernel and its argument kinds, and then sets the arguments
straight on the launch context. The first call of a variant, a non-contiguous array, or a
runtime re-initialisation takes Taichi's own path, which stays the reference.

On the CPU backend the launch context is also kept, per variant and thread, and an array
argument is set again only when it is not the object set last time (a weak reference, so no
array is kept alive) or its shape changed: most arguments are the model's device tables and
reused scratch buffers, and setting an array costs ~5-8 us here (``ndarray.ctypes`` and the
binding's shape conversion), against ~45 us for the launch of a one-point linearization. The
CPU launcher re-reads every array pointer from the context at each launch (Taichi 1.7,
``runtime/cpu/kernel_launcher.cpp``), so a kept context launches like a fresh one. Other
backends rewrite the context with device copies during the launch, so they get a fresh one
per call.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
from taichi.lang import impl
from taichi.types import ndarray_type, primitive_types
from taichi.types.annotations import template

from . import runtime

_TEMPLATE, _ARRAY, _FLOAT, _INT = range(4)


def _kind(annotation) -> int:
    if isinstance(annotation, template):
        return _TEMPLATE
    if isinstance(annotation, ndarray_type.NdarrayType):
        return _ARRAY
    if id(annotation) in primitive_types.real_type_ids:
        return _FLOAT
    if id(annotation) in primitive_types.integer_type_ids:
        return _INT
    raise TypeError(f"fast_kernel: unsupported argument annotation {annotation!r}")


class FastKernel:
    """Callable like the ``ti.kernel`` it wraps (same arguments, returns None)."""

    def __init__(self, kernel):
        self._kernel = kernel
        self._primal = kernel._primal
        self._kinds = tuple(_kind(a.annotation) for a in self._primal.arguments)
        slots = [(j, k) for j, k in enumerate(self._kinds) if k != _TEMPLATE]  # launch slot i: argument j
        self._templates = tuple(j for j, k in enumerate(self._kinds) if k == _TEMPLATE)
        self._arrays = tuple(j for j, k in enumerate(self._kinds) if k == _ARRAY)
        self._array_slots = tuple((i, j) for i, (j, k) in enumerate(slots) if k == _ARRAY)
        self._floats = tuple((i, j) for i, (j, k) in enumerate(slots) if k == _FLOAT)
        self._ints = tuple((i, j) for i, (j, k) in enumerate(slots) if k == _INT)
        self._plans: dict = {}
        self.__name__ = getattr(kernel, "__name__", "kernel")
        self.__doc__ = kernel.__doc__

    def _key(self, args):
        """The variant: template values, then each array's dtype and rank; None when an array
        argument is not a C-contiguous numpy array (Taichi's own path converts it)."""
        key = [args[j] for j in self._templates]
        for j in self._arrays:
            v = args[j]
            if type(v) is not np.ndarray or not v.flags.c_contiguous:
                return None
            key.append(v.dtype.char)
            key.append(v.ndim)
        return tuple(key)

    def __call__(self, *args):
        if len(args) != len(self._kinds):
            raise TypeError(f"{self.__name__}: {len(self._kinds)} arguments needed, {len(args)} given")
        key = self._key(args)
        cfg = runtime.config()
        plan = self._plans.get(key) if key is not None else None
        if plan is None or plan[0] != cfg.generation:
            self._kernel(*args)  # Taichi's own path: compiles or loads the variant, runs it
            if key is not None:
                prog = impl.get_runtime().prog
                t_kernel = self._primal.compiled_kernels[self._primal.ensure_compiled(*args)]
                data = prog.compile_kernel(prog.config(), prog.get_device_caps(), t_kernel)
                self._plans[key] = (cfg.generation, t_kernel, data, cfg.arch == "cpu", {})
            return None
        _, t_kernel, data, keep, kept = plan
        held = kept.get(threading.get_ident()) if keep else None
        if held is None:
            ctx, seen = t_kernel.make_launch_context(), [None] * len(args)
            if keep:
                kept[threading.get_ident()] = (ctx, seen)
        else:
            ctx, seen = held
        for i, j in self._array_slots:
            v = args[j]
            last = seen[j]
            if last is None or last[0]() is not v or last[1] != v.shape:
                ctx.set_arg_external_array_with_shape((i,), v.ctypes.data, v.nbytes, v.shape, 0)
                seen[j] = (weakref.ref(v), v.shape)
        for i, j in self._floats:
            ctx.set_arg_float((i,), float(args[j]))
        for i, j in self._ints:
            ctx.set_arg_int((i,), int(args[j]))
        impl.get_runtime().prog.launch_kernel(data, ctx)
        return None


def fast_kernel(kernel) -> FastKernel:
    """Wraps a ``ti.kernel`` (arrays, scalars and template arguments; no return value)."""
    return FastKernel(kernel)
