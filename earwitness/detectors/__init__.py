"""Detectors: each scores windows of audio for its labels."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from earwitness.config import AnomalyDetectorConfig, ClassifierDetectorConfig, DetectorConfig, EnergyDetectorConfig
from earwitness.detectors.base import Detector


@dataclass(frozen=True)
class DetectorContext:
    """What a detector may need beyond its config: its source, where state lives, earlier detectors' thresholds."""

    source: str = "default"
    state_dir: Path | None = None
    """None: keep no state on disk."""
    thresholds: dict[str, float] = field(default_factory=dict)
    """Start thresholds of the labels scored by the detectors before this one."""


def build_detector(config: DetectorConfig, context: DetectorContext | None = None) -> Detector:
    """Instantiate the detector a config entry names."""
    if isinstance(config, EnergyDetectorConfig):
        from earwitness.detectors.energy import EnergyDetector

        return EnergyDetector(config)
    if isinstance(config, ClassifierDetectorConfig):
        from earwitness.detectors.classifier import ClassifierDetector

        return ClassifierDetector(config.model, labels=config.labels)
    if isinstance(config, AnomalyDetectorConfig):
        from earwitness.detectors.anomaly import AnomalyDetector

        return AnomalyDetector(config, context)
    raise ValueError(f"unknown detector type: {config.type}")


def build_detectors(configs: Sequence[DetectorConfig], context: DetectorContext | None = None) -> list[Detector]:
    """Detectors in config order; each gets the context with the thresholds of those before it."""
    context = context or DetectorContext()
    detectors: list[Detector] = []
    for config in configs:
        thresholds = {label: t for d in detectors for label, t in d.thresholds.items()}
        detectors.append(build_detector(config, replace(context, thresholds=thresholds)))
    return detectors
