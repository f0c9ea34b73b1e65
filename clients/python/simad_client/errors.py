"""The one error type of the client, and the metadata convention that carries the field."""

from __future__ import annotations

# Trailing-metadata key naming the request field at fault (e.g. "rollout.q0").
FIELD_KEY = "simad-field"


class WireError(Exception):
    """A failed simad call: gRPC status code name, message and the field at fault.

    Attributes:
        code: status code name, e.g. "INVALID_ARGUMENT", "NOT_FOUND", "UNAUTHENTICATED".
        message: the server's explanation ("expected shape (4, 7), got (4, 6)").
        field: the request field at fault ("rollout.q0"), or "" when not about one field.
    Picklable, so it crosses process boundaries (multiprocessing, Ray, ...).
    """

    def __init__(self, code: str, message: str, field: str = ""):
        self.code, self.message, self.field = str(code), str(message), str(field)
        super().__init__(f"{self.code}: {self.field + ': ' if self.field else ''}{self.message}")

    def __reduce__(self):
        return (WireError, (self.code, self.message, self.field))
