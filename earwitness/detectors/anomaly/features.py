"""The vector the anomaly model works on: the classifier's embedding (or the log-mel's shape without one),
the window's level, spectral flux and crest, and the classifier's label scores, each weighted by the config."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from earwitness.config.detectors import AnomalyDetectorConfig
from earwitness.detectors.anomaly.model import NormalModelParams

_LOG_FLOOR = math.log(1e-7)
_DB_PER_NEPER = 10.0 / math.log(10.0)
_ZERO = np.float32(0.0)


def clipped_level(rms_dbfs: float) -> float:
    """The window's level as the model reads it: dBFS clipped to [-90, 0]."""
    return min(max(float(rms_dbfs), -90.0), 0.0)


def signal_features(logmel: np.ndarray | None, rms_dbfs: float) -> tuple[float, float, float]:
    """(level in dBFS clipped to [-90, 0], spectral flux: mean positive log-mel rise per frame and band,
    crest: loudest frame's energy over the window's mean frame energy, in dB).

    Runs once per window on the hot path: written with ufuncs and their reductions directly (the values
    of `np.diff`, `.mean()` and friends, without their Python wrappers, which cost more than the arithmetic
    on a 97 x 64 log-mel)."""
    level = clipped_level(rms_dbfs)
    if logmel is None or len(logmel) < 2:
        return level, 0.0, 0.0
    floored = np.maximum(logmel, _LOG_FLOOR)
    rise = floored[1:] - floored[:-1]
    np.maximum(rise, _ZERO, out=rise)
    flux = np.add.reduce(rise, axis=None) / rise.size
    power = np.exp(floored, out=floored)
    energy = np.log(np.add.reduce(power, axis=1) + np.float32(1e-7))  # ln of mel power per frame
    mean_power = np.add.reduce(np.exp(energy)) / len(energy)
    crest = float((energy.max() - np.log(mean_power)) * _DB_PER_NEPER)
    return level, float(flux), crest


def logmel_shape(logmel: np.ndarray) -> np.ndarray:
    """Fallback embedding without a classifier: mean log-mel per band, level removed."""
    shape = np.maximum(logmel, math.log(1e-7)).mean(axis=0)
    return (shape - shape.mean()).astype(np.float32)


def label_features(label_scores: Mapping[str, float] | None) -> np.ndarray:
    """The classifier's probabilities of all its labels (sorted by name), as ln(p + 0.001) / 7, in [-1, 0]."""
    if not label_scores:
        return np.zeros(0, np.float32)
    p = np.array([label_scores[k] for k in sorted(label_scores)], np.float64)
    return (np.log(np.minimum(np.maximum(p, 0.0), 1.0) + 1e-3) / 7.0).astype(np.float32)


def feature_vector(embedding: np.ndarray, level_dbfs: float, flux: float, crest_db: float, labels: np.ndarray,
                   config: AnomalyDetectorConfig) -> np.ndarray:
    """The vector the model of normal works on: unit embedding; scaled level, flux, crest and label scores."""
    e = np.asarray(embedding, np.float32).ravel()
    e = e / (float(np.sqrt(e.dot(e))) + 1e-6)  # np.linalg.norm's value, without its wrapper
    extra = np.array([level_dbfs * config.level_weight, flux * config.flux_weight, crest_db * config.crest_weight],
                     np.float32)
    return np.concatenate([e, extra, np.asarray(labels, np.float32) * config.label_weight])


def params_from_config(config: AnomalyDetectorConfig) -> NormalModelParams:
    return NormalModelParams(
        learn_s=config.learn_s, bank_size=config.bank_size, k=config.k, exclude_s=config.exclude_s,
        calib_exclude_s=config.calib_exclude_s,
        adapt_s=config.adapt_s, max_per_day=config.max_per_day, habituate_episodes=config.habituate_episodes,
        episode_gap_s=config.episode_gap_s, min_threshold=config.min_distance,
        quiet_percentile=config.quiet_percentile,
    )
