"""MQTT hubs against a real mosquitto, driven by the real daemon (`earwitness run`) on generated audio."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import soundfile

from tests.audio import tone_bursts
from tests.daemon_process import ENERGY, DaemonProcess, write_config
from tests.mqtt_broker import MOSQUITTO, MOSQUITTO_PASSWD, OPENSSL, Broker, Subscriber, make_tls_files, wait_until

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")

DEVICE = "testdev"
EVENT_KEYS = {"id", "type", "device", "source", "location", "label", "score", "started_at", "ended_at", "caption", "model"}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# --- helpers -----------------------------------------------------------------------------


def burst_loop(path: Path, bursts: bool = True) -> Path:
    """One second of -50 dBFS noise with (or without) a 0.5 s loud tone: looped, about one event a second."""
    audio = tone_bursts(1.0, [0.2] if bursts else [])
    soundfile.write(str(path), audio, 16000)
    return path


def daemon_config(tmp_path: Path, sources: list[dict], hubs: list[dict], **extra: Any) -> dict:
    return {
        "device_id": DEVICE,
        "state_dir": str(tmp_path / "state"),
        "sources": sources,
        "detectors": ENERGY,
        "windows": {"length_s": 0.25, "hop_s": 0.125},
        "events": {"defaults": {"cooldown_s": 0.1, "merge_gap_s": 0.1}},
        "outputs": {"jsonl": {"enabled": True, "path": "-"}},
        "captions": {"backend": "none"},
        "hubs": hubs,
        **extra,
    }


def hub(name: str, broker: Broker, **extra: Any) -> dict:
    return {"name": name, "host": "127.0.0.1", "port": broker.port, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0,
            "discovery": {"enabled": False}, **extra}


def source(name: str, audio: Path, location: str = "home") -> dict:
    return {"name": name, "input": f"file:{audio}", "location": location, "loop": True}


def start_daemon(tmp_path: Path, config: dict, tag: str = "daemon", env: dict | None = None) -> DaemonProcess:
    workdir = tmp_path / tag
    workdir.mkdir()
    path = write_config(workdir / "config.yaml", config)
    return DaemonProcess(workdir, "--config", str(path), env=env)


def event_lines(daemon: DaemonProcess) -> list[dict]:
    return [line for line in daemon.lines() if line.get("type") in ("start", "update", "end")]


def received_events(subscriber: Subscriber, prefix: str) -> list[dict]:
    return [m.json() for m in subscriber.on(f"{prefix}/{DEVICE}/events")]


def pairs(events: list[dict]) -> set[tuple[str, str]]:
    return {(e["id"], e["type"]) for e in events}


def logs_with(daemon: DaemonProcess, event: str, **fields: Any) -> list[dict]:
    return [l for l in daemon.logs() if l.get("event") == event and all(l.get(k) == v for k, v in fields.items())]


def outbox_rows(tmp_path: Path, hub_name: str) -> list[tuple[int, str, bytes]]:
    path = tmp_path / "state" / "mqtt" / f"outbox-{hub_name}.sqlite3"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        return db.execute("SELECT seq, topic, payload FROM outbox ORDER BY seq").fetchall()


# --- tests ---------------------------------------------------------------------------------


def test_event_schema_topics_and_routes(tmp_path: Path, cleanup: list) -> None:
    broker = Broker(tmp_path / "broker").start()
    cleanup.append(broker)
    subscriber = Subscriber(broker, ["#"])
    cleanup.append(subscriber)
    kitchen, garage = burst_loop(tmp_path / "kitchen.wav"), burst_loop(tmp_path / "garage.wav")
    config = daemon_config(
        tmp_path,
        sources=[source("kitchen", kitchen, "house"), source("garage", garage, "carport")],
        hubs=[hub("home", broker, prefix="homehub", route={"labels": ["loud"]}),
              hub("vehicle", broker, prefix="carhub", protocol="3.1.1", route={"labels": ["bang"], "sources": ["garage"]})],
        detectors=[{"type": "energy", "label": "loud"}, {"type": "energy", "label": "bang"}],
    )
    daemon = start_daemon(tmp_path, config)
    cleanup.append(daemon)

    def ended(prefix: str, src: str) -> bool:
        return any(e["type"] == "end" and e["source"] == src for e in received_events(subscriber, prefix))

    wait_until(lambda: ended("homehub", "kitchen") and ended("homehub", "garage") and ended("carhub", "garage"),
               timeout=20, what="ended events on both hubs")

    home, car = received_events(subscriber, "homehub"), received_events(subscriber, "carhub")
    for message in home + car:
        assert set(message) == EVENT_KEYS
        assert str(uuid.UUID(message["id"])) == message["id"]
        assert message["type"] in ("start", "update", "end")
        assert message["device"] == DEVICE
        assert message["location"] == {"kitchen": "house", "garage": "carport"}[message["source"]]
        assert isinstance(message["score"], float) and 0.5 <= message["score"] <= 1.0
        assert ISO_UTC.match(message["started_at"])
        assert (message["ended_at"] is None) == (message["type"] != "end")
        if message["ended_at"]:
            assert ISO_UTC.match(message["ended_at"]) and message["ended_at"] >= message["started_at"]
        assert message["caption"] is None
        assert message["model"] == "energy-1"
    # Routes: `loud` from every source to home; only `bang` from the garage to the vehicle.
    assert {e["label"] for e in home} == {"loud"} and {e["source"] for e in home} == {"kitchen", "garage"}
    assert {e["label"] for e in car} == {"bang"} and {e["source"] for e in car} == {"garage"}
    # The same event (id) keeps its id and start time from start to end.
    by_id: dict[str, list[dict]] = {}
    for message in home:
        by_id.setdefault(message["id"], []).append(message)
    for changes in by_id.values():
        assert len({c["started_at"] for c in changes}) == 1
    # Every routed change the daemon produced so far (its JSON-lines output) reached its hub, unchanged.
    produced = {(l["id"], l["type"]): l for l in event_lines(daemon)}
    wanted_home = {k for k, l in produced.items() if l["label"] == "loud" and k[0] in by_id}
    assert wanted_home <= pairs(home)
    for message in home:
        expected = {k: v for k, v in produced[(message["id"], message["type"])].items() if k in EVENT_KEYS}
        assert message == expected

    # ON/OFF per source and label, retained (HA finds them when it restarts); nothing for labels a hub is not routed.
    states = subscriber.on(f"homehub/{DEVICE}/kitchen/loud")
    assert {m.text for m in states} == {"ON", "OFF"}
    assert not subscriber.matching(lambda m: m.topic.startswith("homehub/") and m.topic.endswith("/bang"))
    assert not subscriber.matching(lambda m: m.topic.startswith("carhub/") and "/kitchen/" in m.topic)
    assert {m.text for m in subscriber.on(f"carhub/{DEVICE}/garage/bang")} == {"ON", "OFF"}

    # Retained status, sensor, availability and routed label topics, as a late subscriber sees them.
    late = Subscriber(broker, ["homehub/#", "carhub/#"], persistent=False)
    cleanup.append(late)
    wait_until(lambda: len(late.matching(lambda m: m.retain)) >= 11, what="retained topics")
    retained = {m.topic for m in late.matching(lambda m: m.retain)}
    assert retained == {
        f"homehub/{DEVICE}/status", f"carhub/{DEVICE}/status",
        f"homehub/{DEVICE}/kitchen/sensor", f"homehub/{DEVICE}/garage/sensor", f"carhub/{DEVICE}/garage/sensor",
        f"homehub/{DEVICE}/kitchen/availability", f"homehub/{DEVICE}/garage/availability",
        f"carhub/{DEVICE}/garage/availability",
        f"homehub/{DEVICE}/kitchen/loud", f"homehub/{DEVICE}/garage/loud", f"carhub/{DEVICE}/garage/bang",
    }

    # SIGTERM: the daemon stops within 2 s and leaves `offline` (retained) on both hubs.
    began = time.monotonic()
    assert daemon.stop(timeout=5) == 0
    assert time.monotonic() - began < 2.0
    wait_until(lambda: late.on(f"homehub/{DEVICE}/status") and late.on(f"homehub/{DEVICE}/status")[-1].text == "offline"
               and late.on(f"carhub/{DEVICE}/status")[-1].text == "offline", what="offline status")
    assert logs_with(daemon, "mqtt disconnected", hub="home")


def test_every_event_arrives_across_broker_restarts(tmp_path: Path, cleanup: list) -> None:
    broker = Broker(tmp_path / "broker").start()
    cleanup.append(broker)
    subscriber = Subscriber(broker, [f"earwitness/{DEVICE}/events"])
    cleanup.append(subscriber)
    config = daemon_config(tmp_path, sources=[source("kitchen", burst_loop(tmp_path / "k.wav"))], hubs=[hub("home", broker)])
    daemon = start_daemon(tmp_path, config)
    cleanup.append(daemon)
    daemon.wait_for(lambda: received_events(subscriber, "earwitness"), what="a first event")

    for outage in range(3):
        before = len(event_lines(daemon))
        connections = len(logs_with(daemon, "mqtt connected", hub="home"))
        broker.kill()
        # Events keep being produced while the broker is down.
        daemon.wait_for(lambda: len([l for l in event_lines(daemon)[before:] if l["type"] == "end"]) >= 1,  # noqa: B023
                        timeout=10, what=f"events during outage {outage}")
        broker.start()
        daemon.wait_for(lambda: len(logs_with(daemon, "mqtt connected", hub="home")) > connections,  # noqa: B023
                        what=f"reconnection after outage {outage}")
        time.sleep(0.3 * outage)  # kill again at once, then with some traffic in between

    assert len(logs_with(daemon, "mqtt connection lost", hub="home")) >= 3
    daemon.wait_for(lambda: len({e["id"] for e in event_lines(daemon)}) >= 6, what="six events")
    produced = event_lines(daemon)
    expected = pairs(produced)
    wait_until(lambda: expected <= pairs(received_events(subscriber, "earwitness")), timeout=20,
               what=f"all {len(expected)} event changes at the subscriber")
    # Each change arrives with exactly what the daemon produced (at-least-once: duplicates allowed).
    by_pair = {(l["id"], l["type"]): l for l in produced}
    for message in received_events(subscriber, "earwitness"):
        if (message["id"], message["type"]) in by_pair:
            assert message == {k: v for k, v in by_pair[(message["id"], message["type"])].items() if k in EVENT_KEYS}
    assert daemon.process.poll() is None


def test_pending_alerts_survive_sigkill(tmp_path: Path, cleanup: list) -> None:
    broker = Broker(tmp_path / "broker")  # not started: every alert stays pending
    cleanup.append(broker)
    audio = burst_loop(tmp_path / "k.wav")
    config = daemon_config(tmp_path, sources=[source("kitchen", audio)], hubs=[hub("home", broker)])
    daemon = start_daemon(tmp_path, config, "first")
    cleanup.append(daemon)
    daemon.wait_for_log("mqtt connect failed", hub="home")
    daemon.wait_for(lambda: len([l for l in event_lines(daemon) if l["type"] == "end"]) >= 3, what="three events")
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(5)
    pending = outbox_rows(tmp_path, "home")
    produced = event_lines(daemon)
    assert len(pending) >= 6
    assert [json.loads(p) for _, _, p in pending] == [{k: l[k] for k in EVENT_KEYS} for l in produced[: len(pending)]]

    burst_loop(audio, bursts=False)  # the second run hears nothing: what arrives is what was pending
    broker.start()
    subscriber = Subscriber(broker, [f"earwitness/{DEVICE}/events"])
    cleanup.append(subscriber)
    restarted = start_daemon(tmp_path, config, "second")
    cleanup.append(restarted)
    restarted.wait_for_log("mqtt outbox has pending alerts from before", hub="home", pending=len(pending))
    wait_until(lambda: len(subscriber.on(f"earwitness/{DEVICE}/events")) >= len(pending), timeout=15, what="pending alerts")
    # Byte for byte as first written, in order: original ids and timestamps.
    assert [m.payload for m in subscriber.on(f"earwitness/{DEVICE}/events")][: len(pending)] == [p for _, _, p in pending]
    wait_until(lambda: not outbox_rows(tmp_path, "home"), what="an empty outbox after the PUBACKs")
    assert not event_lines(restarted)


@pytest.mark.skipif(OPENSSL is None or MOSQUITTO_PASSWD is None, reason="needs openssl and mosquitto_passwd")
def test_tls_with_password_file_and_wrong_password(tmp_path: Path, cleanup: list) -> None:
    tls = make_tls_files(tmp_path / "tls")
    password, wrong = "correct-horse-battery", "wrong-staple-guess"
    broker = Broker(tmp_path / "broker", users={"earwitness": password}, tls=tls).start()
    cleanup.append(broker)
    subscriber = Subscriber(broker, ["#"], username="earwitness", password=password)
    cleanup.append(subscriber)
    (tmp_path / "password").write_text(password + "\n")
    tls_config = {"ca_file": str(tls.ca), "check_hostname": True}
    config = daemon_config(tmp_path, sources=[source("kitchen", burst_loop(tmp_path / "k.wav"))], hubs=[
        hub("secure", broker, host="localhost", tls=tls_config, username="earwitness",
            password_file=str(tmp_path / "password"), prefix="secure"),
        hub("wrong", broker, tls=tls_config, username="earwitness", password_env="EW_TEST_PASSWORD",
            prefix="wrong", protocol="3.1.1"),
    ])
    daemon = start_daemon(tmp_path, config, env={"EW_TEST_PASSWORD": wrong})
    cleanup.append(daemon)

    refused = daemon.wait_for_log("mqtt broker refused the credentials: check username and password", hub="wrong")
    assert refused["username"] == "earwitness" and refused["level"] == "error"
    # The other hub and detection go on.
    wait_until(lambda: any(e["type"] == "end" for e in received_events(subscriber, "secure")), timeout=15,
               what="events over TLS")
    assert subscriber.on(f"secure/{DEVICE}/status")[-1].text == "online"
    assert not subscriber.matching(lambda m: m.topic.startswith("wrong/"))
    daemon.wait_for(lambda: len(logs_with(daemon, "mqtt broker refused the credentials: check username and password",
                                          hub="wrong")) >= 2, what="a retry with backoff")
    assert daemon.process.poll() is None
    errors = daemon.stderr_path.read_text()
    assert password not in errors and wrong not in errors
    assert daemon.stop() == 0


def test_discovery_and_remote_control(tmp_path: Path, cleanup: list) -> None:
    broker = Broker(tmp_path / "broker").start()
    cleanup.append(broker)
    config = daemon_config(tmp_path, sources=[source("kitchen", burst_loop(tmp_path / "k.wav"))], hubs=[
        hub("home", broker, discovery={"enabled": True, "off_delay_s": 30}, allow_remote_control=True),
    ], detectors=[{"type": "energy", "label": "loud"}, {"type": "energy", "label": "glass_break"}])
    watch = Subscriber(broker, ["#"], persistent=False)
    cleanup.append(watch)
    daemon = start_daemon(tmp_path, config)
    cleanup.append(daemon)
    daemon.wait_for_log("mqtt discovery announced", hub="home")
    base = f"homeassistant/{{}}/{DEVICE}/{{}}/config"
    topics = {base.format("event", "kitchen_events"), base.format("binary_sensor", "kitchen_loud"),
              base.format("binary_sensor", "kitchen_glass_break"), base.format("switch", "kitchen_sensor")}
    topics |= {base.format(kind, f"kitchen_{label}_{name}") for label in ("loud", "glass_break")
               for kind, name in (("button", "not"), ("switch", "switch"))}  # feedback: "Not <label>", label on/off
    # Once the broker has passed every config on, a new subscriber gets them from the retained store.
    wait_until(lambda: topics | {f"earwitness/{DEVICE}/kitchen/sensor"} <= {m.topic for m in watch.matching(lambda m: True)},
               what="discovery published")

    ha = Subscriber(broker, ["homeassistant/#", f"earwitness/{DEVICE}/+/sensor"], persistent=False)
    cleanup.append(ha)
    wait_until(lambda: topics <= {m.topic for m in ha.matching(lambda m: m.retain and bool(m.payload))}, what="retained discovery")
    configs = {m.topic: m.json() for m in ha.matching(lambda m: bool(m.payload) and m.topic.startswith("homeassistant/"))}
    assert set(configs) == topics
    ids = [c["unique_id"] for c in configs.values()]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[a-zA-Z0-9_-]+", i) for i in ids)
    for topic, entity in configs.items():
        if "/switch/" in topic or "/button/" in topic:  # switches and buttons act also on a source that ended
            assert entity["availability_topic"] == f"earwitness/{DEVICE}/status"
        else:
            assert entity["availability"] == [{"topic": f"earwitness/{DEVICE}/status"},
                                              {"topic": f"earwitness/{DEVICE}/kitchen/availability"}]
            assert entity["availability_mode"] == "all"
        assert entity["device"]["identifiers"] == [f"earwitness_{DEVICE}"]
        assert entity["device"]["name"] and entity["device"]["sw_version"]
    event = configs[base.format("event", "kitchen_events")]
    assert event["state_topic"] == f"earwitness/{DEVICE}/events" and event["event_types"] == ["start", "update", "end"]
    glass = configs[base.format("binary_sensor", "kitchen_glass_break")]
    assert glass["state_topic"] == f"earwitness/{DEVICE}/kitchen/glass_break"
    assert (glass["device_class"], glass["off_delay"], glass["payload_on"], glass["payload_off"]) == ("safety", 30, "ON", "OFF")
    assert configs[base.format("binary_sensor", "kitchen_loud")]["device_class"] == "sound"
    switch = configs[base.format("switch", "kitchen_sensor")]
    assert switch["command_topic"] == f"earwitness/{DEVICE}/kitchen/sensor/set"
    assert (switch["state_topic"], switch["state_on"], switch["state_off"]) == (f"earwitness/{DEVICE}/kitchen/sensor", "enabled", "disabled")
    jinja2 = pytest.importorskip("jinja2")
    message = {"id": "x", "type": "start", "device": DEVICE, "source": "kitchen", "location": "home", "label": "loud",
               "score": 0.9, "started_at": "t", "ended_at": None, "caption": None, "model": "energy-1"}
    render = lambda m: jinja2.Environment().from_string(event["value_template"]).render(value_json=m)  # noqa: E731
    assert json.loads(render(message))["event_type"] == "start"
    assert render({**message, "source": "garage"}) == ""

    # Home Assistant restarts: every config and state comes again.
    ha.clear()
    ha.publish("homeassistant/status", "online")
    wait_until(lambda: topics | {f"earwitness/{DEVICE}/kitchen/sensor"} <= {m.topic for m in ha.matching(lambda m: bool(m.payload))},
               what="re-announced discovery and states")
    assert logs_with(daemon, "home assistant came online, announcing discovery again", hub="home")

    # Remote control: garbage is logged and ignored; OFF and ON flip the privacy switch.
    sensor = f"earwitness/{DEVICE}/kitchen/sensor"
    ha.publish(f"{sensor}/set", "banana")
    daemon.wait_for_log("mqtt sensor command ignored: payload must be ON or OFF", hub="home", payload="banana")
    assert daemon.process.poll() is None and ha.on(sensor)[-1].text == "enabled"
    ha.publish(f"{sensor}/set", "OFF")
    wait_until(lambda: ha.on(sensor)[-1].text == "disabled", what="sensor disabled")
    assert [l for l in daemon.lines() if l.get("type") == "sensor"][-1]["enabled"] is False
    ha.publish(f"{sensor}/set", "ON")
    wait_until(lambda: ha.on(sensor)[-1].text == "enabled", what="sensor enabled again")
    assert daemon.process.poll() is None
