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
"""

from __future__ import annotations

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
        self._plans: dict = {}
        self.__name__ = getattr(kernel, "__name__", "kernel")
        self.__doc__ = kernel.__doc__

    def _key(self, args):
        key = []
        for kind, v in zip(self._kinds, args, strict=False):
            if kind == _TEMPLATE:
                key.append(v)
            elif kind == _ARRAY:
                if not (isinstance(v, np.ndarray) and v.flags.c_contiguous):
                    return None
                key.append((v.dtype.char, v.ndim))
        return tuple(key)

    def __call__(self, *args):
        if len(args) != len(self._kinds):
            raise TypeError(f"{self.__name__}: {len(self._kinds)} arguments needed, {len(args)} given")
        key = self._key(args)
        gen = runtime.config().generation
        plan = self._plans.get(key) if key is not None else None
        if plan is None or plan[0] != gen:
            self._kernel(*args)  # Taichi's own path: compiles or loads the variant, runs it
            if key is not None:
                prog = impl.get_runtime().prog
                t_kernel = self._primal.compiled_kernels[self._primal.ensure_compiled(*args)]
                self._plans[key] = (gen, t_kernel, prog.compile_kernel(prog.config(), prog.get_device_caps(), t_kernel))
            return None
        _, t_kernel, data = plan
        ctx = t_kernel.make_launch_context()
        i = 0
        for kind, v in zip(self._kinds, args, strict=False):
            if kind == _TEMPLATE:
                continue
            if kind == _ARRAY:
                ctx.set_arg_external_array_with_shape((i,), v.ctypes.data, v.nbytes, v.shape, 0)
            elif kind == _FLOAT:
                ctx.set_arg_float((i,), float(v))
            else:
                ctx.set_arg_int((i,), int(v))
            i += 1
        impl.get_runtime().prog.launch_kernel(data, ctx)
        return None


def fast_kernel(kernel) -> FastKernel:
    """Wraps a ``ti.kernel`` (arrays, scalars and template arguments; no return value)."""
    return FastKernel(kernel)
