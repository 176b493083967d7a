"""The energy gate of low-power listening: which windows are worth running the model on.

A window passes when the level of its newest hop (the stretch of time the classifier scores)
rises `margin_db` above the learned floor, and for `hold_s` after such a hop, so that a sound's
tail is scored as its onset was. Pure: levels and stream times in, a decision out.
"""

from __future__ import annotations

import math

import numpy as np

from earwitness.config import GateConfig

FRAME = 320
"""20 ms: a hop's level is its loudest 20 ms, so that a breaking window's first crack, which may hold
less energy than the hop of music around it, still stands out of the floor."""


def level_dbfs(audio: np.ndarray) -> float:
    """The level of a hop of audio: the RMS of its loudest 20 ms frame, in dBFS."""
    frames = audio[: len(audio) // FRAME * FRAME].reshape(-1, FRAME) if len(audio) >= FRAME else audio[None, :]
    if frames.size == 0:
        return -200.0
    energy = float(np.max(np.mean(np.square(frames, dtype=np.float64), axis=1)))
    return 10.0 * math.log10(max(energy, 1e-20))


class EnergyGate:
    """Decides, window by window in stream order, whether the model runs."""

    def __init__(self, config: GateConfig) -> None:
        self._config = config
        self.floor_dbfs: float | None = None
        self._open_until_s = -math.inf
        self._last_s: float | None = None

    def admit(self, hop_level_dbfs: float, start_s: float) -> bool:
        config = self._config
        if self.floor_dbfs is None:
            self.floor_dbfs = hop_level_dbfs
        rising = hop_level_dbfs >= self.floor_dbfs + config.margin_db
        if rising:
            self._open_until_s = start_s + config.hold_s
        elapsed_s = 0.0 if self._last_s is None else max(0.0, start_s - self._last_s)
        self._last_s = start_s
        if hop_level_dbfs < self.floor_dbfs:
            self.floor_dbfs = hop_level_dbfs
        else:  # slowly, so that a lasting change of background (an engine started) stops holding the gate open
            self.floor_dbfs += (hop_level_dbfs - self.floor_dbfs) * min(1.0, elapsed_s / config.floor_adapt_s)
        return rising or start_s <= self._open_until_s
