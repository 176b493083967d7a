"""False-alarm feedback's examples store and matcher, and its calibration on the corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from earwitness.detectors.classifier import ClassifierDetector
from earwitness.detectors.suppression import (
    FeedbackCalibration,
    FeedbackError,
    SuppressionStore,
    Suppressor,
    new_example,
)

LABEL = "glass_break"
SOURCE = "hall"


def test_the_shipped_model_is_calibrated_for_feedback_below_its_sure_score() -> None:
    detector = ClassifierDetector()
    calibration = FeedbackCalibration.from_meta(detector.meta)
    assert calibration is not None and LABEL in calibration.labels
    figures = calibration.labels[LABEL]
    assert detector.thresholds[LABEL] < figures.sure <= 1.0 and 0.0 < figures.similarity < 1.0


def test_the_store_persists_caps_and_survives_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "feedback.json"
    store = SuppressionStore(path, max_examples=3)
    vectors = [np.eye(4, dtype=np.float32)[i % 4] for i in range(5)]
    added = [new_example("false_alarm", SOURCE, LABEL, f"event-{i}", [v]) for i, v in enumerate(vectors)]
    evicted = [e.id for example in added for e in store.add(example)]
    assert evicted == [added[0].id, added[1].id], "the oldest go first"

    again = SuppressionStore.in_state_dir(path.parent)
    assert [e.id for e in again.examples()] == [e.id for e in added[2:]]
    assert again.examples()[0].embeddings == added[2].embeddings
    assert again.forget(added[3].id).event_id == "event-3"
    with pytest.raises(FeedbackError, match="no feedback example"):
        again.forget("nonexistent")
    assert SuppressionStore.in_state_dir(path.parent).examples() == [again.examples()[0], again.examples()[1]]
    assert again.clear() == 2 and SuppressionStore.in_state_dir(path.parent).examples() == []

    path.write_text('{"examples": [{"id": 1}]')
    damaged = SuppressionStore.in_state_dir(path.parent)
    assert damaged.examples() == [] and damaged.load_error
    assert path.with_suffix(".bad").exists() and not path.exists()


def test_a_suppressor_sees_a_change_of_the_store_at_once() -> None:
    store = SuppressionStore(None)
    calibration = FeedbackCalibration.from_meta({"feedback": {"labels": {LABEL: {"similarity": 0.9, "sure": 0.99}}}})
    assert calibration is not None
    decide = Suppressor(store, SOURCE, calibration).decide
    sound = np.array([1.0, 0.2, 0.0], np.float32)
    assert decide(LABEL, 0.95, sound) is None, "no examples: nothing to weigh"
    example = new_example("false_alarm", SOURCE, LABEL, "event-1", [sound])
    store.add(example)
    decision = decide(LABEL, 0.95, sound)
    assert decision is not None and decision.suppressed_by == example.id
    sure = decide(LABEL, 0.995, sound)
    assert sure is not None and sure.suppressed_by is None and sure.reason == "sure score"
    other = decide(LABEL, 0.95, np.array([0.0, 0.0, 1.0], np.float32))
    assert other is not None and other.suppressed_by is None
    assert decide("gunshot", 0.95, sound) is None, "another label"
    assert Suppressor(store, "garage", calibration).decide(LABEL, 0.95, sound) is None, "another source"
    store.add(new_example("confirmed", SOURCE, LABEL, "event-2", [sound]))
    confirmed = decide(LABEL, 0.95, sound)
    assert confirmed is not None and confirmed.suppressed_by is None and confirmed.reason == "like a confirmed event"
    store.forget(example.id)
    assert decide(LABEL, 0.95, sound) is None
    json.dumps(decision.feedback())
