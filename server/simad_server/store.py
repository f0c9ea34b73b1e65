"""Durable model store: an embedded SQLite database in the server's data directory.

Two tables: ``sources`` holds each distinct model once, keyed by the model's content hash
(SHA-256 of every field), with the text or spec it was loaded from; ``models`` maps the ids
handed to clients to a source. Deleting an id removes the source when no id refers to it.
Every write is one transaction, so a crash never leaves a half-stored model.

Several server processes on one host may share a store (WAL mode: readers never wait for a
writer, and every read sees the last committed write of any process). The reads a server does
per call (``exists``, ``get``) are primary-key lookups that run to completion, so no read
transaction stays open between calls.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    content_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,            -- urdf | mjcf | spec | builtin
    source BLOB NOT NULL,          -- the text, the serialized ModelSpec, or the builtin name
    floating_base INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL REFERENCES sources(content_hash),
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class StoredModel:
    model_id: str
    content_hash: str
    name: str
    created_ms: int
    kind: str
    source: bytes
    floating_base: bool


def _record(r) -> StoredModel:
    return StoredModel(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), bool(r[6]))


class ModelStore:
    """Thread-safe (one connection behind a lock); ``path=None`` keeps everything in memory."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path is not None else ":memory:", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def put(self, model_id: str, content_hash: str, name: str, kind: str, source: bytes, floating_base: bool) -> int:
        """Stores a new id (and its source unless already present); returns created_ms."""
        now = int(time.time() * 1000)
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO sources VALUES (?, ?, ?, ?)", (content_hash, kind, source, int(floating_base))
            )
            self._db.execute("INSERT INTO models VALUES (?, ?, ?, ?)", (model_id, content_hash, name, now))
        return now

    def delete(self, model_id: str) -> bool:
        with self._lock, self._db:
            row = self._db.execute("SELECT content_hash FROM models WHERE model_id = ?", (model_id,)).fetchone()
            if row is None:
                return False
            self._db.execute("DELETE FROM models WHERE model_id = ?", (model_id,))
            self._db.execute(
                "DELETE FROM sources WHERE content_hash = ? AND NOT EXISTS "
                "(SELECT 1 FROM models WHERE content_hash = ?)", (row[0], row[0])
            )
        return True

    @property
    def shared(self) -> bool:
        """True for a file: another process may write it (an in-memory store is this process's only)."""
        return self.path is not None

    def exists(self, model_id: str) -> bool:
        """Whether the id is stored (one primary-key lookup; sees other processes' commits)."""
        with self._lock:
            return bool(self._db.execute("SELECT 1 FROM models WHERE model_id = ?", (model_id,)).fetchall())

    def get(self, model_id: str) -> StoredModel | None:
        """The stored id with its source, or None."""
        with self._lock:
            rows = self._db.execute(
                "SELECT m.model_id, m.content_hash, m.name, m.created_ms, s.kind, s.source, s.floating_base "
                "FROM models m JOIN sources s USING (content_hash) WHERE m.model_id = ?", (model_id,)
            ).fetchall()
        return _record(rows[0]) if rows else None

    def ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT model_id FROM models").fetchall()}

    def all(self) -> list[StoredModel]:
        with self._lock:
            rows = self._db.execute(
                "SELECT m.model_id, m.content_hash, m.name, m.created_ms, s.kind, s.source, s.floating_base "
                "FROM models m JOIN sources s USING (content_hash) ORDER BY m.created_ms, m.rowid"
            ).fetchall()
        return [_record(r) for r in rows]

    def count_sources(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM sources").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
