"""One source's pipeline: chunks -> windows -> features -> detectors -> event tracker -> emit."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime

import numpy as np
import structlog

from earwitness import SAMPLE_RATE
from earwitness.config import Config
from earwitness.core.clocks import StreamClock
from earwitness.core.events import Event, EventChange, SourceInfo
from earwitness.core.health import SourceStats
from earwitness.core.windows import Detection, Window
from earwitness.daemon.hearing import hearing_of
from earwitness.detectors.base import Detector
from earwitness.detectors.frontend import Windower
from earwitness.detectors.gate import EnergyGate, level_dbfs
from earwitness.detectors.suppression import Decision
from earwitness.detectors.tracker import EventTracker, Gate
from earwitness.integrations.clips import ClipRecorder
from earwitness.logs import debug_enabled

log = structlog.get_logger(__name__)


class Pipeline:
    """Processes the audio of one source; events go to `emit` as they start, change and end."""

    def __init__(
        self,
        source: SourceInfo,
        config: Config,
        detectors: Sequence[Detector],
        emit: Callable[[EventChange], None],
        stats: SourceStats | None = None,
        clips: ClipRecorder | None = None,
        feedback_gate: Gate | None = None,
        on_suppressed: Callable[[Event, Decision], None] | None = None,
        labels_off: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        self.source = source
        self._feedback_gate = feedback_gate
        """Feedback: whether an event that would start is kept quiet (see detectors/suppression.py)."""
        self._on_suppressed = on_suppressed
        self._labels_off = labels_off
        """The labels switched off at this source: they score 0 (an open event of one ends)."""
        self._config = config
        self._detectors = list(detectors)
        self._emit = emit
        self._stats = stats
        self._clips = clips
        """Keeps each event's audio (pre-roll included) and attaches it to the event's changes."""
        frontend = next((d.frontend for d in self._detectors if d.frontend is not None), None)
        self._windower = Windower(config.windows.length_s, config.windows.hop_s, frontend)
        self._tracker: EventTracker | None = None
        self.observed_until_s = 0.0
        """Stream time up to which the tracker has seen the audio (the end of the newest window):
        when an event change is emitted, the time on the stream at which it could be sent."""
        self._clock = StreamClock()
        self._gate = EnergyGate(config.gate) if config.gate.enabled else None
        self._held: list[Window] = []
        """Windows the gate turned away, kept (copied) for `pre_roll_s`: scored if a later one passes."""
        self.windows_seen = 0
        self.windows_scored = 0
        """With the gate: how many windows the gated detectors ran on (the rest scored 0)."""

    def models(self) -> dict[str, str]:
        """The detector (name and version) that scores each label."""
        return {label: f"{d.name}-{d.version}" for d in self._detectors for label in d.labels}

    def process(self, chunk: np.ndarray, captured_at: float | None = None) -> None:
        """Feed one chunk of 16 kHz mono audio, captured at `captured_at` (epoch seconds; default: it has just
        arrived whole); may emit event changes."""
        duration_s = len(chunk) / SAMPLE_RATE
        self._clock.feed(duration_s, time.time() - duration_s if captured_at is None else captured_at)
        if self._tracker is None:
            self._tracker = self._new_tracker(self._clock.at(0.0))
        if self._clips is not None:
            self._clips.feed(chunk)
        windows = list(self._windower.push(chunk))
        if windows:
            self._process_windows(windows)

    def finish(self) -> None:
        """End every open event: the stream ended or the source was switched off."""
        if self._tracker is not None:
            if self._held:
                self._score_and_observe([(window, False) for window in self._held])
                self._held = []
            self._tracker.finish()
        for detector in self._detectors:
            detector.close()  # e.g. the anomaly detector persists its model

    def _new_tracker(self, started_at: datetime) -> EventTracker:
        defaults = {label: t for d in self._detectors for label, t in d.thresholds.items()}
        recommended = {label: s for d in self._detectors for label, s in d.event_settings.items()}
        emit = self._emit if self._clips is None else self._emit_with_clip
        return EventTracker(
            self.source, self._config.device_id, self._config.events, defaults, self.models(), recommended,
            started_at, emit, self._clock.at, self._feedback_gate, self._on_suppressed,
        )

    def _emit_with_clip(self, change: EventChange) -> None:
        assert self._clips is not None
        self._emit(self._clips.on_change(change))

    def _process_windows(self, windows: list[Window]) -> None:
        """Score the windows a chunk completed, then feed them to the tracker in order.

        Each detector scores them all in one call (one model run for a long chunk, as `detect` and
        `eval` read), given what the detectors before it found; the tracker still sees one window at a time."""
        self.windows_seen += len(windows)
        self._score_and_observe(self._gated(windows) if self._gate is not None else [(w, True) for w in windows])

    def _gated(self, windows: list[Window]) -> list[tuple[Window, bool]]:
        """(window, run the gated detectors) in stream order: a window the gate passes brings the held
        windows before it (its pre-roll) with it; a held window older than the pre-roll goes on unscored."""
        assert self._gate is not None
        hop = int(round(self._config.windows.hop_s * SAMPLE_RATE))
        keep = int(round(self._config.gate.pre_roll_s / self._config.windows.hop_s))
        decided: list[tuple[Window, bool]] = []
        for window in windows:
            if self._gate.admit(level_dbfs(window.audio[-hop:]), window.start_s):
                decided += [(held, True) for held in self._held] + [(window, True)]
                self._held = []
                continue
            self._held.append(_copy(window))  # the windower's views are reused by its next push
            while len(self._held) > keep:
                decided.append((self._held.pop(0), False))
        return decided

    def _score_and_observe(self, decided: list[tuple[Window, bool]]) -> None:
        assert self._tracker is not None
        if not decided:
            return
        began = time.perf_counter()
        windows = [window for window, _ in decided]
        runs = [run for _, run in decided]
        self.windows_scored += sum(runs)
        found = [Detection() for _ in windows]
        for detector in self._detectors:
            picked = [i for i, run in enumerate(runs) if run or self._gate is None or not detector.gated]
            if not picked:
                continue
            detections = detector.detect([windows[i] for i in picked], [found[i] for i in picked])
            for i, new in zip(picked, detections):
                found[i] = found[i].merged(new)
        off = self._labels_off() if self._labels_off is not None else frozenset()
        silent = {label: 0.0 for d in self._detectors for label in d.labels}
        if self._stats is not None:
            per_window_s = (time.perf_counter() - began) / len(decided)
            for _ in decided:
                self._stats.record_window(per_window_s)
        scores: dict[str, float] = {}
        for window, detection in zip(windows, found):
            # An event starting with this window is placed at its centre: the classifier fires a few
            # frames after a sound begins, and on the labelled recording the centre matches onsets best.
            at_s = window.start_s + window.duration_s / 2
            scores = self._scores(silent, detection, off)
            if debug_enabled():  # a call on the module's logger costs a bound logger even when it logs nothing
                log.debug("window", source=self.source.name, start_s=window.start_s, scores=scores)
            self.observed_until_s = window.end_s
            self._tracker.observe(scores, at_s, window.end_s, detection.details, detection.tail_embedding)
        if self._stats is not None:
            self._stats.heard = hearing_of(windows[-1], found[-1], scores, self._tracker.thresholds, off)

    @staticmethod
    def _scores(silent: dict[str, float], detection: Detection, off: frozenset[str]) -> dict[str, float]:
        """Every label's score for the tracker: 0 for one not scored and for one switched off at this source."""
        scores = {**silent, **detection.scores}
        for label in off & scores.keys():
            scores[label] = 0.0
        return scores


def _copy(window: Window) -> Window:
    features = window.features.detached()
    return Window(features.audio, window.start_s, features)
