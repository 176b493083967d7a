"""An event's audio, pre-roll included: made by the clip recorder, read by the captioner and the clip writer.

It travels in `Event.details[CLIP_KEY]` (in memory only; `Event.message` never serialises it).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import structlog

from earwitness.core.audio import SAMPLE_RATE

log = structlog.get_logger(__name__)

CLIP_KEY = "_clip"
"""`Event.details` key of the event's `EventClip` (in memory only; `Event.message` never serialises it)."""
CLIP_PATH_KEY = "clip_path"
"""`Event.details` key of the clip's file path (null until written); present only with `clips.enabled`."""


class EventClip:
    """The audio of one event, pre-roll included; thread-safe (the captioner reads it from its workers)."""

    def __init__(self, event_id: str, start_sample: int, event_sample: int, max_samples: int, path: Path | None) -> None:
        self.event_id = event_id
        self.start_sample = start_sample
        """Stream offset (in samples) of the clip's first sample."""
        self.pre_roll = max(0, event_sample - start_sample)
        """Samples before the event's start."""
        self.max_samples = max_samples
        self.path = path
        """Where the clip is (to be) written; None when clips are not written."""
        self.capped = False
        """True when the clip reached its maximum length before the event ended."""
        self._parts: list[np.ndarray] = []
        self._length = 0
        self._complete = False
        self._callbacks: list[Callable[[EventClip], None]] = []
        self._lock = threading.Lock()

    @property
    def complete(self) -> bool:
        return self._complete

    def __len__(self) -> int:
        return self._length

    @property
    def duration_s(self) -> float:
        return self._length / SAMPLE_RATE

    @property
    def event_duration_s(self) -> float:
        """The event's audio in the clip, pre-roll excluded."""
        return max(0, self._length - self.pre_roll) / SAMPLE_RATE

    def append(self, audio: np.ndarray) -> bool:
        """Add audio; returns True when this made the clip reach its maximum length."""
        with self._lock:
            if self._complete or not len(audio):
                return False
            room = self.max_samples - self._length
            part = np.array(audio[:room], dtype=np.float32)
            self._parts.append(part)
            self._length += len(part)
            if self._length >= self.max_samples:
                self.capped = True
                return True
            return False

    def finish(self, end_sample: int | None = None) -> None:
        """Mark the clip complete, trimmed to end before stream offset `end_sample`; runs the callbacks."""
        with self._lock:
            if self._complete:
                return
            if end_sample is not None:
                keep = max(0, min(self._length, end_sample - self.start_sample))
                if keep < self._length:
                    self._parts = [self._concat()[:keep]]
                    self._length = keep
            self._complete = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _run_callback(callback, self)

    def on_complete(self, callback: Callable[[EventClip], None]) -> None:
        """Call `callback(clip)` once the clip is complete (at once if it already is)."""
        with self._lock:
            if not self._complete:
                self._callbacks.append(callback)
                return
        _run_callback(callback, self)

    def audio(self, max_s: float | None = None) -> np.ndarray:
        """A copy of the clip's audio (16 kHz mono float32), at most its first `max_s` seconds."""
        with self._lock:
            audio = self._concat()
        if max_s is not None:
            audio = audio[: int(round(max_s * SAMPLE_RATE))]
        return audio.copy()

    def levels(self) -> dict[str, float | None]:
        """Loudness of the event's audio: peak and RMS in dBFS, and the RMS of the pre-roll (background)."""
        with self._lock:
            audio = self._concat()
        event, before = audio[self.pre_roll :], audio[: self.pre_roll]
        return {
            "peak_dbfs": _dbfs(float(np.max(np.abs(event)))) if len(event) else None,
            "rms_dbfs": _dbfs(_rms(event)) if len(event) else None,
            "background_dbfs": _dbfs(_rms(before)) if len(before) else None,
        }

    def _concat(self) -> np.ndarray:
        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts)]
        return self._parts[0] if self._parts else np.zeros(0, dtype=np.float32)


def _run_callback(callback: Callable[[EventClip], None], clip: EventClip) -> None:
    try:
        callback(clip)
    except Exception:
        log.exception("clip callback failed", id=clip.event_id)


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def _dbfs(value: float) -> float:
    return round(20.0 * math.log10(max(value, 1e-10)), 1)
