"""Error types raised by the engine.

Every error names the offending field so a caller (or the gRPC layer, which maps these to
status codes) can say exactly what was wrong.
"""

from __future__ import annotations


class SimadError(Exception):
    """Base class of every error simad raises on purpose."""


class ModelError(SimadError, ValueError):
    """A model description is invalid.

    Attributes:
        element: the model element at fault, e.g. ``"joint 'elbow'"`` or ``"body 'link3'"``.
        field: the attribute of that element, e.g. ``"mass"`` or ``"parent"``.
    """

    def __init__(self, message: str, *, element: str = "", field: str = ""):
        self.element = element
        self.field = field
        where = " ".join(p for p in (element, f"field '{field}'" if field else "") if p)
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self):
        return (_rebuild_model_error, (self.args[0], self.element, self.field))


def _rebuild_model_error(text, element, field):
    err = ModelError.__new__(ModelError)
    Exception.__init__(err, text)
    err.element, err.field = element, field
    return err


class InputError(SimadError, ValueError):
    """An argument of an engine call is invalid (shape, dtype, non-finite value, range).

    Attributes:
        field: the argument at fault, e.g. ``"q"`` or ``"target_pos[3]"``.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")

    def __reduce__(self):
        return (InputError, (self.field, self.args[0].split(": ", 1)[-1]))


class NonFiniteError(SimadError, FloatingPointError):
    """A computation produced NaN or inf; names the first env, step and field where it appeared."""

    def __init__(self, field: str, env: int, step: int | None = None, detail: str = ""):
        self.field, self.env, self.step = field, env, step
        at = f"env {env}" + (f", step {step}" if step is not None else "")
        super().__init__(f"non-finite value in '{field}' at {at}" + (f": {detail}" if detail else ""))

    def __reduce__(self):
        return (NonFiniteError, (self.field, self.env, self.step))
