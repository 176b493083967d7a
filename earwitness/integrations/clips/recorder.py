"""Event audio clips: each event's audio, pre-roll included, kept in memory for the captioner.

A `ClipRecorder` is one stage of a source's pipeline. It keeps a ring buffer of the last
few seconds of audio; when an event starts, its clip begins `pre_roll_s` before the
event and then grows with every chunk until the event ends (trimmed to the event's end)
or the clip reaches `max_s` (then it is complete while the event goes on).

Every change of the event carries its clip in `details[CLIP_KEY]` (an in-memory object,
never serialised). With `clips.enabled`, a complete clip is also written as FLAC to
`<state_dir>/clips/` by the `ClipWriter` it is given (off the detection path), and the event
messages carry `clip`: null while the clip is recording, then its path.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from earwitness.config import ClipsConfig, Config
from earwitness.core.audio import SAMPLE_RATE
from earwitness.core.clips import CLIP_KEY, CLIP_PATH_KEY, EventClip
from earwitness.core.events import EventChange, SourceInfo
from earwitness.integrations.clips.writer import ClipWriter

LOOKBACK_MARGIN_S = 1.0


class _Ring:
    """The last `capacity` samples of a stream."""

    def __init__(self, capacity: int) -> None:
        self._buffer = np.zeros(max(1, capacity), dtype=np.float32)
        self.total = 0
        """Samples written since the stream began."""

    @property
    def oldest(self) -> int:
        return max(0, self.total - len(self._buffer))

    def write(self, chunk: np.ndarray) -> None:
        size = len(self._buffer)
        tail = chunk[-size:]
        start = (self.total + len(chunk) - len(tail)) % size
        first = min(len(tail), size - start)
        self._buffer[start : start + first] = tail[:first]
        self._buffer[: len(tail) - first] = tail[first:]
        self.total += len(chunk)

    def read(self, begin: int, end: int) -> np.ndarray:
        """Samples [begin, end) of the stream; `begin` must not be older than `oldest`."""
        size = len(self._buffer)
        begin, end = max(begin, self.oldest), min(end, self.total)
        if end <= begin:
            return np.zeros(0, dtype=np.float32)
        a, b = begin % size, end % size
        if a < b:
            return self._buffer[a:b].copy()
        return np.concatenate([self._buffer[a:], self._buffer[:b]])


class ClipRecorder:
    """A pipeline stage: fed every chunk and every event change of one source."""

    def __init__(self, config: ClipsConfig, source: SourceInfo, clips_dir: Path | None, lookback_s: float,
                 writer: ClipWriter) -> None:
        self._config = config
        self._writer = writer
        self._source = source
        self._dir = clips_dir if config.enabled else None
        self._pre_roll = int(round(config.pre_roll_s * SAMPLE_RATE))
        self._max = max(1, int(round(config.max_s * SAMPLE_RATE)))
        self._ring = _Ring(self._pre_roll + int(round((lookback_s + LOOKBACK_MARGIN_S) * SAMPLE_RATE)))
        self._open: dict[str, EventClip] = {}

    @classmethod
    def for_config(cls, config: Config, source: SourceInfo, writer: ClipWriter) -> ClipRecorder:
        """The recorder of one source's pipeline (a few seconds of ring buffer, plus open events' audio)."""
        events = config.events
        min_duration = max([events.defaults.min_duration_s]
                           + [label.min_duration_s or 0.0 for label in events.labels.values()])
        lookback_s = config.windows.length_s + config.windows.hop_s + min_duration
        clips_dir = config.resolved_state_dir() / "clips" if config.clips.enabled else None
        return cls(config.clips, source, clips_dir, lookback_s, writer)

    def feed(self, chunk: np.ndarray) -> None:
        """Every chunk of the stream, before the pipeline's windows see it."""
        if not len(chunk):
            return
        chunk = np.asarray(chunk, dtype=np.float32)
        self._ring.write(chunk)
        for clip in list(self._open.values()):
            if clip.append(chunk):
                self._complete(clip)

    def on_change(self, change: EventChange) -> EventChange:
        """Every event change, on its way to the sinks: starts clips, ends them, attaches them."""
        event = change.event
        clip = self._open.get(event.id)
        if clip is None and change.type == "start":
            clip = self._start(change)
        if change.type == "end":
            self._open.pop(event.id, None)
            if clip is not None and not clip.complete:
                end_s = event.end_s if event.end_s is not None else self._ring.total / SAMPLE_RATE
                clip.finish(int(round(end_s * SAMPLE_RATE)))
                self._write(clip)
        if clip is None:
            return change
        details = {**event.details, CLIP_KEY: clip}
        if self._dir is not None:
            details[CLIP_PATH_KEY] = str(clip.path) if clip.complete and clip.path is not None else None
        return EventChange(change.type, event.evolve(details=details))

    def _start(self, change: EventChange) -> EventClip:
        event = change.event
        event_sample = int(round(event.start_s * SAMPLE_RATE))
        start = max(0, event_sample - self._pre_roll, self._ring.oldest)
        path = self._dir / clip_file_name(change) if self._dir is not None else None
        clip = EventClip(event.id, start, event_sample, self._max, path)
        self._open[event.id] = clip
        if clip.append(self._ring.read(start, self._ring.total)):
            self._complete(clip)
        return clip

    def _complete(self, clip: EventClip) -> None:
        """The clip reached its maximum length while its event goes on."""
        clip.finish()
        self._write(clip)

    def _write(self, clip: EventClip) -> None:
        if self._dir is not None and clip.path is not None:
            self._writer.submit(clip.path, clip.audio(), self._config)


def clip_file_name(change: EventChange) -> str:
    event = change.event
    stamp = event.started_at.strftime("%Y%m%dT%H%M%S")
    safe = lambda text: re.sub(r"[^A-Za-z0-9_-]+", "_", text)  # noqa: E731
    return f"{stamp}Z_{safe(event.source.name)}_{safe(event.label)}_{event.id}.flac"
