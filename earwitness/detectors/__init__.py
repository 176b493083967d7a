"""Detectors: each scores windows of audio for its labels."""

from __future__ import annotations

from typing import Sequence

from earwitness.config import DetectorConfig, EnergyDetectorConfig
from earwitness.detectors.base import Detector


def build_detector(config: DetectorConfig) -> Detector:
    """Instantiate the detector a config entry names."""
    if isinstance(config, EnergyDetectorConfig):
        from earwitness.detectors.energy import EnergyDetector

        return EnergyDetector(config)
    raise ValueError(f"unknown detector type: {config.type}")


def build_detectors(configs: Sequence[DetectorConfig]) -> list[Detector]:
    return [build_detector(config) for config in configs]
