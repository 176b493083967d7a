"""The detector interface: a window (plus shared features) in, scores per label out."""

from __future__ import annotations

from typing import Protocol

from earwitness.core.windows import Window


class Detector(Protocol):
    """Scores windows of audio.

    `labels` are the labels it can score; `thresholds` its default (calibrated)
    start threshold per label, which the config's `events` section may override.
    A detector may also have `event_settings` (label -> event-tracker settings its
    figures were measured with, e.g. `merge_gap_s`) and `frontend` (the feature
    function behind `window.features.logmel`), and `gated = False` when it is cheap enough to run on the
    windows the energy gate of low-power listening turns away).
    """

    name: str
    version: str
    labels: tuple[str, ...]
    thresholds: dict[str, float]

    def score(self, window: Window) -> dict[str, float]:
        """Return a score in [0, 1] per label for this window.

        `window.features` holds the features shared with other detectors
        (`rms_dbfs`, `logmel`, and what earlier detectors put in `scores` and `shared`).
        """
        ...
