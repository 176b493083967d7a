"""Smoke runs of `train` and `eval` on a small subset of the real corpus."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from earwitness.core.events import Event, SourceInfo
from earwitness.core.windows import Detection, Window, WindowFeatures
from tests.test_classifier import torch_outputs, trained_network


def test_train_smoke(shared_data, tmp_path):
    from earwitness.detectors.classifier import ClassifierDetector
    from earwitness.training.train import train

    meta = train(shared_data, tmp_path, steps=20, batch=8, workers=1, limit_per_class=1, cache_dir=None,
                 name="smoke", progress=False, pool_size=96, rounds=2)
    for suffix in (".pt", ".onnx", ".json"):
        assert (tmp_path / f"smoke{suffix}").is_file()
    assert meta["labels"][:2] == ["glass_break", "scratch"]
    assert set(meta["thresholds"]) == set(meta["labels"])
    assert meta["train_groups"]
    # Distilled from YAMNet: the model names the 521 AudioSet classes it was taught.
    assert len(meta["aux_classes"]) == 521 and meta["arch"]["n_aux"] == 521
    assert [r["round"] for r in meta["train"]["rounds"]] == [1, 2]
    # The scratch head was measured leave-one-group-out over the real scratch groups.
    assert meta["scratch_head"]["groups"] >= 1 and meta["scratch_head"]["logo_auc"] is not None
    assert all(s["min_duration_s"] >= 0 for s in meta["event_settings"].values())
    onnx_det = ClassifierDetector(tmp_path / "smoke.json")
    network = trained_network(tmp_path / "smoke.json")
    mel = (np.random.default_rng(0).standard_normal((2, 97, 64)) * 3 - 8).astype(np.float32)
    for a, b in zip(onnx_det._run.with_teacher_classes(mel), torch_outputs(network, mel), strict=True):
        assert a.shape == b.shape and np.max(np.abs(a - b)) < 1e-4
    # Events of a distilled model carry the three AudioSet classes it hears best.
    audio = (np.random.default_rng(2).standard_normal(16000) * 0.05).astype(np.float32)
    window = Window(audio, 0.0, WindowFeatures(audio, onnx_det.frontend))
    top = onnx_det.detect([window], [Detection()])[0].details["glass_break"]["top_labels"]
    assert len(top) == 3 and all(name in meta["aux_classes"] and 0 <= score <= 1 for name, score in top)
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    event = Event("glass_break", SourceInfo("hall", "hall"), "dev", "m", 0.9, 0.0, datetime.now(timezone.utc),
                  details={"top_labels": top})
    assert event.message("start")["top_labels"] == [{"name": n, "score": s} for n, s in top]

    # Fine-tuning starts from the earlier weights and mines that model's hard negatives first.
    tuned = train(shared_data, tmp_path / "tuned", steps=20, batch=8, workers=1, limit_per_class=1, cache_dir=None,
                  name="tuned", progress=False, pool_size=48, rounds=1, init=tmp_path / "smoke.pt")
    assert tuned["train"]["rounds"][0]["init"] == str(tmp_path / "smoke.pt")
    assert tuned["train"]["rounds"][0]["mined_windows"] >= 0

    # A narrower network learns the trained one's per-frame probabilities beside its own labels; its
    # channels are kept in the model's arch, so its .pt loads back and its ONNX matches it.
    student = train(shared_data, tmp_path / "student", steps=20, batch=8, workers=1, limit_per_class=1, cache_dir=None,
                    name="student", progress=False, pool_size=48, rounds=1, widths=(8, 8, 12, 12, 16),
                    elder=tmp_path / "smoke.pt")
    assert student["arch"]["widths"] == [8, 8, 12, 12, 16] and student["train"]["elder"] == str(tmp_path / "smoke.pt")
    assert student["n_params"] < meta["n_params"] / 5
    small = trained_network(tmp_path / "student" / "student.json")
    for a, b in zip(ClassifierDetector(tmp_path / "student" / "student.json")._run.with_teacher_classes(mel),
                    torch_outputs(small, mel), strict=True):
        assert a.shape == b.shape and np.max(np.abs(a - b)) < 1e-4
    # An elder trained on another split would have learned this split's validation audio: refused.
    other = json.loads((tmp_path / "smoke.json").read_text())
    other["train_groups"] = other["train_groups"][1:]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "smoke.json").write_text(json.dumps(other))
    (tmp_path / "other" / "smoke.pt").write_bytes((tmp_path / "smoke.pt").read_bytes())
    with pytest.raises(ValueError, match="other groups"):
        train(shared_data, tmp_path / "refused", steps=2, batch=8, workers=1, limit_per_class=1, cache_dir=None,
              name="refused", progress=False, pool_size=16, rounds=1, elder=tmp_path / "other" / "smoke.pt")


def test_eval_writes_the_metrics_shape(shared_data, tmp_path):
    from earwitness.training.evaluate import evaluate

    out = tmp_path / "metrics.json"
    evaluate(shared_data, out=out, limit=25, progress=False, long_day_hours=0.02)
    m = json.loads(out.read_text())
    # Issue 3's shape; other detectors' figures may sit beside it under their own keys ("anomaly").
    assert {"model", "background_hours", "labels"} <= set(m)
    assert isinstance(m["model"], str) and isinstance(m["background_hours"], float)
    assert "glass_break" in m["labels"]
    keys = {"clip_auc", "threshold", "event_recall", "event_precision", "event_f1", "false_alarms_per_hour",
            "onset_false_alarms_per_hour", "false_alarm_sources"}  # issue 12 added the last two
    for label, figures in m["labels"].items():
        assert set(figures) == keys, label
        assert isinstance(figures["onset_false_alarms_per_hour"], float)
        for source in figures["false_alarm_sources"]:
            assert source["condition"] in ("plain", "after_silence", "quiet_floor", "long_day")
            assert source["events"] >= 1 and 0 < source["peak"] <= 1 and source["path"]
    gb = m["labels"]["glass_break"]
    assert gb["event_recall"] is not None  # the labelled recording is always evaluated
    day = m["long_day"]
    assert day["hours"] == 0.02
    # The classifier's labels, and the anomaly detector's (None: a 72 s day ends inside its learning period).
    assert set(day["false_alarms_per_24h"]) == {*m["labels"], "anomaly"} and day["false_alarms_per_24h"]["anomaly"] is None
    assert set(day["false_alarm_sources"]) == {"anomaly"}
    assert {"incident_recall", "time_to_alarm_ms"} <= set(day) and set(day["time_to_alarm_ms"]) == {"p50", "p95"}


def test_train_and_eval_refuse_what_they_cannot_read_before_a_run_starts(tmp_path, capsys):
    """A corpus without its manifest, a model that is not there or is not a model, a config that does not
    validate, a missing starting model: one line naming the option, status 2, no traceback, nothing written."""
    from earwitness.cli import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "manifest.csv").write_text("path,class,source,original_path,licence,group_id,duration_s\n")
    (tmp_path / "garbage.json").write_text("[1, 2]")
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    (tmp_path / "bad.yaml").write_text("windows: {hop_s: -1}\n")
    out = tmp_path / "out"
    cases = [
        (["eval", "--data", str(tmp_path / "nowhere")], "--data"),
        (["eval", "--data", str(corpus), "--model", str(tmp_path / "missing.json")], "--model"),
        (["eval", "--data", str(corpus), "--model", str(tmp_path / "garbage.json")], "--model"),
        (["eval", "--data", str(corpus), "--labels", "glass_break", "no_such_label"], "--labels"),
        (["eval", "--data", str(corpus), "--config", str(tmp_path / "bad.yaml"), "--out", str(out / "m.json")],
         "windows.hop_s"),
        (["train", "--data", str(corpus), "--out", str(out), "--init", str(tmp_path / "missing.pt")], "--init"),
    ]
    for argv, named in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"earwitness {argv[0]}: ") and named in err and "Traceback" not in err, (argv, err)
    assert not out.exists()
