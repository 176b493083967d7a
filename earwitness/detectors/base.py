"""What the pipeline reads of a detector, and what a detector is given when it is built."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from earwitness.core.windows import Detection, Frontend, Window


class Detector(Protocol):
    """Scores windows of audio; the pipeline reads nothing else of it."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels it scores."""
        ...

    @property
    def thresholds(self) -> Mapping[str, float]:
        """Its default (calibrated) start threshold per label; the config's `events` section may override them."""
        ...

    @property
    def event_settings(self) -> Mapping[str, Mapping[str, float]]:
        """Per label, the event-tracker settings its figures were measured with (e.g. `merge_gap_s`); may be empty."""
        ...

    @property
    def gated(self) -> bool:
        """True when the energy gate of low-power listening keeps quiet windows from it; False when it is as
        cheap as the gate and runs on every window (then it is given those windows too)."""
        ...

    @property
    def frontend(self) -> Frontend | None:
        """The feature function behind `window.features.logmel` it was trained with; None if it reads none."""
        ...

    def detect(self, windows: Sequence[Window], found: Sequence[Detection]) -> list[Detection]:
        """One finding per window, for consecutive windows of one stream (in one model run where it can).

        `found[i]` is what the detectors before this one found in `windows[i]`."""
        ...

    def close(self) -> None:
        """The stream has ended or the source was switched off (e.g. persist what was learnt)."""
        ...


@dataclass(frozen=True)
class DetectorContext:
    """What a detector may need beyond its config: its source, where state lives, earlier detectors' thresholds."""

    source: str = "default"
    state_dir: Path | None = None
    """None: keep no state on disk."""
    thresholds: Mapping[str, float] = field(default_factory=dict)
    """Start thresholds of the labels scored by the detectors before this one."""
