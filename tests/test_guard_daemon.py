"""The car guard end to end: a real mosquitto for the vehicle and one for home, a vehicle bridge publishing
its state (TeslaMate-, OVMS- and Home Assistant-style, with the README's own examples), real glass breaks
played in real time into the real daemon's stdin, and the real classifier."""

from __future__ import annotations

import csv
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import yaml

from earwitness.app import build_pipeline
from earwitness.config import Config, SourceConfig
from tests.daemon_process import DaemonProcess, write_config
from tests.mqtt_broker import MOSQUITTO, Broker, Subscriber, wait_until
from tests.test_mqtt import DEVICE, hub

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")

README = Path(__file__).resolve().parent.parent / "README.md"
RATE = 16_000
CHUNK_S = 0.05
SIREN = "car/siren/set"
ARMING_DELAY_S = 0.5
COOLDOWN_S = 2.0
STALE_S = 1.5

VEHICLES = {
    # README example: (messages that arm it, a message that disarms it)
    "teslamate": ([("teslamate/cars/1/locked", "true"), ("teslamate/cars/1/shift_state", "P")],
                  ("teslamate/cars/1/shift_state", "D")),
    "ovms": ([("ovms/owner/mycar/metric/v/e/locked", "yes"), ("ovms/owner/mycar/metric/v/e/on", "no")],
             ("ovms/owner/mycar/metric/v/e/on", "yes")),
    "home-assistant": ([("homeassistant_statestream/lock/car_doors/state", "locked")],
                       ("homeassistant_statestream/lock/car_doors/state", "unlocked")),
}


def readme_guard(example: str) -> dict[str, Any]:
    """The `guard:` section of one of the README's examples, as a user would paste it."""
    text = README.read_text()
    match = re.search(rf"<!-- guard example: {re.escape(example)} -->\n```yaml\n(.*?)```", text, re.S)
    assert match, f"the README has no guard example {example!r}"
    return yaml.safe_load(match.group(1))["guard"]


