"""An onset/level detector: how far a window's level rises above the learned noise floor.

It knows nothing of what the sound is; it exists so that the daemon is useful and
testable before (and besides) the trained classifier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from earwitness.config import EnergyDetectorConfig
from earwitness.core.windows import Detection, Frontend, Window

_SLOPE_DB = 3.0
"""Width of the logistic step around `rise_db`: 3 dB either side moves the score 0.27 -> 0.73."""


class EnergyDetector:
    """Scores `label` from the level rise over a slowly adapting noise floor."""

    name = "energy"
    version = "1"
    gated = False
    """As cheap as the energy gate itself: it runs on every window, and keeps its own floor."""

    def __init__(self, config: EnergyDetectorConfig) -> None:
        self._config = config
        self.labels = (config.label,)
        self.thresholds = {config.label: 0.5}
        self.event_settings: dict[str, dict[str, float]] = {}
        self.frontend: Frontend | None = None
        self._floor_dbfs: float | None = None
        self._last_start_s = 0.0

    def detect(self, windows: Sequence[Window], found: Sequence[Detection]) -> list[Detection]:
        return [Detection({self._config.label: self._score(window)}) for window in windows]

    def close(self) -> None:
        """Nothing is kept beyond the stream."""

    def _score(self, window: Window) -> float:
        level = max(window.features.rms_dbfs, self._config.min_level_dbfs)
        if self._floor_dbfs is None:
            self._floor_dbfs = level
        rise = level - self._floor_dbfs
        score = 1.0 / (1.0 + math.exp(-(rise - self._config.rise_db) / _SLOPE_DB))
        self._adapt_floor(level, window.start_s - self._last_start_s)
        self._last_start_s = window.start_s
        return score

    def _adapt_floor(self, level: float, elapsed_s: float) -> None:
        """Fall to quieter levels at once; rise towards louder ones over `floor_adapt_s`."""
        assert self._floor_dbfs is not None
        if level < self._floor_dbfs:
            self._floor_dbfs = level
        else:
            self._floor_dbfs += (level - self._floor_dbfs) * min(1.0, elapsed_s / self._config.floor_adapt_s)
