"""The daemon's one ordered control path: file edits, SIGHUP and remote commands never race each other."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.daemon_process import earwitness_command, write_config
from tests.mqtt_broker import MOSQUITTO, Broker, Subscriber, wait_until
from tests.test_daemon import windows_after
from tests.test_mqtt import DEVICE, burst_loop, daemon_config, hub, logs_with, source, start_daemon

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")


def status(workdir: Path) -> dict:
    result = subprocess.run(earwitness_command("status", "--json", "--socket", str(workdir / "status.sock")),
                            capture_output=True, text=True, timeout=30)
    return json.loads(result.stdout)


def open_files(pid: int) -> set[str]:
    files = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            files.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return files


def test_a_burst_of_200_commands_ending_in_off_leaves_no_runner_and_the_sources_closed(tmp_path: Path, cleanup: list) -> None:
    broker = Broker(tmp_path / "broker").start()
    cleanup.append(broker)
    audio = burst_loop(tmp_path / "room.wav")
    rooms = [source(f"room{k}", audio) for k in range(6)]
    settings = daemon_config(tmp_path, sources=rooms, hubs=[hub("home", broker, allow_remote_control=True)], log_level="debug")
    daemon = start_daemon(tmp_path, settings)
    cleanup.append(daemon)
    config = tmp_path / "daemon" / "config.yaml"
    sensor = f"earwitness/{DEVICE}/{{}}/sensor"
    remote = Subscriber(broker, [sensor.format("+")], persistent=False)
    cleanup.append(remote)
    daemon.wait_for_log("mqtt connected", hub="home")
    for room in rooms:
        daemon.wait_for_log("window", source=room["name"])
    assert str(audio) in open_files(daemon.process.pid)

    # Within about a second, as a flapping automation would: remote ON/OFF to the rooms, every fourth command
    # a file edit (with SIGHUP) that flips the privacy switch; then every room OFF, by file and remotely.
    rng = random.Random(14)
    commands: list[tuple[str, str, bool]] = []
    for i in range(193):
        commands.append(("file", "*", i % 8 == 3) if i % 4 == 3 else ("mqtt", rng.choice(rooms)["name"], i % 2 == 0))
    commands += [("file", "*", False)] + [("mqtt", room["name"], False) for room in rooms]
    assert len(commands) == 200
    sent = []
    for kind, name, on in commands:
        if kind == "mqtt":
            sent.append(remote.client.publish(f"{sensor.format(name)}/set", "ON" if on else "OFF", qos=1))
        else:
            write_config(config, {**settings, "sources": [{**room, "enabled": on} for room in rooms]})
            daemon.process.send_signal(signal.SIGHUP)
        time.sleep(0.005)
    for message in sent:
        message.wait_for_publish(5)

    mqtt_commands = sum(kind == "mqtt" for kind, _, _ in commands)
    wait_until(lambda: len(logs_with(daemon, "mqtt sensor command")) == mqtt_commands, timeout=20,
               what="every remote command received")
    time.sleep(2.0)  # the watcher settles on the last file edit and reloads it too
    settled = time.time()
    time.sleep(1.5)
    figures = status(tmp_path / "daemon")
    assert figures["runners"] == 0, "no runner may survive the OFF"
    assert {name: room["state"] for name, room in figures["sources"].items()} == {room["name"]: "disabled" for room in rooms}
    assert [l for l in daemon.logs() if l.get("event") == "window" and l["timestamp"] > _iso(settled)] == [], \
        "no window is processed once OFF"
    assert str(audio) not in open_files(daemon.process.pid), "the sources are closed"

    late = Subscriber(broker, [sensor.format("+")], persistent=False)
    cleanup.append(late)
    wait_until(lambda: len(late.messages) == len(rooms), what="the retained sensor states")
    assert {(m.topic, m.text, m.retain) for m in late.messages} == {(sensor.format(room["name"]), "disabled", True) for room in rooms}, \
        "the retained state of every room's sensor is OFF"
    assert daemon.process.poll() is None
    assert not [l for l in daemon.logs() if "exception" in l]
    assert "Task exception was never retrieved" not in daemon.stderr_path.read_text()

    # The last command wins the other way too: ON brings exactly one runner back.
    remote.publish(f"{sensor.format('room0')}/set", "ON")
    daemon.wait_for(lambda: windows_after(daemon, time.time() - 0.5, "room0"), timeout=10, what="windows again")
    assert status(tmp_path / "daemon")["runners"] == 1
    assert daemon.stop() == 0


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")