def glass_clip(data: Path) -> np.ndarray:
    """A real glass break that the shipped classifier finds, scaled to -10 dBFS peak (as in the bench)."""
    with (data / "manifest.csv").open() as handle:
        rows = sorted((r for r in csv.DictReader(handle) if r["class"] == "glass_break"), key=lambda r: r["path"])
    config = Config(detectors=[{"type": "classifier"}])  # type: ignore[list-item]
    noise = np.random.default_rng(0).normal(0, 10 ** (-50 / 20), RATE).astype(np.float32)
    for row in rows[:: max(1, len(rows) // 12)]:
        audio, rate = soundfile.read(str(data / row["path"]), dtype="float32", always_2d=True)
        if rate != RATE:
            continue
        clip = audio.mean(axis=1)[: 3 * RATE]
        clip = clip * (0.3 / max(float(np.abs(clip).max()), 1e-6))
        found: list[str] = []
        pipeline = build_pipeline(config, SourceConfig(name="probe", input="-"),
                                  lambda change: found.append(change.event.label))  # noqa: B023 (used at once)
        pipeline.process(np.concatenate([noise, clip, noise, noise]))
        pipeline.finish()
        if "glass_break" in found:
            return clip
    raise AssertionError("no glass break of the corpus is found by the shipped classifier")


def sound_onset_s(clip: np.ndarray) -> float:
    """Where the sound begins: its first 10 ms within 20 dB of its loudest (the bench's onset)."""
    frames = clip[: len(clip) // 160 * 160].reshape(-1, 160)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    return float(np.argmax(rms >= rms.max() * 0.1) * 0.01)


class Player:
    """Plays quiet noise into the daemon's stdin in real time; `play` mixes a clip in and says when its
    onset was played (monotonic)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self._process = process
        self._pending: list[tuple[np.ndarray, threading.Event, list[float]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rng = np.random.default_rng(1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def play(self, clip: np.ndarray) -> float:
        done, onset = threading.Event(), [sound_onset_s(clip)]
        with self._lock:
            self._pending.append((clip, done, onset))
        assert done.wait(10), "the clip was not played"
        return onset[0]

    def _run(self) -> None:
        n = int(CHUNK_S * RATE)
        start, sent = time.monotonic(), 0
        playing: tuple[np.ndarray, int, threading.Event, list[float]] | None = None
        while not self._stop.is_set():
            chunk = self._rng.normal(0, 10 ** (-50 / 20), n).astype(np.float32)
            with self._lock:
                if playing is None and self._pending:
                    clip, done, onset = self._pending.pop(0)
                    playing = (clip, 0, done, onset)
            if playing is not None:
                clip, at, done, onset = playing
                part = clip[at : at + n]
                chunk[: len(part)] += part
                if at == 0:
                    onset[0] = start + sent / RATE + onset[0]  # when the onset sample is due to be played
                playing = (clip, at + n, done, onset) if at + n < len(clip) else None
                if playing is None:
                    done.set()
            sent += n
            time.sleep(max(0.0, start + sent / RATE - time.monotonic()))  # written once its last sample is played
            try:
                assert self._process.stdin is not None
                self._process.stdin.write((np.clip(chunk, -1, 1) * 32767).astype("<i2").tobytes())
                self._process.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def guard_states(subscriber: Subscriber) -> list[dict]:
    return [m.json() for m in subscriber.on(f"earwitness/{DEVICE}/guard")]


def last_guard(subscriber: Subscriber) -> dict[str, Any]:
    """The newest guard state the subscriber heard; {} before the first."""
    states = guard_states(subscriber)
    return states[-1] if states else {}


def starts(subscriber: Subscriber, label: str = "glass_break") -> list[dict]:
    return [m.json() for m in subscriber.on(f"earwitness/{DEVICE}/events")
            if m.json()["type"] == "start" and m.json()["label"] == label]


def start_daemon(workdir: Path, config: dict) -> tuple[DaemonProcess, Player]:
    workdir.mkdir(exist_ok=True)
    path = write_config(workdir / "config.yaml", config)
    daemon = DaemonProcess(workdir, "--config", str(path), stdin=subprocess.PIPE)
    return daemon, Player(daemon.process)


@pytest.mark.parametrize("vehicle", list(VEHICLES))
def test_the_car_guard_end_to_end(vehicle: str, tmp_path: Path, shared_data: Path, cleanup: list) -> None:
    clip = glass_clip(shared_data)
    car_broker, home_broker = Broker(tmp_path / "car").start(), Broker(tmp_path / "home").start()
    cleanup += [car_broker, home_broker]
    car, home = Subscriber(car_broker, ["#"], persistent=False), Subscriber(home_broker, ["#"], persistent=False)
    cleanup += [car, home]
    guard = {**readme_guard(vehicle), "arming_delay_s": ARMING_DELAY_S, "stale_after_s": STALE_S}
    guard["alarm"] = {**guard["alarm"], "cooldown_s": COOLDOWN_S}
    assert guard["alarm"]["topic"] == SIREN
    config = {
        "device_id": DEVICE,
        "state_dir": str(tmp_path / "state"),
        "sources": [{"name": "cabin", "input": "-", "location": "vehicle"}],
        "detectors": [{"type": "classifier"}],
        "outputs": {"jsonl": {"enabled": True, "path": "-"}},
        "captions": {"backend": "none"},
        "hubs": [hub("home", home_broker), hub("vehicle", car_broker, allow_remote_control=True)],
        "guard": guard,
    }
    daemon, player = start_daemon(tmp_path / "daemon", config)
    cleanup.append(daemon)
    try:
        arm, disarm = VEHICLES[vehicle]
        wait_until(lambda: (last_guard(car) or {}).get("state") == "disarmed", what="the first guard state")
        daemon.wait_for_log("source listening", timeout=30)

        # Parked and locked: arming, then armed after the delay.
        for topic, payload in arm:
            car.publish(topic, payload, retain=True)
        wait_until(lambda: (last_guard(car) or {}).get("state") == "armed", what="armed")
        arming, armed = guard_states(car)[-2:]
        assert arming["state"] == "arming" and arming["why"].startswith("vehicle: ")
        armed_after_s = [m.at for m in car.on(f"earwitness/{DEVICE}/guard")][-1] - \
            [m.at for m in car.on(f"earwitness/{DEVICE}/guard")][-2]
        assert armed_after_s >= ARMING_DELAY_S * 0.9, "armed only after the arming delay"
        assert armed["vehicle"] == "current"

        # A glass break at the vehicle's source: the alert, `triggered` and the alarm command on the vehicle hub.
        onset = player.play(clip)
        wait_until(lambda: car.on(SIREN), timeout=10, what="the alarm command")
        latency_ms = (car.on(SIREN)[0].at - onset) * 1000
        print(f"{vehicle}: onset played -> alarm command received: {latency_ms:.0f} ms")
        assert car.on(SIREN)[0].text == "ON" and not car.on(SIREN)[0].retain
        wait_until(lambda: starts(car) and starts(home), what="the alert on both hubs")
        assert starts(car)[0]["guard"] == "triggered" and starts(home)[0]["guard"] == "triggered"
        triggered = [s for s in guard_states(car) if s["state"] == "triggered"]
        assert triggered and triggered[0]["why"] == "glass_break at cabin"
        wait_until(lambda: [s for s in guard_states(home) if s["state"] == "triggered"], what="triggered at home too")
        wait_until(lambda: (last_guard(car) or {}).get("state") == "armed", timeout=COOLDOWN_S + 5,
                   what="armed again after the cool-down")
        assert len(car.on(SIREN)) == 1, "one alarm command per incident"

        # Driving away: disarmed at once; the same break is recorded (and sent) but raises nothing.
        topic, payload = disarm
        car.publish(topic, payload, retain=True)
        published = time.monotonic()
        wait_until(lambda: (last_guard(car) or {}).get("state") == "disarmed", what="disarmed")
        assert car.on(f"earwitness/{DEVICE}/guard")[-1].at - published < 1.0, "a disarm is immediate"
        states_before = len(guard_states(car))
        player.play(clip)
        wait_until(lambda: len(starts(car)) == 2, timeout=10, what="the second break's alert")
        assert starts(car)[1]["guard"] == "disarmed"
        daemon.wait_for(lambda: any(l.get("type") == "start" and l.get("guard") == "disarmed" for l in daemon.lines()),
                        what="the break recorded by the JSON-lines sink")
        time.sleep(1.0)
        assert len(car.on(SIREN)) == 1, "no alarm while disarmed"
        assert {s["state"] for s in guard_states(car)[states_before - 1:]} == {"disarmed"}, "the guard stays disarmed"
        if vehicle != "teslamate":
            return

        # Armed again; then the vehicle goes silent, then its broker goes away: it stays armed and says so.
        for topic, payload in arm:
            car.publish(topic, payload, retain=True)
        wait_until(lambda: (last_guard(car) or {}).get("state") == "armed", what="armed again")
        armed = last_guard(car)
        wait_until(lambda: (last_guard(car) or {}).get("vehicle") == "silent", timeout=STALE_S + 5, what="silent")
        assert last_guard(car)["state"] == "armed" and last_guard(car)["since"] == armed["since"]
        car_broker.kill()
        wait_until(lambda: (last_guard(home) or {}).get("vehicle") == "disconnected", what="disconnected, at home")
        assert last_guard(home)["state"] == "armed" and last_guard(home)["since"] == armed["since"]

        # A restart (the vehicle's broker still down) comes back armed, since the same moment.
        player.stop()
        assert daemon.stop() == 0
        home.clear()
        daemon, player = start_daemon(tmp_path / "daemon2", config)
        cleanup.append(daemon)
        wait_until(lambda: last_guard(home), what="the guard state after the restart")
        assert {k: last_guard(home)[k] for k in ("state", "since")} == {"state": "armed", "since": armed["since"]}
        car_broker.start()
        wait_until(lambda: (last_guard(home) or {}).get("vehicle") == "current", timeout=15,
                   what="the vehicle's retained state heard again")
        assert last_guard(home)["state"] == "armed" and last_guard(home)["since"] == armed["since"]
    finally:
        player.stop()


def test_arm_and_disarm_by_hand_and_the_home_assistant_alarm_panel(tmp_path: Path, cleanup: list) -> None:
    from tests.test_mqtt import burst_loop, daemon_config, source
    from tests.test_mqtt import start_daemon as start_file_daemon

    broker = Broker(tmp_path / "broker").start()
    cleanup.append(broker)
    subscriber = Subscriber(broker, ["#"], persistent=False)
    cleanup.append(subscriber)
    audio = burst_loop(tmp_path / "cabin.wav", bursts=False)
    guard = {"enabled": True, "hub": "vehicle", "arming_delay_s": 0.3}
    config = daemon_config(tmp_path, [source("cabin", audio, "vehicle")],
                           [hub("vehicle", broker, allow_remote_control=True, discovery={"enabled": True}),
                            hub("home", broker, prefix="homehub")], guard=guard)
    topic, command = f"earwitness/{DEVICE}/guard", f"earwitness/{DEVICE}/guard/set"
    subscriber.publish(command, "ARM", retain=True)  # left on the broker: stale by the time the daemon starts
    daemon = start_file_daemon(tmp_path, config)
    cleanup.append(daemon)
    # a command acts once: the daemon clears it from the broker and does not apply it
    daemon.wait_for_log("mqtt command cleared, not applied: it was retained on the broker", topic=command, payload="ARM")
    panel = wait_until(lambda: subscriber.on(f"homeassistant/alarm_control_panel/{DEVICE}/guard/config"), what="the panel")
    settings = panel[-1].json()
    assert {k: settings[k] for k in ("state_topic", "command_topic", "payload_arm_away", "payload_disarm",
                                     "supported_features", "code_arm_required", "code_disarm_required")} == {
        "state_topic": topic, "command_topic": command, "payload_arm_away": "ARM", "payload_disarm": "DISARM",
        "supported_features": ["arm_away"], "code_arm_required": False, "code_disarm_required": False}
    assert settings["availability_topic"] == f"earwitness/{DEVICE}/status"
    assert "{{" in settings["value_template"] and "armed_away" in settings["value_template"]

    def states(prefix: str = "earwitness") -> list[str]:
        return [m.json()["state"] for m in subscriber.on(f"{prefix}/{DEVICE}/guard")]

    wait_until(lambda: states() == ["disarmed"] and states("homehub") == ["disarmed"], what="disarmed at start")
    subscriber.publish(command, "arm")
    wait_until(lambda: states()[-2:] == ["arming", "armed"], what="armed by hand")
    assert subscriber.on(topic)[-1].json()["why"] == "ARM from mqtt hub vehicle"
    wait_until(lambda: states("homehub")[-1:] == ["armed"], what="armed, on the other hub too")
    subscriber.publish(command, "SIREN")
    daemon.wait_for_log("mqtt guard command ignored: payload must be ARM or DISARM")
    subscriber.publish(command, "DISARM")
    wait_until(lambda: states()[-1] == "disarmed", what="disarmed by hand")
    assert states() == ["disarmed", "arming", "armed", "disarmed"]
    assert daemon.stop() == 0
