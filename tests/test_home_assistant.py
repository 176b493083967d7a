"""What Home Assistant sees on the broker over a daemon's life (issue 17): stale entities cleared, commands that
act once, sources that end, states known after HA restarts, captions that say how long the sound lasted.
A real mosquitto and the real daemon (`earwitness run`); script/ha-check runs a real Home Assistant."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from tests.audio import write_bursts
from tests.daemon_process import write_config
from tests.mqtt_broker import MOSQUITTO, Broker, Subscriber, wait_until
from tests.test_captions import CAPTION, llm
from tests.test_mqtt import DEVICE, burst_loop, daemon_config, hub, logs_with, source, start_daemon

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")

__all__ = ["llm"]  # a fixture, imported for pytest
BASE = f"earwitness/{DEVICE}"
CLEARED = "mqtt cleared retained topics the config no longer has"


def ha_hub(broker: Broker) -> dict:
    return hub("home", broker, discovery={"enabled": True, "off_delay_s": 30}, allow_remote_control=True)


def retained_now(broker: Broker, cleanup: list) -> dict[str, str]:
    """Every retained message on the broker (topic: payload), as a subscriber that connects now gets them.

    mosquitto queues a subscription's retained messages before anything published after it on the same
    connection: once the subscriber's own marker has come back, every retained message has come."""
    marker = f"test/marker/{uuid.uuid4()}"
    late = Subscriber(broker, ["homeassistant/#", "earwitness/#", marker], persistent=False)
    cleanup.append(late)
    late.publish(marker, "here")
    wait_until(lambda: late.on(marker), what="the marker")
    return {m.topic: m.text for m in late.matching(lambda m: m.retain)}


def retained_when(broker: Broker, cleanup: list, predicate: Callable[[dict[str, str]], bool], what: str) -> dict[str, str]:
    """The retained messages once `predicate` holds for them (the daemon's publishing takes a moment)."""
    found: dict[str, str] = {}

    def check() -> bool:
        found.update(retained_now(broker, cleanup))
        if predicate(found):
            return True
        found.clear()
        return False

    wait_until(check, what=what, interval=0.3)
    return found


def mentioning(retained: dict[str, str], *names: str) -> set[str]:
    return {topic for topic in retained if any(name in topic for name in names)}


def test_entities_of_a_removed_source_or_label_are_cleared_on_reload_and_at_start(tmp_path: Path, cleanup: list) -> None:
    broker = Broker(tmp_path / "broker").start()
    cleanup.append(broker)
    audio = burst_loop(tmp_path / "loop.wav")
    rooms = [source(name, audio) for name in ("kitchen", "garage", "hall")]
    detectors = [{"type": "energy", "label": "loud"}, {"type": "energy", "label": "glass_break"}]
    config = daemon_config(tmp_path, sources=rooms, hubs=[ha_hub(broker)], detectors=detectors)
    daemon = start_daemon(tmp_path, config)
    cleanup.append(daemon)
    daemon.wait_for_log("mqtt discovery announced", hub="home")
    # The label switch states come from the hub's remote-control side a moment after the label states.
    every = {f"{BASE}/{room}/{label}{suffix}" for room in ("kitchen", "garage", "hall")
             for label in ("loud", "glass_break") for suffix in ("", "/switch")}
    before = retained_when(broker, cleanup, lambda r: every <= r.keys(), "every retained topic")
    hall = mentioning(before, "/hall", "hall_")
    assert f"homeassistant/binary_sensor/{DEVICE}/hall_glass_break/config" in hall
    assert {f"{BASE}/hall/sensor", f"{BASE}/hall/availability", f"{BASE}/hall/loud"} <= hall

    # Reload without the hall: its configs and states are cleared, the others stay.
    config_path = tmp_path / "daemon" / "config.yaml"
    write_config(config_path, {**config, "sources": rooms[:2]})
    daemon.wait_for_log(CLEARED, hub="home")
    after_reload = retained_when(broker, cleanup, lambda r: not mentioning(r, "/hall", "hall_"), "the hall's topics cleared")
    assert mentioning(after_reload, "/garage", "garage_") == mentioning(before, "/garage", "garage_")

    # Stopped, then started without the garage and without glass_break: cleared at start.
    assert daemon.stop() == 0
    smaller = {**config, "sources": rooms[:1], "detectors": detectors[:1]}
    daemon = start_daemon(tmp_path, smaller, tag="again")
    cleanup.append(daemon)
    cleared = daemon.wait_for_log(CLEARED, hub="home")
    assert cleared["count"] == len(mentioning(after_reload, "/garage", "garage_", "glass_break"))
    after_start = retained_when(broker, cleanup, lambda r: not mentioning(r, "/garage", "garage_", "glass_break"),
                                "the garage's and glass_break's topics cleared")
    assert {f"homeassistant/binary_sensor/{DEVICE}/kitchen_loud/config", f"{BASE}/kitchen/loud",
            f"{BASE}/kitchen/sensor", f"{BASE}/kitchen/availability"} <= set(after_start)


