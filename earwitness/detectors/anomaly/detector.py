"""The `anomaly` detector: learns each source's normal sound, scores what does not belong.

It runs after the classifier and reuses the penultimate embedding of the classifier's
`Detection` (so no second network runs), plus two cheap signal
features: the window's level (dBFS) and its spectral flux. Without a classifier in front
it falls back to the window's log-mel spectral shape. The model of normal, its learning
period, adaptation and habituation are in `model`, its budget threshold in `threshold`, the
feature vector in `features`, its state on disk in `persistence`.

State is kept per source in `<state_dir>/anomaly/<source>.npz`: saved every
`save_interval_s` of audio (written and synced by a writer thread, off the event loop) and
when the pipeline finishes, reloaded on start. A state file
that cannot be used is logged, moved aside (`.corrupt`) and the model learns afresh.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from earwitness.config.detectors import AnomalyDetectorConfig
from earwitness.core.files import write_atomically
from earwitness.core.windows import Detection, Window
from earwitness.detectors.anomaly.features import (
    clipped_level,
    feature_vector,
    label_features,
    logmel_shape,
    params_from_config,
    signal_features,
)
from earwitness.detectors.anomaly.model import NormalModel
from earwitness.detectors.anomaly.persistence import StateError, load_model, serialize
from earwitness.detectors.base import DetectorContext
from earwitness.detectors.frontend import LogMel

log = structlog.get_logger(__name__)

VERSION = "1"


class AnomalyDetector:
    """Detector protocol implementation; one instance (and one model) per source."""

    name = "anomaly"
    gated = True
    version = VERSION

    def __init__(self, config: AnomalyDetectorConfig, context: DetectorContext | None = None) -> None:
        self.config = config
        self.label = config.label
        self.labels = (config.label,)
        self.thresholds = {config.label: 0.5}
        self.frontend = LogMel()
        self.event_settings: dict[str, dict[str, float]] = {}
        self.source = context.source if context is not None else "default"
        self.known_thresholds: dict[str, float] = dict(context.thresholds) if context is not None else {}
        state_dir = context.state_dir if context is not None else None
        self.state_path: Path | None = (
            Path(state_dir) / "anomaly" / f"{self.source}.npz" if state_dir is not None and config.persist else None
        )
        self.params = params_from_config(config)
        self.model = self._load()
        self._last_start_s: float | None = None
        self._since_save_s = 0.0
        self._writer: ThreadPoolExecutor | None = None

    # -- state ----------------------------------------------------------------------------------
    def _load(self) -> NormalModel:
        path = self.state_path
        if path is None or not path.exists():
            return NormalModel(self.params)
        try:
            model = load_model(path, self.params)
        except StateError as error:
            aside = path.with_name(path.name + ".corrupt")
            log.warning("anomaly state unusable, learning afresh", source=self.source, path=str(path),
                        error=str(error), moved_to=str(aside))
            with contextlib.suppress(OSError):
                path.replace(aside)
            return NormalModel(self.params)
        log.info("anomaly state loaded", source=self.source, path=str(path), bank=model.n_bank,
                 learning=model.learning, threshold=round(model.threshold, 4) if math.isfinite(model.threshold) else None)
        return model

    def save(self) -> None:
        """Persist the model now (and after any save still being written)."""
        if self.state_path is None:
            return
        self._wait_for_writes()
        if self._write(serialize(self.model)):
            self._since_save_s = 0.0

    def _save_in_background(self) -> None:
        """The periodic save: snapshot here, write and fsync in the writer thread, off the event loop."""
        if self.state_path is None:
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"anomaly-save-{self.source}")
        self._writer.submit(self._write, serialize(self.model))

    def _write(self, data: bytes) -> bool:
        assert self.state_path is not None
        try:
            write_atomically(data, self.state_path)
            return True
        except OSError as error:
            log.warning("cannot save anomaly state", source=self.source, path=str(self.state_path), error=str(error))
            return False

    def _wait_for_writes(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def close(self) -> None:
        """Called when the pipeline finishes: persist what was learnt since the last save."""
        self._wait_for_writes()
        if self._since_save_s > 0:
            self.save()

    # -- scoring --------------------------------------------------------------------------------
    def claimed(self, scores: Mapping[str, float]) -> bool:
        """A known label claims the window when its score reaches `claim_ratio` x its threshold."""
        ratio = self.config.claim_ratio
        for label, score in scores.items():
            if label == self.label:
                continue
            threshold = self.known_thresholds.get(label)
            if threshold is not None and score >= ratio * threshold:
                return True
        return False

    def vector(self, window: Window, found: Detection) -> np.ndarray:
        logmel = window.features.logmel
        embedding = found.embedding if found.embedding is not None else logmel_shape(logmel)
        level, flux, crest = signal_features(logmel, window.features.rms_dbfs)
        labels = label_features(found.label_scores)
        return feature_vector(embedding, level, flux, crest, labels, self.config)

    def detect(self, windows: Sequence[Window], found: Sequence[Detection]) -> list[Detection]:
        return [self._detect(window, before) for window, before in zip(windows, found)]

    def _detect(self, window: Window, found: Detection) -> Detection:
        dt = window.start_s - self._last_start_s if self._last_start_s is not None else 0.0
        self._last_start_s = window.start_s
        score, details = self.step(self.vector(window, found), dt, found.scores, found.label_scores,
                                   clipped_level(window.features.rms_dbfs))
        return Detection({self.label: score}, {self.label: details})

    def step(self, x: np.ndarray, dt: float, scores: Mapping[str, float],
             label_scores: Mapping[str, float] | None = None,
             level_dbfs: float | None = None) -> tuple[float, dict[str, Any]]:
        """Score a feature vector and learn from it; (score, event details). Also used by the eval."""
        if dt > 0:
            self.model.set_hop(dt)
        if self.model.dim is not None and len(x) != self.model.dim:
            log.warning("anomaly features changed (another classifier model?), learning afresh",
                        source=self.source, was=self.model.dim, now=len(x))
            self.model = NormalModel(self.params)
        distance, score = self.model.step(x, dt, self.claimed(scores), level_dbfs)
        known = label_scores or {k: v for k, v in scores.items() if k != self.label}
        top = sorted(known.items(), key=lambda kv: kv[1], reverse=True)[:3]
        threshold = self.model.threshold
        details = {
            "top_labels": [[label, round(float(s), 3)] for label, s in top],
            "distance": round(distance, 4) if math.isfinite(distance) else None,
            "threshold": round(threshold, 4) if math.isfinite(threshold) else None,
            "learning": self.model.learning,
        }
        self._since_save_s += max(dt, 0.0)
        if self.state_path is not None and self._since_save_s >= self.config.save_interval_s:
            self._since_save_s = 0.0
            self._save_in_background()
        return score, details
