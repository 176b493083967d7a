"""Unreadable and truncated audio files: reported with their name and reason, what is readable counts, the run goes on."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.audio import write_bursts
from tests.daemon_process import ENERGY, earwitness_command, write_config


def truncated(source: Path, target: Path) -> Path:
    """The first half of a FLAC file, as an interrupted copy or a full card leaves it."""
    raw = source.read_bytes()
    target.write_bytes(raw[: len(raw) // 2])
    return target


def test_detect_reports_a_truncated_flac_keeps_its_readable_part_and_goes_on(tmp_path: Path) -> None:
    whole = write_bursts(tmp_path / "whole.flac", 10.0, [1.0, 8.0])
    cut = truncated(whole, tmp_path / "cut.flac")
    after = write_bursts(tmp_path / "after.wav", 4.0, [2.0])
    config = write_config(tmp_path / "config.yaml", {"detectors": ENERGY})
    result = subprocess.run(earwitness_command("detect", str(cut), str(tmp_path / "noise.wav"), str(after), "--config", str(config)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, "a failed file makes the run fail, at the end"
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("earwitness:")]
    assert len(errors) == 2
    assert "cut.flac" in errors[0] and "past" in errors[0] and "decoder" in errors[0]
    assert "noise.wav" in errors[1]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(Path(e["source"]).name, round(e["start_s"])) for e in events] == [("cut.flac", 1), ("after.wav", 2)], \
        "the burst in the readable half of the cut file is found, the next file is processed"


def test_eval_counts_the_readable_part_of_a_truncated_recording_and_names_it(tmp_path: Path, capsys) -> None:
    pytest.importorskip("tqdm", reason="eval needs the `train` extra")
    from earwitness.config import parse_config
    from earwitness.detectors import build_detectors
    from earwitness.training.data import Item
    from earwitness.training.streaming import run_recording

    cut = truncated(write_bursts(tmp_path / "whole.flac", 10.0, [1.0, 8.0]), tmp_path / "cut.flac")
    config = parse_config({"detectors": ENERGY})
    failed: list[str] = []
    result = run_recording(config, build_detectors(config.detectors)[0], cut, Item("events/cut.flac", "loud", "g", 10.0), failed)
    assert failed == [str(cut)]
    assert "cut.flac" in capsys.readouterr().err
    assert 2.0 < result.duration_s < 6.0
    assert [round(start) for label, start, end, score in result.events] == [1]
