"""The real daemon and CLI, driven with generated audio through the real pipeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.audio import tone_bursts, write_bursts
from tests.daemon_process import ENERGY, earwitness_command, write_config

ONSETS = [2.0, 5.0, 8.0]


def events_of(lines: list[dict], change: str) -> list[dict]:
    return [line for line in lines if line.get("type") == change]


def test_detect_prints_one_line_per_event(tmp_path: Path) -> None:
    audio = write_bursts(tmp_path / "bursts.wav", 10.0, ONSETS)
    quiet = write_bursts(tmp_path / "quiet.flac", 4.0, [])
    config = write_config(tmp_path / "config.yaml", {"detectors": ENERGY})
    result = subprocess.run(earwitness_command("detect", str(audio), str(quiet), "--config", str(config)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [set(e) for e in events] == [{"source", "label", "start_s", "end_s", "score"}] * 3
    assert all(e["source"] == str(audio) and e["label"] == "loud" for e in events)
    for event, onset in zip(events, ONSETS):
        assert abs(event["start_s"] - onset) <= 0.5
        assert onset + 0.5 <= event["end_s"] <= onset + 1.5
        assert event["score"] > 0.9


def test_detect_stops_quietly_when_its_reader_goes_away(tmp_path: Path) -> None:
    """`earwitness detect ... | head -1`: no BrokenPipeError traceback, the exit status of a SIGPIPE."""
    audio = write_bursts(tmp_path / "bursts.wav", 60.0, [float(t) for t in range(1, 59, 2)])
    config = write_config(tmp_path / "config.yaml", {"detectors": ENERGY})
    process = subprocess.Popen(earwitness_command("detect", *[str(audio)] * 4, "--config", str(config)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    assert json.loads(process.stdout.readline())["label"] == "loud"
    process.stdout.close()  # the reader goes away with about 119 events still to print
    assert process.wait(timeout=60) == 128 + signal.SIGPIPE
    assert process.stderr.read() == ""


def test_detect_reports_unreadable_files_and_goes_on(tmp_path: Path) -> None:
    audio = write_bursts(tmp_path / "bursts.wav", 4.0, [1.0])
    config = write_config(tmp_path / "config.yaml", {"detectors": ENERGY})
    result = subprocess.run(earwitness_command("detect", str(tmp_path / "missing.wav"), str(audio), "--config", str(config)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "missing.wav" in result.stderr
    assert len(result.stdout.splitlines()) == 1


def test_run_file_source_emits_events_and_exits_at_end(tmp_path: Path, daemons) -> None:
    audio = write_bursts(tmp_path / "bursts.wav", 4.0, [1.0])
    config = write_config(tmp_path / "config.yaml", {
        "device_id": "hall-hub",
        "detectors": ENERGY,
        "sources": [{"name": "hall", "input": f"file:{audio}", "location": "hallway"}],
    })
    daemon = daemons("--config", str(config))
    assert daemon.process.wait(timeout=20) == 0
    lines = daemon.lines()
    assert lines[0] == {"type": "sensor", "source": "hall", "location": "hallway", "enabled": True, "reason": "startup"}
    start, end = events_of(lines, "start"), events_of(lines, "end")
    assert len(start) == len(end) == 1
    assert start[0]["id"] == end[0]["id"]
    assert {k: start[0][k] for k in ("device", "source", "location", "label", "ended_at", "caption")} == {
        "device": "hall-hub", "source": "hall", "location": "hallway", "label": "loud", "ended_at": None, "caption": None}
    assert end[0]["ended_at"] > end[0]["started_at"]
    assert abs(start[0]["start_s"] - 1.0) <= 0.5


def test_run_paces_files_in_real_time(tmp_path: Path, daemons) -> None:
    audio = write_bursts(tmp_path / "bursts.wav", 3.0, [1.0])
    began = time.monotonic()
    config = write_config(tmp_path / "config.yaml", {"detectors": ENERGY})
    daemon = daemons("--config", str(config), "--source", f"file:{audio}")
    assert daemon.process.wait(timeout=20) == 0
    assert time.monotonic() - began >= 3.0


def test_stdin_source(tmp_path: Path, daemons) -> None:
    pcm = (tone_bursts(6.5, [1.5, 5.0]) * 32767).astype("<i2").tobytes()
    config = write_config(tmp_path / "config.yaml", {"detectors": ENERGY})
    daemon = daemons("--config", str(config), "--source", "-", stdin=subprocess.PIPE)
    daemon.process.stdin.write(pcm)
    daemon.process.stdin.close()
    assert daemon.process.wait(timeout=20) == 0
    starts = events_of(daemon.lines(), "start")
    assert [line["source"] for line in starts] == ["stdin", "stdin"]
    assert [abs(line["start_s"] - onset) <= 0.5 for line, onset in zip(starts, [1.5, 5.0])] == [True, True]


def test_several_sources_each_with_their_location(tmp_path: Path, daemons) -> None:
    cabin = write_bursts(tmp_path / "cabin.wav", 3.0, [1.0])
    exterior = write_bursts(tmp_path / "exterior.wav", 3.0, [])
    config = write_config(tmp_path / "config.yaml", {"detectors": ENERGY, "sources": [
        {"name": "cabin", "input": f"file:{cabin}", "location": "car_cabin"},
        {"name": "exterior", "input": f"file:{exterior}", "location": "car_exterior"},
    ]})
    daemon = daemons("--config", str(config))
    assert daemon.process.wait(timeout=20) == 0
    sensors = {line["source"]: line["location"] for line in daemon.lines() if line["type"] == "sensor"}
    assert sensors == {"cabin": "car_cabin", "exterior": "car_exterior"}
    assert [(l["source"], l["location"]) for l in events_of(daemon.lines(), "start")] == [("cabin", "car_cabin")]


def windows_after(daemon, moment: float, source: str) -> list[dict]:
    return [l for l in daemon.logs() if l.get("event") == "window" and l.get("source") == source
            and _epoch(l["timestamp"]) > moment]


def _epoch(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def test_privacy_switch_closes_and_reopens_the_source(tmp_path: Path, daemons) -> None:
    audio = write_bursts(tmp_path / "bursts.wav", 3.0, [1.0])
    settings = {"log_level": "debug", "detectors": ENERGY, "sources": [{"name": "room", "input": f"file:{audio}", "loop": True}]}
    config = write_config(tmp_path / "config.yaml", settings)
    daemon = daemons("--config", str(config))
    daemon.wait_for_log("window", source="room")

    write_config(config, {**settings, "sensors_enabled": False})
    switched = time.time()
    daemon.wait_for(lambda: any(l.get("type") == "sensor" and not l["enabled"] for l in daemon.lines()),
                    timeout=2.5, what="sensor disabled within 2 s")
    closed = time.time()
    time.sleep(1.5)
    assert windows_after(daemon, closed + 0.05, "room") == [], "no window is processed while the sensor is off"
    assert closed - switched <= 2.5

    write_config(config, settings)
    daemon.wait_for(lambda: windows_after(daemon, time.time() - 0.5, "room"), timeout=5, what="windows again")
    sensor_lines = [l["enabled"] for l in daemon.lines() if l.get("type") == "sensor"]
    assert sensor_lines == [True, False, True]
    assert daemon.stop() == 0


def test_sighup_applies_per_source_switch_and_rejects_bad_config(tmp_path: Path, daemons) -> None:
    audio = write_bursts(tmp_path / "bursts.wav", 3.0, [1.0])
    source = {"name": "room", "input": f"file:{audio}", "loop": True}
    config = write_config(tmp_path / "config.yaml", {"log_level": "debug", "detectors": ENERGY, "sources": [source]})
    daemon = daemons("--config", str(config))
    daemon.wait_for_log("window", source="room")

    config.write_text("sources: [{name: room, input: file:x, colour: red}]\n")
    daemon.wait_for_log("config reload rejected, the running config stays")
    assert "sources[0].colour" in daemon.wait_for_log("config reload rejected, the running config stays")["error"]
    daemon.wait_for(lambda: windows_after(daemon, time.time() - 0.5, "room"), timeout=5, what="windows still flowing")

    write_config(config, {"log_level": "debug", "detectors": ENERGY, "sources": [{**source, "enabled": False}]})
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda: any(l.get("type") == "sensor" and not l["enabled"] for l in daemon.lines()),
                    timeout=2.5, what="per-source switch off")
    assert daemon.stop() == 0


def test_sigterm_stops_within_two_seconds(tmp_path: Path, daemons) -> None:
    audio = write_bursts(tmp_path / "bursts.wav", 3.0, [0.5])
    config = write_config(tmp_path / "config.yaml", {"detectors": ENERGY, "sources": [{"name": "room", "input": f"file:{audio}", "loop": True}]})
    daemon = daemons("--config", str(config))
    daemon.wait_for(lambda: events_of(daemon.lines(), "start"), what="an open event")
    began = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=5) == 0
    assert time.monotonic() - began < 2.0
    # the open event was ended and flushed to the sink before exit
    lines = daemon.lines()
    assert {l["id"] for l in events_of(lines, "end")} == {l["id"] for l in events_of(lines, "start")}


def test_invalid_config_at_start_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", {"windows": {"length_s": -1}})
    result = subprocess.run(earwitness_command("run", "--config", str(config)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "windows.length_s" in result.stderr


def test_missing_file_source_fails_cleanly(tmp_path: Path) -> None:
    result = subprocess.run(earwitness_command("run", "--source", f"file:{tmp_path}/nope.wav"),
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")})
    assert result.returncode == 1
    assert "audio file not found" in result.stderr
