"""Engine and wire errors -> gRPC status codes with the request field named (STYLE.md 12)."""

from __future__ import annotations

import logging
import re

import grpc
from google.protobuf.message import DecodeError
from simad_client.errors import FIELD_KEY, WireError

import simad

log = logging.getLogger("simad.server")
_BASE = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*")

# engine argument names -> request field paths, for calls that take a RolloutSpec
ROLLOUT_FIELDS = {
    "q0": "rollout.q0", "qd0": "rollout.qd0", "controls": "rollout.controls", "dt": "rollout.dt",
    "integrator": "rollout.integrator", "gains": "rollout.feedback.gains", "q_ref": "rollout.feedback.q_ref",
    "qd_ref": "rollout.feedback.qd_ref", "limit_stiffness": "rollout.limit_stiffness",
    "limit_damping": "rollout.limit_damping", "params": "options.params", "memory_budget": "options.memory_budget_bytes",
    "checkpoint_every": "options.checkpoint_every", "clip_norm": "options.clip_norm",
    "policy": "rollout.policy", "steps": "rollout.steps", "model_id": "rollout.model_id", "contact": "rollout.contact",
    # a ModelError during such a call comes from the per-call parameter overrides
    "__model__": "rollout.param_overrides[{}]",
}

# engine argument names of simad.contact_rollout / contact_vjp / contact_value_and_grad -> request
# field paths (ContactRolloutSpec under "rollout"): the engine's ``contact=`` options are the
# request's ``rollout.options``, so "contact.iterations" is reported as "rollout.options.iterations"
CONTACT_FIELDS = {
    "q0": "rollout.q0", "qd0": "rollout.qd0", "controls": "rollout.controls", "steps": "rollout.steps",
    "dt": "rollout.dt", "contact": "rollout.options", "model": "rollout.model_id", "model_id": "rollout.model_id",
    "q_bar": "q_bar",
    "qd_bar": "qd_bar", "params": "params", "cost": "cost",
}


def rename(field: str, fields: dict | None, prefix: str = "") -> str:
    """Maps an engine field ("q0[2, 3:7]", "q_weight") to the request's path ("rollout.q0[2, 3:7]")."""
    m = _BASE.match(field or "")
    if not m:
        return field
    base = m.group(0)
    if fields and base in fields:
        return fields[base] + field[m.end():]
    return prefix + field if prefix else field


def status_of(exc: BaseException, fields: dict | None = None, prefix: str = "") -> tuple[grpc.StatusCode, str, str]:
    """(code, message, field) for an exception raised while serving a call."""
    if isinstance(exc, DecodeError):  # a stream message that is not the declared protobuf type
        return grpc.StatusCode.INVALID_ARGUMENT, f"malformed message: {exc}", "body"
    if isinstance(exc, WireError):
        field = exc.field
        if field == "model_id" and fields and "model_id" in fields:  # e.g. the worker's NOT_FOUND of a deleted model
            field = fields["model_id"]
        return getattr(grpc.StatusCode, exc.code, grpc.StatusCode.UNKNOWN), exc.message, field
    if isinstance(exc, simad.NonFiniteError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field
    if isinstance(exc, simad.InputError):
        field = rename(exc.field, fields, prefix)
        msg = str(exc).split(": ", 1)[-1]
        return grpc.StatusCode.INVALID_ARGUMENT, msg, field
    if isinstance(exc, simad.ModelError):
        template = (fields or {}).get("__model__")
        if template and exc.field:
            return grpc.StatusCode.INVALID_ARGUMENT, str(exc), template.format(exc.field)
        field = prefix.rstrip(".") or "model"
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), field + (f".{exc.field}" if exc.field else "")
    log.exception("internal error")
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); this is a bug in simad, please report it", ""


def _printable(text: str) -> str:
    """Metadata values must be printable ASCII: escape anything else (a client may send any name)."""
    out = text.encode("ascii", "backslashreplace").decode("ascii")
    return "".join(c if 32 <= ord(c) < 127 else f"\\x{ord(c):02x}" for c in out)


async def abort(context, code: grpc.StatusCode, message: str, field: str):
    if field:
        field = _printable(field)
        context.set_trailing_metadata(((FIELD_KEY, field),))
    await context.abort(code, f"{field}: {message}" if field else message)
