"""The anomaly detector: learning period, persistence, corrupt state, habituation, no learning from anomalies.

Fast: short learning periods and small banks; without a classifier in the pipeline the
detector uses the log-mel spectral shape instead of the embedding (same model of normal).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from earwitness.app import build_pipeline
from earwitness.config import Config, ConfigError, parse_config
from earwitness.core.events import EventChange
from earwitness.detectors.anomaly import AnomalyDetector
from earwitness.detectors.anomaly.model import TYPICAL_SCORE, NormalModel, NormalModelParams
from earwitness.detectors.anomaly.persistence import load_model, save_model
from earwitness.detectors.anomaly.threshold import budget_threshold
from earwitness.detectors.classifier import ClassifierDetector
from tests.audio import tone_bursts

SR = 16_000
LEARN_S = 20.0


@pytest.fixture(autouse=True)
def _no_window_logs(monkeypatch):
    """The pipeline logs every window at debug level; these tests stream thousands of windows."""
    import earwitness.daemon.pipeline as pipeline_module

    class Silent:
        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    monkeypatch.setattr(pipeline_module, "log", Silent())



def _config(state_dir: Path, **anomaly: Any) -> Config:
    settings = {"type": "anomaly", "learn_s": LEARN_S, "bank_size": 256, "exclude_s": 2.0, **anomaly}
    return parse_config({"state_dir": str(state_dir), "log_level": "warning", "detectors": [settings]})


def _run(config, audio: np.ndarray):
    """Feed audio through a fresh pipeline; (started anomaly events, per-window scores, the detector)."""
    events: list[EventChange] = []
    scores: list[tuple[float, float]] = []
    pipeline = build_pipeline(config, config.sources[0], events.append)
    detector = pipeline._detectors[0]
    assert isinstance(detector, AnomalyDetector)
    original = detector.detect

    def recording(windows, found):
        result = original(windows, found)
        scores.extend((window.start_s, detection.scores["anomaly"]) for window, detection in zip(windows, result))
        return result

    detector.detect = recording  # type: ignore[method-assign]
    for i in range(0, len(audio), 4000):
        pipeline.process(audio[i : i + 4000])
    pipeline.finish()
    started = [c.event for c in events if c.type == "start" and c.event.label == "anomaly"]
    return started, scores, detector


def _chirp(duration_s: float, f0: float = 2500.0, f1: float = 5000.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(duration_s * SR)) / SR
    return (amp * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * duration_s)))).astype(np.float32)


def _with(audio: np.ndarray, sound: np.ndarray, at_s: float) -> np.ndarray:
    out = audio.copy()
    a = int(at_s * SR)
    out[a : a + len(sound)] += sound[: len(out) - a]
    return out


def test_config_accepts_anomaly_and_rejects_unknown_keys(tmp_path):
    config = _config(tmp_path, max_per_day=1.5)
    assert config.detectors[0].type == "anomaly" and config.detectors[0].max_per_day == 1.5
    with pytest.raises(ConfigError, match="learn_seconds"):
        parse_config({"detectors": [{"type": "anomaly", "learn_seconds": 5}]})


def test_no_alert_during_learning_then_alerts(tmp_path):
    audio = _with(tone_bursts(36.0, [30.0], burst_s=1.0, noise_dbfs=-45.0), _chirp(1.5), 8.0)
    started, scores, _ = _run(_config(tmp_path), audio)
    assert all(score == 0.0 for start_s, score in scores if start_s + 0.25 <= LEARN_S)
    assert not any(event.start_s < LEARN_S for event in started)
    after = [event for event in started if event.start_s >= LEARN_S]
    assert after and 28.5 <= after[0].start_s <= 31.5  # the new sound after the learning period
    top = after[0].details["top_labels"]
    assert isinstance(top, list) and after[0].details["learning"] is False


def test_state_survives_restart(tmp_path):
    config = _config(tmp_path)
    _, _, first = _run(config, tone_bursts(24.0, [], noise_dbfs=-45.0, seed=1))
    path = tmp_path / "anomaly" / "default.npz"
    assert path.is_file() and not first.model.learning
    started, scores, second = _run(config, _with(tone_bursts(8.0, [], noise_dbfs=-45.0, seed=2), _chirp(1.0), 4.0))
    assert not second.model.learning  # no second learning period
    n = first.model.n_bank
    assert second.model.n_bank >= n and np.array_equal(second.model.bank[:n], first.model.bank)
    assert second.model.threshold > 0
    assert second.model.clock_s == pytest.approx(first.model.clock_s + 7.0, abs=0.3)
    assert [e for e in started if 3.0 <= e.start_s <= 5.0], "the restarted detector alerts at once"


def test_periodic_saves_are_written_by_a_writer_thread_while_listening(tmp_path):
    """Every save_interval_s of audio the state is written off the pipeline's thread; finishing writes the rest."""
    import threading

    config = _config(tmp_path, save_interval_s=5.0)
    pipeline = build_pipeline(config, config.sources[0], lambda change: None)
    detector = pipeline._detectors[0]
    assert isinstance(detector, AnomalyDetector)
    path = tmp_path / "anomaly" / "default.npz"
    audio = tone_bursts(12.0, [], noise_dbfs=-45.0, seed=1)
    for i in range(0, len(audio), 4000):
        pipeline.process(audio[i : i + 4000])
    writers = [t for t in threading.enumerate() if t.name.startswith("anomaly-save-default")]
    assert writers, "the periodic save runs in the detector's writer thread"
    detector._wait_for_writes()
    saved = load_model(path, detector.params)
    assert 8.0 <= saved.clock_s <= 11.0  # the save after 10 s of audio, not the state at the end
    pipeline.finish()
    final = load_model(path, detector.params)
    assert final.clock_s == pytest.approx(detector.model.clock_s) and final.n_bank == detector.model.n_bank


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_state_is_relearnt(tmp_path, damage, caplog):
    config = _config(tmp_path)
    path = tmp_path / "anomaly" / "default.npz"
    save_model(_learnt(PARAMS, np.random.default_rng(0)), path)
    good = path.read_bytes()
    path.write_bytes({"garbage": b"not a state file" * 10, "truncated": good[: len(good) // 2], "empty": b""}[damage])
    with caplog.at_level(logging.WARNING):
        started, scores, detector = _run(config, tone_bursts(6.0, [], noise_dbfs=-45.0))
    assert detector.model.learning and started == []
    assert (tmp_path / "anomaly" / "default.npz.corrupt").is_file()
    assert path.is_file()  # the fresh model was saved in its place


# -- the model of normal, on feature vectors (fast) -------------------------------------------------
def _normal(rng, n, dim=8):
    return rng.normal(0.0, 0.1, (n, dim)).astype(np.float32)


def _learnt(params: NormalModelParams, rng) -> NormalModel:
    model = NormalModel(params)
    for x in _normal(rng, int(params.learn_s / 0.25) + 1):
        model.step(x, 0.25)
    assert not model.learning
    return model


PARAMS = NormalModelParams(learn_s=100.0, bank_size=512, exclude_s=2.0, episode_gap_s=10.0, habituate_episodes=3)


def test_repeated_sound_stops_being_anomalous():
    rng = np.random.default_rng(0)
    model = _learnt(PARAMS, rng)
    novel = np.full(8, 1.0, np.float32)
    peaks = []
    for _episode in range(6):
        episode_scores = []
        for x in novel + _normal(rng, 8) * 0.3:  # 2 s of the new sound
            episode_scores.append(model.step(x, 0.25)[1])
        for x in _normal(rng, 80):  # 20 s of normal sound between repetitions
            model.step(x, 0.25)
        peaks.append(max(episode_scores))
    assert peaks[0] > 0.5 and peaks[1] > 0.5  # anomalous at first
    assert max(peaks[3:]) < 0.5  # habituated after the third episode
    assert model.n_habituated >= 1


def test_anomalous_windows_are_not_learnt():
    rng = np.random.default_rng(1)
    model = _learnt(PARAMS, rng)
    bank_before = model.bank.copy()
    novel = np.full(8, 1.0, np.float32)
    for x in novel + _normal(rng, 400) * 0.3:  # 100 s of one unbroken anomaly: one episode
        model.step(x, 0.25)
    nearest = np.min(np.linalg.norm(model.bank - novel[None], axis=1))
    assert nearest > 0.5 * np.min(np.linalg.norm(bank_before - novel[None], axis=1))
    assert model.step(novel, 0.25)[1] > 0.5  # still anomalous


def test_claimed_windows_are_not_learnt():
    rng = np.random.default_rng(2)
    model = NormalModel(PARAMS)
    known = np.full(8, -1.0, np.float32)
    for i, x in enumerate(_normal(rng, 401)):
        model.step(known if i % 10 == 0 else x, 0.25, claimed=i % 10 == 0)
    assert np.min(np.linalg.norm(model.bank - known[None], axis=1)) > 1.0


def test_threshold_meets_budget_on_normal_sound():
    rng = np.random.default_rng(3)
    params = NormalModelParams(learn_s=100.0, bank_size=512, exclude_s=2.0, max_per_day=2.0)
    model = _learnt(params, rng)
    flagged = sum(model.step(x, 0.25)[1] >= 0.5 for x in _normal(rng, 8000))
    assert flagged <= 2  # budget: ~4 windows per 2 events per 345600 windows


def test_a_typical_window_scores_alike_in_every_place_and_the_threshold_half():
    """Places differ in how spread their normal sound is; the score is measured from both ends of each."""
    rng = np.random.default_rng(5)
    places = {  # a steady hum of many small changes, a few large ones, and heavy-tailed clatter
        "steady": lambda n: _normal(rng, n),
        "few changes": lambda n: np.pad(_normal(rng, n, dim=2), ((0, 0), (0, 6))),
        "clatter": lambda n: (0.05 * rng.standard_t(2, (n, 8))).astype(np.float32),
    }
    typical_scores = []
    for sound in places.values():
        model = NormalModel(PARAMS)
        for x in sound(int(PARAMS.learn_s / 0.25) + 1):
            model.step(x, 0.25)
        scores = [model.step(x, 0.25)[1] for x in sound(400)]
        typical_scores.append(float(np.median(scores)))
        assert model.to_score(model.threshold) == pytest.approx(0.5)
        assert model.to_score(model.typical) == pytest.approx(TYPICAL_SCORE)
    assert max(typical_scores) - min(typical_scores) < 0.05
    assert all(abs(t - TYPICAL_SCORE) < 0.05 for t in typical_scores)


def test_budget_threshold_extrapolates_the_tail():
    scores = np.random.default_rng(4).exponential(1.0, 100_000)
    t = budget_threshold(scores, 1e-6)
    assert t == pytest.approx(np.log(1e6), rel=0.1)
    assert budget_threshold(scores, 0.1) == pytest.approx(np.log(10), rel=0.05)


def test_with_the_classifier_uses_its_embedding_and_labels(tmp_path):
    from earwitness.detectors.classifier import shipped_model_path

    if not shipped_model_path().is_file():
        pytest.skip("no shipped classifier model yet")
    config = parse_config({"state_dir": str(tmp_path), "log_level": "warning", "detectors": [
        {"type": "classifier"}, {"type": "anomaly", "learn_s": 8.0, "bank_size": 64, "exclude_s": 1.0}]})
    events: list[EventChange] = []
    pipeline = build_pipeline(config, config.sources[0], events.append)
    classifier, anomaly = pipeline._detectors
    assert isinstance(classifier, ClassifierDetector) and isinstance(anomaly, AnomalyDetector)
    assert anomaly.known_thresholds == classifier.thresholds  # claims are judged against these
    audio = _with(tone_bursts(14.0, [], noise_dbfs=-45.0), _chirp(1.5), 11.0)
    for i in range(0, len(audio), 4000):
        pipeline.process(audio[i : i + 4000])
    pipeline.finish()
    n_labels = len(classifier.meta["labels"])
    assert anomaly.model.dim == len(classifier.score_logmel_batch(np.zeros((1, 97, 64), np.float32), 1.0)[1][0]) + 3 + n_labels
    started = [c.event for c in events if c.type == "start" and c.event.label == "anomaly"]
    assert started and all(e.start_s >= 8.0 for e in started)
    top = started[0].details["top_labels"]
    assert len(top) == 3 and all(label in classifier.meta["labels"] for label, _ in top)


def test_the_background_receding_is_not_anomalous():
    rng = np.random.default_rng(5)
    model = NormalModel(PARAMS)
    for x in _normal(rng, 401):
        model.step(x, 0.25, level_dbfs=float(rng.normal(-30.0, 2.0)))
    novel = np.full(8, 1.0, np.float32)
    assert model.step(novel, 0.25, level_dbfs=-60.0)[1] == 0.0  # quieter than normal: music stopped
    assert model.step(novel, 0.25, level_dbfs=-25.0)[1] > 0.5  # a new sound on top of it


def test_a_sound_repeated_steadily_stops_alerting_in_the_daemon(tmp_path):
    onsets = [12.0 + 5.0 * i for i in range(6)]  # a 1 kHz beep every 5 s after the learning period
    audio = tone_bursts(42.0, onsets, burst_s=0.5, noise_dbfs=-45.0)
    started, _, detector = _run(_config(tmp_path, learn_s=10.0, episode_gap_s=2.5), audio)
    alerted = [any(onset - 1.0 <= e.start_s <= onset + 1.0 for e in started) for onset in onsets]
    assert alerted[0] and alerted[1]  # new at first
    assert not any(alerted[3:])  # learnt after three separate episodes
    assert detector.model.n_habituated >= 1


def test_the_anomaly_eval_pools_its_insertions_and_keeps_each(shared_data, tmp_path):
    """`anomaly.auc` pools several insertions of novel clips (one insertion's AUC swings by +-0.03); each
    insertion is the same whether it runs alone or among others, so the per-seed figures can be compared."""
    from earwitness.training.anomaly_eval import evaluate_anomaly

    pooled = evaluate_anomaly(shared_data, None, cache_dir=tmp_path, seed=0, seeds=2, progress=False)
    alone = evaluate_anomaly(shared_data, None, cache_dir=tmp_path, seed=1, seeds=1, progress=False)
    assert set(pooled["auc_per_seed"]) == {"0", "1"} and pooled["setup"]["seeds"] == 2
    assert alone["auc_per_seed"] == {"1": pooled["auc_per_seed"]["1"]}
    assert pooled["inserted_clips"] > alone["inserted_clips"] and pooled["false_alarms"] == alone["false_alarms"]
