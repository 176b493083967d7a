"""Detectors: each scores windows of audio for its labels; `build_detectors` makes them from their config.

`base` (the protocol the pipeline reads), `frontend` (log-mel and the windower), `classifier`,
`anomaly`, `energy`, `tracker` (scores to events).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from earwitness.config import AnomalyDetectorConfig, ClassifierDetectorConfig, DetectorConfig, EnergyDetectorConfig
from earwitness.detectors.base import Detector, DetectorContext


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


__all__ = ["Detector", "DetectorContext", "build_detector", "build_detectors"]
