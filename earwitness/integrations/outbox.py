"""A durable, ordered outbox of MQTT messages for one hub (SQLite in WAL mode).

A message is written (and synced) before it is published, and deleted only once the
broker has acknowledged it; after a reconnect or a restart every pending message is
sent again, oldest first, byte for byte as it was first written (same ids, same
timestamps). A size limit and an age limit bound it: what exceeds them is dropped,
oldest first, and the count is logged.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Pending:
    """One message waiting for the broker's acknowledgement."""

    seq: int
    topic: str
    payload: bytes
    created_at: float
    """Wall-clock time (epoch seconds) it was written."""


class Outbox:
    """One hub's outbox; safe to use from several threads (one connection behind a lock)."""

    def __init__(self, path: Path, hub: str, max_messages: int, max_age_s: float) -> None:
        self.path = path
        self.hub = hub
        self.max_messages = max_messages
        self.max_age_s = max_age_s
        self.dropped = 0
        """Messages dropped for the limits since this outbox was opened."""
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection | None = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def add(self, topic: str, payload: bytes) -> int:
        """Write one message durably; returns its sequence number. Enforces the size limit."""
        with self._lock:
            db = self._require()
            cursor = db.execute(
                "INSERT INTO outbox (topic, payload, created_at) VALUES (?, ?, ?)", (topic, payload, time.time())
            )
            seq = int(cursor.lastrowid or 0)
            excess = self._count(db) - self.max_messages
            if excess > 0:
                db.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (excess,))
        if excess > 0:
            self._dropped(excess, "size limit", max_messages=self.max_messages)
        return seq

    def after(self, seq: int, limit: int) -> list[Pending]:
        """Pending messages after `seq`, oldest first; messages past the age limit are dropped first."""
        self.expire()
        with self._lock:
            rows = self._require().execute(
                "SELECT seq, topic, payload, created_at FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
        return [Pending(int(r[0]), r[1], bytes(r[2]), float(r[3])) for r in rows]

    def newest(self) -> int:
        """The sequence number of the newest message (0 when empty)."""
        with self._lock:
            return int(self._require().execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0])

    def ack(self, seq: int) -> None:
        """The broker has the message: forget it."""
        with self._lock:
            self._require().execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def expire(self) -> int:
        """Drop messages older than the age limit; returns how many."""
        with self._lock:
            cursor = self._require().execute("DELETE FROM outbox WHERE created_at < ?", (time.time() - self.max_age_s,))
            count = cursor.rowcount
        if count > 0:
            self._dropped(count, "age limit", max_age_s=self.max_age_s)
        return max(count, 0)

    def depth(self) -> int:
        with self._lock:
            return self._count(self._require()) if self._db is not None else 0

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"the outbox of hub {self.hub} is closed")
        return self._db

    @staticmethod
    def _count(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def _dropped(self, count: int, reason: str, **limits: float) -> None:
        self.dropped += count
        log.warning("mqtt outbox dropped messages", hub=self.hub, count=count, reason=reason, dropped_total=self.dropped, **limits)


def outbox_path(state_dir: Path, hub: str) -> Path:
    """Where a hub's outbox lives in the state directory."""
    return state_dir / "mqtt" / f"outbox-{hub}.sqlite3"
