"""A durable, ordered outbox of MQTT messages for one hub (SQLite in WAL mode).

A message is written (and synced) before it is published, and deleted only once the
broker has acknowledged it; after a reconnect or a restart every pending message is
sent again, oldest first, byte for byte as it was first written (same ids, same
timestamps). A size limit and an age limit bound it: what exceeds them is dropped,
oldest first, and the count is logged.

The outbox never loses an alert to its own storage. When it cannot write (a full disk,
an I/O error) the message is kept in memory, in order with the others, and still sent;
the fault is logged loudly and counted, and the messages go to disk once it can write
again. A damaged file found at open is moved aside with a timestamp, what can be read of
it is salvaged into a fresh one. Ages are measured on the monotonic clock: a wall-clock
jump (a device without a battery-backed clock setting its time at boot) neither expires
nor reorders anything.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
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
PLAUSIBLE_EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()
"""A wall-clock time before this was written before the clock was set: its age is unknown."""
WRITE_FAULT_LOG_S = 60.0


@dataclass(frozen=True)
class Pending:
    """One message waiting for the broker's acknowledgement."""

    seq: int
    topic: str
    payload: bytes
    created_at: float
    """Wall-clock time (epoch seconds) it was written."""
    age_s: float = 0.0
    """How long it has waited, on the monotonic clock (for one from before a restart: since the restart,
    plus its wall-clock age when that is plausible)."""


