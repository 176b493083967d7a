"""The energy gate of low-power listening: the model runs on few windows of a quiet stream and the
events are those without it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile

from earwitness.app import build_pipeline
from earwitness.config import Config, GateConfig, SourceConfig
from earwitness.core.events import EventChange
from earwitness.detectors.gate import EnergyGate

RATE = 16_000


def test_the_gate_opens_on_a_rise_above_the_floor_and_holds() -> None:
    gate = EnergyGate(GateConfig(enabled=True, margin_db=6, hold_s=1.0, floor_adapt_s=10))
    assert not gate.admit(-60.0, 0.0)
    assert not gate.admit(-55.0, 0.25), "5 dB: under the margin"
    assert gate.admit(-40.0, 0.5)
    assert gate.admit(-60.0, 1.25) and gate.admit(-60.0, 1.5), "held for hold_s after the last rise"
    assert not gate.admit(-60.0, 1.75)
    assert gate.floor_dbfs is not None and -60.0 <= gate.floor_dbfs < -55.0
    for k in range(200):  # a lasting louder background (an engine) becomes the floor
        gate.admit(-40.0, 2.0 + k * 0.25)
    assert not gate.admit(-40.0, 60.0)


def events(config: Config, audio: np.ndarray) -> tuple[list[tuple[str, float]], float]:
    """(label, start_s) of the events, and the share of windows the model ran on."""
    found: list[tuple[str, float]] = []

    def on_change(change: EventChange) -> None:
        if change.type == "start":
            found.append((change.event.label, round(change.event.start_s, 3)))

    pipeline = build_pipeline(config, SourceConfig(name="gate", input="-"), on_change)
    for k in range(0, len(audio), RATE // 10):  # as a sound card hands it over: 0.1 s chunks
        pipeline.process(audio[k : k + RATE // 10])
    pipeline.finish()
    return found, pipeline.windows_scored / pipeline.windows_seen


def glass_breaks(data: Path, count: int) -> list[np.ndarray]:
    with (data / "manifest.csv").open() as handle:
        rows = sorted((r for r in csv.DictReader(handle) if r["class"] == "glass_break"), key=lambda r: r["path"])
    clips = []
    for row in rows[:: max(1, len(rows) // count)][:count]:
        audio, rate = soundfile.read(str(data / row["path"]), dtype="float32", always_2d=True)
        if rate == RATE:
            clip = audio.mean(axis=1)[: 3 * RATE]
            clips.append(clip / max(float(np.abs(clip).max()), 1e-6))
    return clips


def test_with_the_gate_the_same_events_on_a_fraction_of_the_windows(shared_data: Path) -> None:
    """Glass breaks over a -55 dBFS floor, quiet (-45...-25 dBFS peak) and loud (-15 dBFS): the gate
    finds every event the model finds without it, at the same time, on far fewer windows."""
    rng = np.random.default_rng(3)
    parts = []
    for k, clip in enumerate(glass_breaks(shared_data, 6)):
        floor = rng.normal(0, 10 ** (-55 / 20), 15 * RATE).astype(np.float32)
        peak_dbfs = -45 + 20 * rng.random() if k % 2 else -15.0
        floor[2 * RATE : 2 * RATE + len(clip)] += clip * 10 ** (peak_dbfs / 20)
        parts.append(floor)
    audio = np.concatenate(parts)
    plain = Config(detectors=[{"type": "classifier"}])  # type: ignore[list-item]
    gated = plain.model_copy(update={"gate": GateConfig(enabled=True)})
    without, share_without = events(plain, audio)
    with_gate, share = events(gated, audio)
    assert [label for label, _ in without].count("glass_break") >= 4, "the breaks are found without the gate"
    assert with_gate == without
    assert share_without == 1.0 and share < 0.5, f"the model ran on {share:.0%} of the windows"
