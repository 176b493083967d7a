"""Figures of the running daemon, kept up to date by the pipelines and read by `status`."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

SourceState = Literal["starting", "listening", "stalled", "disabled", "failed", "ended"]
RATE_WINDOW_S = 10.0


@dataclass
class SourceStats:
    """One source's state and throughput."""

    name: str
    location: str
    state: SourceState = "starting"
    error: str | None = None
    windows: int = 0
    dropped_frames: int = 0
    inference_ms: float = 0.0
    heard: Callable[[], dict[str, Any]] | None = field(default=None, repr=False)
    """Works out what the newest window heard (see daemon/hearing.py) when it is asked for: it is read at
    most once a second, and working it out for every window would cost a tenth of the model's run."""
    _recent: deque = field(default_factory=deque, repr=False)

    @property
    def hearing(self) -> dict[str, Any] | None:
        """What the newest window heard, or None before the first."""
        return self.heard() if self.heard is not None else None

    def record_window(self, inference_s: float) -> None:
        now = time.monotonic()
        self.windows += 1
        self.inference_ms = 0.9 * self.inference_ms + 0.1 * inference_s * 1000 if self.windows > 1 else inference_s * 1000
        self._recent.append(now)
        while self._recent and now - self._recent[0] > RATE_WINDOW_S:
            self._recent.popleft()

    def windows_per_second(self) -> float:
        if len(self._recent) < 2:
            return 0.0
        span = time.monotonic() - self._recent[0]
        return len(self._recent) / max(span, 1e-3)

    def snapshot(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "state": self.state,
            "error": self.error,
            "windows": self.windows,
            "windows_per_second": round(self.windows_per_second(), 2),
            "dropped_frames": self.dropped_frames,
            "inference_ms": round(self.inference_ms, 3),
            "hearing": self.hearing,
        }


@dataclass
class Health:
    """The whole daemon's figures: sources, sinks' own figures, and the last event."""

    sources: dict[str, SourceStats] = field(default_factory=dict)
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Supervised tasks and threads: state (running, restarting, failed, stopped), restarts, last error."""
    last_event: dict[str, Any] | None = None
    feedback: dict[str, Any] = field(default_factory=dict)
    """Feedback examples kept, and events kept quiet by them per source and label."""

    def source(self, name: str, location: str) -> SourceStats:
        stats = self.sources.get(name)
        if stats is None or stats.location != location:
            stats = self.sources[name] = SourceStats(name, location)
        return stats

    def snapshot(self) -> dict[str, Any]:
        return {
            "sources": {name: stats.snapshot() for name, stats in self.sources.items()},
            "sinks": dict(self.sinks),
            "tasks": {name: dict(figures) for name, figures in list(self.tasks.items())},
            "last_event": self.last_event,
            "feedback": dict(self.feedback),
        }
