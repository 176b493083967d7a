"""Recordings streamed through the daemon's own pipeline (windows, detectors, event tracker), as
`earwitness detect` streams a file, with every window's scores kept: what eval and the long day measure."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from earwitness import SAMPLE_RATE
from earwitness.core.windows import Detection, Window
from earwitness.detectors.base import Detector
from earwitness.training.data import Item


@dataclass
class RecordingResult:
    item: Item
    duration_s: float
    scores: dict[str, np.ndarray]  # label -> window scores
    onsets: np.ndarray  # where an event starting with each window is placed (recording time): its centre
    ends: np.ndarray
    events: list = field(default_factory=list)  # (label, start_s, end_s, peak)


class DetectorView:
    """A detector as the pipeline sees it (same name, labels, thresholds, event settings and
    frontend); subclasses see every window it scores."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.name, self.version = detector.name, detector.version
        self.labels, self.thresholds = detector.labels, detector.thresholds
        self.frontend = detector.frontend
        self.event_settings = detector.event_settings
        self.gated = detector.gated

    def close(self) -> None:
        self.detector.close()


class _Recorder(DetectorView):
    """Keeps every window's scores (the pipeline still sees the same detector)."""

    def __init__(self, detector) -> None:
        super().__init__(detector)
        self.rows: list[dict[str, float]] = []
        self.starts: list[float] = []
        self.lengths: list[float] = []

    def detect(self, windows: Sequence[Window], found: Sequence[Detection]) -> list[Detection]:
        detections = self.detector.detect(windows, found)
        for window, detection in zip(windows, detections):
            self.rows.append(dict(detection.scores))
            self.starts.append(window.start_s)
            self.lengths.append(len(window.audio) / SAMPLE_RATE)
        return detections


def run_recording(config, detector, path: Path, item: Item, failed: list[str] | None = None) -> RecordingResult:
    """Stream one recording through a fresh pipeline; collect window scores and events.

    A file that cannot be read (to its end) is reported on stderr and in `failed`; what was read counts."""
    return run_blocks(config, detector, item, _readable_blocks(path, failed))


def _readable_blocks(path: Path, failed: list[str] | None) -> Iterator[np.ndarray]:
    """The file's blocks up to where it cannot be read (a truncated or damaged file), which is reported."""
    from earwitness.daemon.sources import SourceUnavailable, read_audio_blocks

    try:
        yield from read_audio_blocks(path, 1.0)
    except SourceUnavailable as error:
        print(f"earwitness eval: {error}", file=sys.stderr)
        if failed is not None:
            failed.append(str(path))


def run_blocks(config, detector, item: Item, blocks: Iterable[np.ndarray],
               pad: Callable[[int], np.ndarray] | None = None) -> RecordingResult:
    """Stream audio blocks through a fresh pipeline, between `pad(n)` samples (default: silence)."""
    from earwitness.core.events import EventChange, SourceInfo
    from earwitness.daemon.pipeline import Pipeline

    pad = pad or (lambda n: np.zeros(n, np.float32))
    rec = _Recorder(detector)
    changes: list[EventChange] = []
    pipe = Pipeline(SourceInfo("eval", item.path), config, [rec], changes.append)
    lead_s = config.windows.length_s - config.windows.hop_s
    pipe.process(pad(int(round(lead_s * SAMPLE_RATE))))
    n = 0
    for block in blocks:
        n += len(block)
        pipe.process(block)
    pipe.process(pad(int(round(config.windows.length_s * SAMPLE_RATE))))
    pipe.finish()
    starts = np.array(rec.starts) - lead_s
    lengths = np.array(rec.lengths)
    scores = {lb: np.array([r[lb] for r in rec.rows]) for lb in detector.labels}
    events = [(c.event.label, c.event.start_s - lead_s, (c.event.end_s or c.event.start_s) - lead_s, c.event.score)
              for c in changes if c.type == "end"]
    return RecordingResult(item, n / SAMPLE_RATE, scores, starts + lengths / 2, starts + lengths, events)