def test_a_command_acts_once_and_a_retained_one_is_cleared_not_applied(tmp_path: Path, cleanup: list) -> None:
    broker = Broker(tmp_path / "broker").start()
    cleanup.append(broker)
    kitchen = source("kitchen", burst_loop(tmp_path / "k.wav"))
    config = daemon_config(tmp_path, sources=[kitchen], hubs=[ha_hub(broker)])
    watch = Subscriber(broker, [f"{BASE}/kitchen/sensor"], persistent=False)
    cleanup.append(watch)
    daemon = start_daemon(tmp_path, config)
    cleanup.append(daemon)
    sensor, command = f"{BASE}/kitchen/sensor", f"{BASE}/kitchen/sensor/set"

    def switch() -> str | None:
        return watch.on(sensor)[-1].text if watch.on(sensor) else None

    def retained_command() -> str | None:
        return retained_now(broker, cleanup).get(command)

    wait_until(lambda: switch() == "enabled", what="sensor enabled")
    # Published with retain while the daemon is connected: obeyed once, and not left on the broker.
    watch.publish(command, "OFF", retain=True)
    wait_until(lambda: switch() == "disabled", what="sensor disabled by the command")
    wait_until(lambda: retained_command() is None, what="the retained command cleared")

    # The command happened after the config: an unrelated config change does not undo it...
    config_path = tmp_path / "daemon" / "config.yaml"
    write_config(config_path, {**config, "log_level": "debug"})
    daemon.wait_for_log("config reloaded", reason="config file changed")
    assert switch() == "disabled"
    # ...a later change of the config's own say on that sensor does.
    write_config(config_path, {**config, "sources": [{**kitchen, "enabled": False}]})
    wait_until(lambda: len(logs_with(daemon, "config reloaded")) == 2, what="second reload")
    watch.publish(command, "ON")
    wait_until(lambda: switch() == "enabled", what="sensor enabled by the command")
    write_config(config_path, {**config, "sources": [{**kitchen, "enabled": True}], "log_level": "debug"})
    wait_until(lambda: len(logs_with(daemon, "config reloaded")) == 3, what="third reload")
    assert switch() == "enabled"
    assert daemon.stop() == 0

    # A command left retained while the daemon was away is cleared at connect and not applied.
    watch.publish(command, "OFF", retain=True)
    daemon = start_daemon(tmp_path, config, tag="again")
    cleanup.append(daemon)
    daemon.wait_for_log("mqtt command cleared, not applied: it was retained on the broker", topic=command, payload="OFF")
    wait_until(lambda: retained_command() is None, what="the stale command cleared")
    assert switch() == "enabled"
    assert not [line for line in daemon.lines() if line.get("type") == "sensor" and line["enabled"] is False]


def test_a_source_that_ends_says_so_and_comes_back_when_restarted(tmp_path: Path, cleanup: list) -> None:
    broker = Broker(tmp_path / "broker").start()
    cleanup.append(broker)
    door = {"name": "door", "input": f"file:{write_bursts(tmp_path / 'door.wav', 1.5, [0.2])}", "location": "hall",
            "loop": False}
    config = daemon_config(tmp_path, sources=[door, source("kitchen", burst_loop(tmp_path / "k.wav"))],
                           hubs=[ha_hub(broker)])
    watch = Subscriber(broker, [f"{BASE}/#"], persistent=False)
    cleanup.append(watch)
    daemon = start_daemon(tmp_path, config)
    cleanup.append(daemon)

    def last(topic: str) -> str | None:
        messages = watch.on(topic)
        return messages[-1].text if messages else None

    def ended() -> bool:
        return last(f"{BASE}/door/sensor") == "disabled" and last(f"{BASE}/door/availability") == "offline"

    wait_until(ended, timeout=20, what="the ended file's switch off and its entities unavailable")
    assert last(f"{BASE}/kitchen/availability") == "online" and last(f"{BASE}/kitchen/sensor") == "enabled"
    retained_when(broker, cleanup, lambda r: r.get(f"{BASE}/door/availability") == "offline", "offline retained")

    # Its switch turned on restarts it: it listens, and says so, until it ends again.
    watch.clear()
    watch.publish(f"{BASE}/door/sensor/set", "ON")
    wait_until(lambda: [m.text for m in watch.on(f"{BASE}/door/availability")][:1] == ["online"], what="door online")
    wait_until(ended, timeout=20, what="the file ended a second time")
    assert len(logs_with(daemon, "source listening", source="door")) == 2

    # A restart of the daemon brings it back too.
    assert daemon.stop() == 0
    watch.clear()
    daemon = start_daemon(tmp_path, config, tag="again")
    cleanup.append(daemon)
    wait_until(lambda: "online" in [m.text for m in watch.on(f"{BASE}/door/availability")], what="door online again")
    wait_until(ended, timeout=20, what="the file ended after the restart")


