"""Config reloads of the real daemon: a change is applied whole or rejected whole, and never silences it."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.audio import write_bursts
from tests.daemon_process import ENERGY, DaemonProcess, earwitness_command, write_config
from tests.test_daemon import windows_after

REJECTED = "config reload rejected, the running config stays"


def listening_room(tmp_path: Path, daemons) -> tuple[dict, Path, DaemonProcess]:
    """A daemon listening to a looping file (source `room`): its settings, its config file, the daemon."""
    audio = write_bursts(tmp_path / "bursts.wav", 3.0, [1.0])
    settings = {"log_level": "debug", "detectors": ENERGY, "sources": [{"name": "room", "input": f"file:{audio}", "loop": True}]}
    config = write_config(tmp_path / "config.yaml", settings)
    daemon = daemons("--config", str(config))
    daemon.wait_for_log("window", source="room")
    return settings, config, daemon


def sensor_lines(daemon) -> list[bool]:
    return [line["enabled"] for line in daemon.lines() if line.get("type") == "sensor"]


def test_missing_classifier_model_is_rejected_and_the_running_config_stays(tmp_path: Path, daemons) -> None:
    settings, config, daemon = listening_room(tmp_path, daemons)

    missing = tmp_path / "no-such-model.json"
    write_config(config, {**settings, "detectors": [{"type": "classifier", "model": str(missing)}]})
    rejected = daemon.wait_for_log(REJECTED)
    assert "detectors[0].model" in rejected["error"] and "no-such-model.json" in rejected["error"]
    # The running config is kept whole: the energy detector still scores the room...
    daemon.wait_for(lambda: windows_after(daemon, time.time() - 0.5, "room"), timeout=5, what="windows still flowing")
    # ...and the watcher lives on: the next edit (the privacy switch) is applied.
    write_config(config, {**settings, "sensors_enabled": False})
    daemon.wait_for(lambda: sensor_lines(daemon) == [True, False], timeout=5, what="the sensor switched off")
    assert daemon.stop() == 0
    assert not [l for l in daemon.logs() if l.get("exc_info") or l.get("exception")]


def test_config_check_rejects_a_missing_classifier_model(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", {"detectors": [{"type": "classifier", "model": str(tmp_path / "gone.json")}]})
    result = subprocess.run(earwitness_command("config", "check", str(config)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "detectors[0].model" in result.stderr and "gone.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_classifier_model_at_start_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", {"detectors": [{"type": "classifier", "model": str(tmp_path / "gone.json")}]})
    result = subprocess.run(earwitness_command("run", "--config", str(config), "--source", "-"), capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "detectors[0].model" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_latin1_save_is_rejected_and_the_watcher_and_sighup_survive_it(tmp_path: Path, daemons) -> None:
    settings, config, daemon = listening_room(tmp_path, daemons)

    config.write_bytes(config.read_bytes() + "# Küche\n".encode("latin-1"))
    assert "not UTF-8" in daemon.wait_for_log(REJECTED, reason="config file changed")["error"]
    daemon.process.send_signal(signal.SIGHUP)
    assert "not UTF-8" in daemon.wait_for_log(REJECTED, reason="SIGHUP")["error"]
    assert daemon.process.poll() is None

    write_config(config, {**settings, "sensors_enabled": False})
    daemon.wait_for(lambda: sensor_lines(daemon) == [True, False], timeout=5, what="the privacy switch applied")
    assert daemon.stop() == 0


def test_an_empty_file_is_rejected_on_reload_and_opens_no_default_microphone(tmp_path: Path, daemons) -> None:
    settings, config, daemon = listening_room(tmp_path, daemons)

    config.write_text("")
    assert "no settings" in daemon.wait_for_log(REJECTED)["error"]
    config.write_text("- a list\n- not a mapping\n")
    daemon.process.send_signal(signal.SIGHUP)
    assert "must be a mapping" in daemon.wait_for_log(REJECTED, reason="SIGHUP")["error"]
    daemon.wait_for(lambda: windows_after(daemon, time.time() - 0.5, "room"), timeout=5, what="windows still flowing")
    assert {l["source"] for l in daemon.lines() if l.get("type") == "sensor"} == {"room"}, "no default source was opened"
    assert daemon.stop() == 0


def test_duplicate_keys_are_rejected_with_their_path(tmp_path: Path, daemons) -> None:
    settings, config, daemon = listening_room(tmp_path, daemons)

    config.write_text(config.read_text() + "sensors_enabled: true\nsensors_enabled: false\n")
    assert "duplicate key sensors_enabled" in daemon.wait_for_log(REJECTED)["error"]
    time.sleep(0.5)
    assert sensor_lines(daemon) == [True]
    assert daemon.stop() == 0
