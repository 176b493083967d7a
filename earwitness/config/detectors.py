"""The detectors (`detectors`): one model per `type`, told apart by that key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field

from earwitness.config.base import NAME_PATTERN, StrictModel


class EnergyDetectorConfig(StrictModel):
    """Onset/level detector: scores how far a window's level rises above the noise floor."""

    type: Literal["energy"] = "energy"
    label: str = Field("loud", pattern=NAME_PATTERN)
    rise_db: float = Field(20.0, gt=0)
    min_level_dbfs: float = Field(-70.0, le=0)
    floor_adapt_s: float = Field(30.0, gt=0)


class ClassifierDetectorConfig(StrictModel):
    """The trained classifier (glass_break, scratch and the shipped safety labels)."""

    type: Literal["classifier"] = "classifier"
    model: Path | None = None
    """A model's .json (beside its .onnx), as written by `earwitness train`; null = the shipped model."""
    backend: Literal["auto", "onnx"] = "auto"
    """Either: the daemon runs the model in ONNX Runtime (torch is for training only)."""
    labels: list[str] | None = None
    """Score only these labels (a subset of the model's shipped labels); null = all shipped labels."""


class AnomalyDetectorConfig(StrictModel):
    """Learns each source's normal sound; scores what does not belong. Place it after the classifier."""

    type: Literal["anomaly"] = "anomaly"
    label: str = Field("anomaly", pattern=NAME_PATTERN)
    learn_s: float = Field(600.0, gt=0)
    """Learning period (seconds of audio per source) during which it never alerts."""
    max_per_day: float = Field(2.0, gt=0)
    """False-anomaly budget: the threshold adapts to recent normal scores to meet it."""
    bank_size: int = Field(2048, ge=16, le=65536)
    """Normal windows kept in the memory bank (reservoir-sampled)."""
    k: int = Field(3, ge=1, le=64)
    """Neighbours averaged for the kNN distance."""
    exclude_s: float = Field(5.0, ge=0)
    """Bank entries taken this close in time to a window are not its neighbours."""
    calib_exclude_s: float = Field(30.0, ge=0)
    """For the first threshold (end of learning), leave-one-out distances ignore entries this close in time."""
    adapt_s: float = Field(86400.0, gt=0)
    """Slow adaptation: normal windows renew the bank over about this long."""
    habituate_episodes: int = Field(3, ge=2)
    """A new sound heard in this many separate episodes is learnt as normal."""
    episode_gap_s: float = Field(60.0, ge=0)
    """Anomalies further apart than this are separate episodes."""
    claim_ratio: float = Field(0.5, gt=0, le=1)
    """A window whose known-label score reaches this x that label's threshold is never learnt."""
    level_weight: float = Field(0.02, ge=0)
    """Weight of the window level (per dB) beside the unit-length embedding."""
    flux_weight: float = Field(0.5, ge=0)
    """Weight of the spectral flux."""
    crest_weight: float = Field(0.05, ge=0)
    """Weight (per dB) of the crest: loudest frame over the window's mean energy (transients)."""
    label_weight: float = Field(1.0, ge=0)
    """Weight of the classifier's label probabilities (as ln(p + 0.001) / 7)."""
    min_distance: float = Field(0.0, ge=0)
    """Floor of the adaptive distance threshold."""
    quiet_percentile: float = Field(10.0, ge=0, le=100)
    """Windows quieter than this percentile of recent levels are never anomalous (the background
    receding, e.g. music stopping, is not a new sound); 0 = off."""
    persist: bool = True
    """Keep the model in <state_dir>/anomaly/<source>.npz across restarts."""
    save_interval_s: float = Field(300.0, gt=0)


DetectorConfig = Annotated[
    EnergyDetectorConfig | ClassifierDetectorConfig | AnomalyDetectorConfig, Field(discriminator="type")
]


_DETECTOR_UNION = get_args(DetectorConfig)[0]
DETECTOR_TYPES = {member.model_fields["type"].default for member in get_args(_DETECTOR_UNION) or (_DETECTOR_UNION,)}