def test_states_are_known_at_connect_and_after_home_assistant_restarts(tmp_path: Path, cleanup: list) -> None:
    broker = Broker(tmp_path / "broker").start()
    cleanup.append(broker)
    quiet = source("kitchen", burst_loop(tmp_path / "quiet.wav", bursts=False))
    detectors = [{"type": "energy", "label": "loud"}, {"type": "energy", "label": "glass_break"}]
    config = daemon_config(tmp_path, sources=[quiet], hubs=[ha_hub(broker)], detectors=detectors)
    daemon = start_daemon(tmp_path, config)
    cleanup.append(daemon)
    daemon.wait_for_log("mqtt discovery announced", hub="home")
    states = [f"{BASE}/kitchen/loud", f"{BASE}/kitchen/glass_break", f"{BASE}/kitchen/sensor", f"{BASE}/kitchen/availability"]
    # Nothing was heard, yet a subscriber that comes now (HA starting) finds every state.
    retained_when(broker, cleanup, lambda r: [r.get(topic) for topic in states] == ["OFF", "OFF", "enabled", "online"],
                  "every state retained")

    # HA restarts (its birth message): discovery and every state come again.
    ha = Subscriber(broker, [f"{BASE}/#"], persistent=False)
    cleanup.append(ha)
    wait_until(lambda: ha.on(f"{BASE}/kitchen/sensor"), what="retained state")
    ha.clear()
    ha.publish("homeassistant/status", "online")
    wait_until(lambda: all(ha.on(topic) for topic in states), what="states published again")
    assert [ha.on(topic)[-1].text for topic in states] == ["OFF", "OFF", "enabled", "online"]

    # A daemon killed mid-event leaves ON; the next one says OFF at connect.
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(5)
    ha.publish(f"{BASE}/kitchen/loud", "ON", retain=True)
    daemon = start_daemon(tmp_path, config, tag="again")
    cleanup.append(daemon)
    daemon.wait_for_log("mqtt discovery announced", hub="home")
    retained_when(broker, cleanup, lambda r: r.get(f"{BASE}/kitchen/loud") == "OFF", "OFF at connect")


def test_a_complete_caption_states_the_events_duration(tmp_path: Path, cleanup: list, llm) -> None:
    broker = Broker(tmp_path / "broker").start()
    cleanup.append(broker)
    server = llm()  # its caption says nothing of how long the sound lasted
    hall = {"name": "hall", "input": f"file:{write_bursts(tmp_path / 'hall.wav', 3.5, [1.0])}", "location": "hall",
            "loop": False}
    config = daemon_config(tmp_path, sources=[hall], hubs=[ha_hub(broker)],
                           captions={"backend": "openai", "when": "complete",
                                     "openai": {"base_url": server.url, "model": "m"}})
    watch = Subscriber(broker, [f"{BASE}/events"], persistent=False)
    cleanup.append(watch)
    daemon = start_daemon(tmp_path, config)
    cleanup.append(daemon)
    assert daemon.process.wait(timeout=30) == 0
    messages = {m.json()["type"]: m.json() for m in watch.on(f"{BASE}/events")}
    assert set(messages) == {"start", "end", "update"}
    end, update = messages["end"], messages["update"]
    lasted = (datetime.fromisoformat(end["ended_at"]) - datetime.fromisoformat(end["started_at"])).total_seconds()
    assert 0.4 <= lasted <= 1.5
    assert update["caption"] == CAPTION.removesuffix(".") + f" ({lasted:.1f} s)."
