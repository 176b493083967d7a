"""Stream time to wall-clock time: events carry when their sound was captured, not when it was processed."""

from __future__ import annotations

import bisect
from datetime import datetime, timezone

CLOCK_GAP_S = 1.0
"""Audio captured this much later than the stream's continuation marks a gap (a stalled device, a paused
pipe): the stream's wall clock is set again from it. Audio that comes earlier (a pipe faster than real
time, a device's jitter) keeps the stream continuous."""
CLOCK_ANCHORS = 256


class StreamClock:
    """When each point of a stream (seconds of audio since the pipeline began) was captured, so that
    event times are capture times, not the times the pipeline got to them."""

    def __init__(self) -> None:
        self._anchors: list[tuple[float, float]] = []
        """(stream seconds, epoch seconds) where the stream was (re)anchored to the wall clock, oldest first."""
        self._stream_s = 0.0

    def feed(self, duration_s: float, captured_at: float) -> None:
        if not self._anchors or captured_at - self._epoch(self._stream_s) > CLOCK_GAP_S:
            self._anchors.append((self._stream_s, captured_at))
            del self._anchors[:-CLOCK_ANCHORS]
        self._stream_s += duration_s

    def at(self, stream_s: float) -> datetime:
        return datetime.fromtimestamp(self._epoch(stream_s), timezone.utc)

    def _epoch(self, stream_s: float) -> float:
        index = max(0, bisect.bisect_right(self._anchors, (stream_s, float("inf"))) - 1)
        anchor_s, epoch = self._anchors[index]
        return epoch + (stream_s - anchor_s)
