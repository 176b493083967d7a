"""The anomaly detector in the long day of `earwitness eval` (issue 12: <= 2 false anomalies per 24 h).

The day without incidents is streamed through a pipeline that runs the anomaly detector after
the classifier, as the daemon's default config does: it learns the day's first `learn_s` seconds
(no alerts), then every anomaly event it raises is false, since the day holds only background
and household sounds. The rate is per 24 h of the audio after the learning period.
"""

from __future__ import annotations

from typing import Any

from earwitness.config import AnomalyDetectorConfig, Config
from earwitness.detectors import DetectorContext
from earwitness.detectors.anomaly import AnomalyDetector


def anomaly_config(config: Config) -> AnomalyDetectorConfig:
    """The config's first anomaly detector's settings (else the defaults), kept in memory only."""
    found = next((d for d in config.detectors if isinstance(d, AnomalyDetectorConfig)), AnomalyDetectorConfig())
    return found.model_copy(update={"persist": False})


def day_anomaly_detector(config: Config, classifier: Any) -> AnomalyDetector:
    """A fresh anomaly detector that runs after `classifier` (its labels claim their windows)."""
    return AnomalyDetector(anomaly_config(config),
                           DetectorContext(source="long-day", state_dir=None, thresholds=dict(classifier.thresholds)))


def per_24h_after_learning(events: int, hours: float, learn_s: float) -> float | None:
    """False anomalies per 24 h of the audio the detector could alert on (None if it never left learning)."""
    alerting_h = hours - learn_s / 3600
    return round(events * 24 / alerting_h, 3) if alerting_h > 0 else None
