"""Writes complete event clips as FLAC off the detection path, and keeps the clip directory within its limits.

One writer per daemon, made by the composition root and handed to every source's clip recorder; its
queue is bounded, so a disk that cannot keep up loses clips (counted, shown by `earwitness status`),
never alerts.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import structlog

from earwitness.config import ClipsConfig
from earwitness.core.audio import SAMPLE_RATE

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Job:
    path: Path
    audio: np.ndarray
    limits: ClipsConfig


class ClipWriter:
    """Writes FLAC clips off the detection path, then enforces the count, size and age limits.

    Its thread ends after a second without work (so it never holds the process open for long,
    and pending clips are still written at shutdown).
    """

    IDLE_S = 1.0
    MAX_PENDING = 16
    """Clips waiting to be written (up to 30 s of audio each); beyond it a clip is dropped and counted."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=max_pending)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        """Clips dropped because the writer fell behind (a slow or full disk)."""

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def submit(self, path: Path, audio: np.ndarray, limits: ClipsConfig) -> None:
        try:
            self._queue.put_nowait(_Job(path, audio, limits))
        except queue.Full:  # memory stays bounded: a disk that cannot keep up loses clips, never alerts
            self.dropped += 1
            log.warning("clip writer is behind, clip dropped", path=str(path), pending=self._queue.qsize(),
                        dropped_total=self.dropped)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="clip-writer")
                self._thread.start()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every submitted clip is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=self.IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            try:
                write_clip(job.path, job.audio)
                prune_clips(job.path.parent, job.limits)
            except Exception as error:
                log.error("clip not written", path=str(job.path), error=f"{type(error).__name__}: {error}")
            finally:
                self._queue.task_done()



def write_clip(path: Path, audio: np.ndarray) -> None:
    """Write 16 kHz mono FLAC atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(path.name + ".part")
    soundfile.write(str(partial), np.clip(audio, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(partial, path)
    log.debug("clip written", path=str(path), seconds=round(len(audio) / SAMPLE_RATE, 2))


def prune_clips(directory: Path, limits: ClipsConfig, now: float | None = None) -> int:
    """Delete clips older than `max_age_days`, then the oldest beyond `max_count` or `max_mb`; returns how many."""
    now = time.time() if now is None else now
    files = []
    for path in directory.glob("*.flac"):
        try:
            stat = path.stat()
        except OSError:
            continue
        files.append((stat.st_mtime, stat.st_size, path))
    files.sort()
    max_age_s = limits.max_age_days * 86400
    max_bytes = limits.max_mb * 1_000_000
    total = sum(size for _, size, _ in files)
    removed = {"age": 0, "count": 0, "size": 0}
    kept = len(files)
    for mtime, size, path in files:
        if now - mtime > max_age_s:
            reason = "age"
        elif kept > limits.max_count:
            reason = "count"
        elif total > max_bytes:
            reason = "size"
        else:
            break
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("clip not deleted", path=str(path), error=str(error))
            continue
        removed[reason] += 1
        kept -= 1
        total -= size
    dropped = sum(removed.values())
    if dropped:
        log.info("old clips deleted", directory=str(directory), **{f"by_{k}": v for k, v in removed.items() if v})
    return dropped
