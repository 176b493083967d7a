"""The `anomaly` detector: `detector` (the Detector), `features` (its feature vector), `model` (the model
of normal: scoring, learning, habituation), `threshold` (the budget threshold), `persistence` (its state)."""

from earwitness.detectors.anomaly.detector import AnomalyDetector
from earwitness.detectors.anomaly.features import (
    feature_vector,
    label_features,
    logmel_shape,
    params_from_config,
    signal_features,
)

__all__ = [
    "AnomalyDetector",
    "feature_vector",
    "label_features",
    "logmel_shape",
    "params_from_config",
    "signal_features",
]
