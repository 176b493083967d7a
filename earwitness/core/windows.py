"""A window of audio on its stream's timeline, the features its detectors share, and what they find in it.

Features are computed once per window, on demand; the windower may hand a window its log-mel
ready-made (a view of the stream's rolling frames). Detectors run in config order; each is given
what the ones before it found (`Detection`) and returns its own, so nothing passes between them
except these typed values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from earwitness.core.audio import SAMPLE_RATE

Frontend = Callable[[np.ndarray], np.ndarray]
"""Maps a window of 16 kHz audio to a feature matrix (for example log-mel, frames x bands)."""


class WindowFeatures:
    """Lazily computed features of one window."""

    def __init__(self, audio: np.ndarray, frontend: Frontend | None = None, logmel: np.ndarray | None = None) -> None:
        self._audio = audio
        self._frontend = frontend
        self._logmel = logmel

    @cached_property
    def rms_dbfs(self) -> float:
        """Root-mean-square level of the window in dB relative to full scale."""
        # np.mean's value (the same pairwise sum), without its wrapper: this runs once a window.
        rms = float(np.sqrt(np.add.reduce(np.square(self._audio, dtype=np.float64), axis=None) / self._audio.size))
        return 20.0 * np.log10(max(rms, 1e-10))

    @property
    def audio(self) -> np.ndarray:
        return self._audio

    def detached(self) -> WindowFeatures:
        """A copy that owns its audio and log-mel (the windower's are views it reuses)."""
        logmel = None if self._logmel is None else np.array(self._logmel)
        return WindowFeatures(self._audio.copy(), self._frontend, logmel)

    @property
    def logmel(self) -> np.ndarray:
        """The frontend's feature matrix for this window (given by the windower, or computed on first use)."""
        if self._logmel is None:
            if self._frontend is None:
                raise RuntimeError("no frontend configured for this pipeline")
            self._logmel = self._frontend(self._audio)
        return self._logmel


@dataclass
class Window:
    """One window of 16 kHz mono audio, placed on the stream's timeline.

    `audio` (and `features.logmel`) may be views of the windower's buffers: valid until the
    windower's next `push`; a caller that keeps them longer copies them.
    """

    audio: np.ndarray
    start_s: float
    features: WindowFeatures = field(repr=False)

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class Detection:
    """What detectors found in one window: one detector's own finding, or all of them merged in order."""

    scores: Mapping[str, float] = field(default_factory=dict)
    """A score in [0, 1] per label scored."""
    details: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per label, what its event carries (`top_labels`, the anomaly's `distance`, ...)."""
    embedding: np.ndarray | None = None
    """The classifier's embedding of the window, which the anomaly detector reuses (no second network)."""
    label_scores: Mapping[str, float] | None = None
    """The classifier's probability of every label of its model, scored or not."""
    tail_embedding: np.ndarray | None = None
    """The classifier's embedding of the frames that made the score (the window's newest hop), which
    false-alarm feedback matches."""

    def merged(self, later: Detection) -> Detection:
        """This finding with a later detector's added (the later one wins where both say something)."""
        return Detection(
            {**self.scores, **later.scores},
            {**self.details, **later.details},
            later.embedding if later.embedding is not None else self.embedding,
            later.label_scores if later.label_scores is not None else self.label_scores,
            later.tail_embedding if later.tail_embedding is not None else self.tail_embedding,
        )