class Outbox:
    """One hub's outbox; safe to use from several threads (one connection behind a lock)."""

    def __init__(self, path: Path, hub: str, max_messages: int, max_age_s: float) -> None:
        self.path = path
        self.hub = hub
        self.max_messages = max_messages
        self.max_age_s = max_age_s
        self.dropped = 0
        """Messages dropped for the limits since this outbox was opened."""
        self.write_failures = 0
        """Messages that could not be written to disk (kept in memory instead)."""
        self._lock = threading.Lock()
        self._memory: dict[int, Pending] = {}
        """Messages not (yet) on disk, in sequence order."""
        self._unacked_deletes: set[int] = set()
        """Acknowledged messages whose delete failed (full disk): never sent again, deleted later."""
        self._born: dict[int, float] = {}
        """Monotonic time each pending message was written (or found at open)."""
        self._last_fault_log = float("-inf")
        self._failing = False
        self._db: sqlite3.Connection | None = self._open()
        now_wall, now = time.time(), time.monotonic()
        rows = self._db.execute("SELECT seq, created_at FROM outbox").fetchall()
        for seq, created_at in rows:
            wall_age = now_wall - created_at
            plausible = created_at >= PLAUSIBLE_EPOCH and wall_age >= 0
            self._born[int(seq)] = now - (wall_age if plausible else 0.0)
        self._last_seq = int(self._db.execute(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0), "
            "COALESCE((SELECT MAX(seq) FROM outbox), 0))").fetchone()[0])

    # --- opening, and a damaged file -----------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect(check=True)
        except sqlite3.DatabaseError as error:
            if str(self.path) == ":memory:" or not _damaged(error):
                raise
            salvaged = self._move_aside_and_salvage(error)
        db = self._connect(check=False)
        with db:
            db.executemany("INSERT INTO outbox (seq, topic, payload, created_at) VALUES (?, ?, ?, ?)", salvaged)
        return db

    def _connect(self, check: bool) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=5.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            if check:
                problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
                if problems != ["ok"]:
                    raise _Damaged("; ".join(problems[:3]))
                db.execute("SELECT COUNT(*), MAX(seq), MIN(created_at) FROM outbox").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside_and_salvage(self, error: sqlite3.DatabaseError) -> list[tuple[int, str, bytes, float]]:
        """Rename the damaged file (and its WAL) to `<name>.damaged-<UTC time>` and read what can be read of it."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                source.rename(Path(f"{aside}{suffix}"))
        rows = _salvage(aside)
        log.error("mqtt outbox was damaged: moved aside, what could be read is salvaged, a fresh one starts",
                  hub=self.hub, error=str(error), moved_to=str(aside), salvaged=len(rows))
        return rows

    # --- the interface -------------------------------------------------------------------

    def add(self, topic: str, payload: bytes) -> int:
        """Write one message durably (in memory if the disk refuses); returns its sequence number."""
        self.expire()
        with self._lock:
            self._last_seq += 1
            message = Pending(self._last_seq, topic, payload, time.time())
            self._born[message.seq] = time.monotonic()
            self._memory[message.seq] = message
            self._write_memory()
            excess = self._depth() - self.max_messages
            if excess > 0:
                self._drop_oldest(excess)
        if excess > 0:
            self._dropped(excess, "size limit", max_messages=self.max_messages)
        return message.seq

    def after(self, seq: int, limit: int) -> list[Pending]:
        """Pending messages after `seq`, oldest first; messages past the age limit are dropped first."""
        self.expire()
        with self._lock:
            rows: list[tuple[int, str, bytes, float]] = []
            try:
                rows = self._require().execute(
                    "SELECT seq, topic, payload, created_at FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                    (seq, limit + len(self._unacked_deletes)),
                ).fetchall()
            except sqlite3.Error as error:
                self._fault("read", error)
            now = time.monotonic()
            found = [Pending(int(r[0]), r[1], bytes(r[2]), float(r[3])) for r in rows if int(r[0]) not in self._unacked_deletes]
            found += [m for s, m in self._memory.items() if s > seq]
            found.sort(key=lambda m: m.seq)
            return [Pending(m.seq, m.topic, m.payload, m.created_at, now - self._born.get(m.seq, now)) for m in found[:limit]]

    def newest(self) -> int:
        """The sequence number of the newest pending message (0 when none is)."""
        with self._lock:
            return max(self._born, default=0)

    def ack(self, seq: int) -> None:
        """The broker has the message: forget it."""
        with self._lock:
            self._born.pop(seq, None)
            if self._memory.pop(seq, None) is not None:
                return
            self._unacked_deletes.add(seq)
            self._delete_acked()

    def expire(self) -> int:
        """Drop messages older than the age limit (monotonic); returns how many."""
        now = time.monotonic()
        with self._lock:
            old = [seq for seq, born in self._born.items() if now - born > self.max_age_s]
            for seq in old:
                self._forget(seq)
        if old:
            self._dropped(len(old), "age limit", max_age_s=self.max_age_s)
        return len(old)

    def depth(self) -> int:
        with self._lock:
            return self._depth() if self._db is not None else 0

    @property
    def in_memory(self) -> int:
        """Messages kept in memory only, because the disk refused them."""
        return len(self._memory)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                if self._memory:
                    log.error("mqtt outbox closed with alerts that never reached the disk; they are lost",
                              hub=self.hub, count=len(self._memory))
                self._db.close()
                self._db = None

    # --- internals (with the lock held) -----------------------------------------------

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"the outbox of hub {self.hub} is closed")
        return self._db

    def _depth(self) -> int:
        return len(self._born)

    def _write_memory(self) -> None:
        """Move the messages kept in memory to disk, oldest first, as far as the disk allows."""
        db = self._require()
        written = 0
        for message in list(self._memory.values()):
            try:
                db.execute("INSERT INTO outbox (seq, topic, payload, created_at) VALUES (?, ?, ?, ?)",
                           (message.seq, message.topic, message.payload, message.created_at))
            except sqlite3.Error as error:
                self.write_failures += 1
                self._failing = True
                self._fault("write", error)
                return
            del self._memory[message.seq]
            written += 1
        if self._failing:
            self._failing, self._last_fault_log = False, float("-inf")
            log.warning("mqtt outbox writes to its file again", hub=self.hub, written=written)
        self._delete_acked()

    def _delete_acked(self) -> None:
        if not self._unacked_deletes:
            return
        try:
            self._require().executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in self._unacked_deletes])
            self._unacked_deletes.clear()
        except sqlite3.Error as error:
            self._fault("delete", error)

    def _forget(self, seq: int) -> None:
        self._born.pop(seq, None)
        if self._memory.pop(seq, None) is None:
            self._unacked_deletes.add(seq)
            self._delete_acked()

    def _drop_oldest(self, count: int) -> None:
        for seq in sorted(self._born)[:count]:
            self._forget(seq)

    def _fault(self, action: str, error: sqlite3.Error) -> None:
        """Loud, but once a minute: a full disk fails every write."""
        now = time.monotonic()
        if now - self._last_fault_log >= WRITE_FAULT_LOG_S:
            self._last_fault_log = now
            log.error(f"mqtt outbox cannot {action} its file: alerts are kept in memory and still sent",
                      hub=self.hub, path=str(self.path), error=str(error), in_memory=len(self._memory),
                      write_failures=self.write_failures)

    def _dropped(self, count: int, reason: str, **limits: float) -> None:
        self.dropped += count
        log.warning("mqtt outbox dropped messages", hub=self.hub, count=count, reason=reason, dropped_total=self.dropped, **limits)


class _Damaged(sqlite3.DatabaseError):
    """`PRAGMA quick_check` found damage."""


SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26
"""SQLite's primary result codes for a damaged file and a file that is no database (sqlite3 exports them
from Python 3.11 on)."""


def _damaged(error: sqlite3.DatabaseError) -> bool:
    """Damage (moved aside), as opposed to a fault of access or space (the file is left alone)."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, _Damaged) or (code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB))


def _salvage(path: Path) -> list[tuple[int, str, bytes, float]]:
    """The rows of a damaged outbox that can still be read: from the oldest on and from the newest back."""
    rows: dict[int, tuple[int, str, bytes, float]] = {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    try:
        for order in ("ASC", "DESC"):
            try:
                for row in db.execute(f"SELECT seq, topic, payload, created_at FROM outbox ORDER BY seq {order}"):
                    rows[int(row[0])] = (int(row[0]), str(row[1]), bytes(row[2]), float(row[3]))
            except (sqlite3.Error, TypeError, ValueError):
                continue
    finally:
        db.close()
    return [rows[seq] for seq in sorted(rows)]


def outbox_path(state_dir: Path, hub: str) -> Path:
    """Where a hub's outbox lives in the state directory."""
    return state_dir / "mqtt" / f"outbox-{hub}.sqlite3"
