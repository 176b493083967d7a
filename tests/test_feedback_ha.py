"""Home Assistant's side of feedback, against a real mosquitto and the real daemon: per source and label, a
"Not <label>" button and a switch that turns the label off there (retained, kept across a restart)."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_process import DaemonProcess, earwitness_command
from tests.mqtt_broker import MOSQUITTO, Broker, Subscriber, wait_until
from tests.test_feedback import LABEL, game_glass_break
from tests.test_feedback_daemon import (
    EVENTS,
    FEEDBACK,
    PHASES_S,
    SOURCE,
    Player,
    _workdir,
    config,
    real_glass_break,
)
from tests.test_mqtt import DEVICE

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")

BUTTON = f"homeassistant/button/{DEVICE}/{SOURCE}_{LABEL}_not/config"
SWITCH = f"homeassistant/switch/{DEVICE}/{SOURCE}_{LABEL}_switch/config"
STATE = f"earwitness/{DEVICE}/{SOURCE}/{LABEL}/switch"
HEARING = f"earwitness/{DEVICE}/{SOURCE}/hearing"


def test_the_not_button_and_the_label_switch(shared_data: Path, tmp_path: Path, cleanup: list) -> None:
    broker = Broker(tmp_path / "broker").start()
    cleanup.append(broker)
    settings: dict[str, Any] = config(tmp_path, broker)
    settings["hubs"][0]["discovery"] = {"enabled": True}
    settings["hubs"][0]["hearing"] = True
    ha = Subscriber(broker, ["homeassistant/#", f"earwitness/{DEVICE}/#"], persistent=False)
    cleanup.append(ha)
    game, real = game_glass_break(shared_data), real_glass_break(shared_data)
    workdir = _workdir(tmp_path, "d0", settings)
    daemon = DaemonProcess(workdir, "--config", str(workdir / "config.yaml"), stdin=subprocess.PIPE)
    cleanup.append(daemon)
    daemon.wait_for_log("mqtt discovery announced", hub="home")
    wait_until(lambda: ha.on(BUTTON) and ha.on(SWITCH) and ha.on(STATE), 10, "the button, the switch and its state")
    button, switch = ha.on(BUTTON)[-1].json(), ha.on(SWITCH)[-1].json()
    assert (button["command_topic"], button["name"]) == (FEEDBACK, f"{SOURCE} not glass break")
    assert (switch["command_topic"], switch["state_topic"]) == (f"{STATE}/set", STATE)
    assert ha.on(STATE)[-1].text == "ON"

    # The button gives a false-alarm verdict on the source's most recent glass break.
    player = Player(daemon, ha)
    player.play(game, PHASES_S[0], "the game's glass break")
    wait_until(lambda: player.glass_events("end"), 10, "its event at the hub")
    event_id = player.glass_events("start")[0]["id"]
    ha.publish(button["command_topic"], button["payload_press"])
    daemon.wait_for_log("feedback stored", event_id=event_id, verdict="false_alarm")

    # The installer's view: attached to the daemon, and the hearing telemetry (at most once a second, no audio).
    view = subprocess.run(earwitness_command("listen", "--once", "--source", SOURCE, "--config", str(workdir / "config.yaml")),
                          capture_output=True, text=True, timeout=30, check=False)
    assert view.returncode == 0, view.stderr
    in_force = settings["events"]["labels"][LABEL]["threshold"]  # the config's, over the model's
    assert "hears:" in view.stdout and "level" in view.stdout and LABEL in view.stdout and f"{in_force:.4f}" in view.stdout
    hearing = wait_until(lambda: ha.on(HEARING) if len(ha.on(HEARING)) >= 2 else None, 10, "hearing telemetry")
    assert set(hearing[-1].json()) == {"at", "level_dbfs", "top_labels"}
    assert all(b.at - a.at >= 0.9 for a, b in itertools.pairwise(hearing))

    # The switch turns glass breaking off at this source, at once: a real glass break raises nothing.
    ha.publish(switch["command_topic"], "banana")
    daemon.wait_for_log("mqtt label switch command ignored: payload must be ON or OFF")
    ha.publish(switch["command_topic"], "OFF")
    wait_until(lambda: ha.on(STATE)[-1].text == "OFF", 10, "the switch's state OFF")
    player.play(real, 0.0, "the real glass break, switched off")
    assert player.raised() == 1 and not player.suppressed()

    # A restart keeps it off (the state is retained and announced again; a retained command found on the
    # broker is stale: cleared, not applied); ON brings it back.
    daemon.process.stdin.close()  # type: ignore[union-attr]
    assert daemon.stop(timeout=10) == 0
    ha.publish(switch["command_topic"], "ON", retain=True)
    ha.clear()
    again = DaemonProcess(workdir, "--config", str(workdir / "config.yaml"), stdin=subprocess.PIPE)
    cleanup.append(again)
    again.wait_for_log("mqtt command cleared, not applied: it was retained on the broker", topic=f"{STATE}/set")
    wait_until(lambda: ha.on(switch["command_topic"]) and ha.on(switch["command_topic"])[-1].payload == b"", 10,
               "the retained command cleared")
    wait_until(lambda: ha.on(STATE) and ha.on(STATE)[-1].text == "OFF", 10, "the state after the restart")
    player = Player(again, ha)
    player.play(real, 0.0, "the real glass break after the restart")
    assert player.raised() == 0
    ha.publish(switch["command_topic"], "ON")
    wait_until(lambda: ha.on(STATE)[-1].text == "ON", 10, "the switch's state ON")
    player.play(real, 0.0, "the real glass break, switched on")
    assert player.raised() == 1
    assert [m.json()["label"] for m in ha.on(EVENTS) if m.json()["type"] == "start"] == [LABEL]
