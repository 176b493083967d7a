"""False-alarm feedback through the real daemon and a real mosquitto: a recorded sound that fires the glass
label, marked as a false alarm once, stays quiet; a real glass break still fires; `feedback forget` restores;
the examples survive a restart; bad and retained feedback is refused with a log line, never a crash."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from earwitness.training.data import load_audio, read_manifest
from tests.daemon_process import DaemonProcess, earwitness_command
from tests.mqtt_broker import MOSQUITTO, Broker, Subscriber, wait_until
from tests.test_feedback import GAME_GLASS_BREAK, LABEL, game_glass_break
from tests.test_mqtt import DEVICE, hub

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")

SOURCE = "hall"
HOP_S = 0.25
PHASES_S = (0.0, 0.05, 0.1, 0.15, 0.2)
GAME_FIRES_AT = 0.9883
"""Where each play starts against the hop: the game's glass break fires at each of them without feedback."""
EVENTS = f"earwitness/{DEVICE}/events"
FEEDBACK = f"earwitness/{DEVICE}/feedback"


def pcm(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16000), np.float32)


def real_glass_break(shared_data: Path) -> np.ndarray:
    """A validation glass break (a group the model never trained on), other than the game's."""
    from earwitness.detectors.classifier import load_metadata

    train = set(load_metadata()[1]["train_groups"])
    item = next(it for it in read_manifest(shared_data) if it.cls == LABEL and it.group_id not in train
                and it.path != GAME_GLASS_BREAK and it.path.startswith("clips/glass_break/infineon"))
    return load_audio(shared_data / item.path)


def config(tmp_path: Path, broker: Broker) -> dict[str, Any]:
    return {
        "device_id": DEVICE,
        "state_dir": str(tmp_path / "state"),
        "sources": [{"name": SOURCE, "input": "-", "location": "hall"}],
        "outputs": {"jsonl": {"enabled": True, "path": "-"}},
        "captions": {"backend": "none"},
        "log_level": "debug",
        "health": {"socket": str(tmp_path / "status.sock")},
        "hubs": [hub("home", broker, allow_remote_control=True)],
        # The game's sound reaches this threshold (the model's calibrated one) at every phase against the hop;
        # at the shipped one it misses some, and these tests are about the verdicts, not the threshold.
        "events": {"labels": {LABEL: {"threshold": GAME_FIRES_AT}}},
    }


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(earwitness_command("feedback", *args, "--socket", str(tmp_path / "status.sock"),
                                             "--config", str(tmp_path / "d0" / "config.yaml")),
                          capture_output=True, text=True, timeout=30, check=False)


class Player:
    """Plays audio into a daemon's stdin source; tells which glass events it raised and which it kept quiet."""

    def __init__(self, daemon: DaemonProcess, subscriber: Subscriber) -> None:
        self.daemon = daemon
        self.subscriber = subscriber
        self.fed_s = 0.0

    def glass_events(self, change: str = "start") -> list[dict[str, Any]]:
        """As the hub received them."""
        return [e for e in (m.json() for m in self.subscriber.on(EVENTS)) if e["label"] == LABEL and e["type"] == change]

    def raised(self) -> int:
        return sum(1 for l in self.daemon.logs() if l.get("event") == "event" and l.get("change") == "start"
                   and l.get("label") == LABEL)

    def suppressed(self) -> list[dict[str, Any]]:
        return [l for l in self.daemon.logs() if l.get("event") == "event suppressed by feedback"]

    def play(self, audio: np.ndarray, phase_s: float, what: str) -> None:
        """Play `audio` from `phase_s` past a hop boundary (at least 1 s after what was played before), then 2 s
        of silence; return once every window of it has been scored."""
        assert self.daemon.process.stdin is not None
        lead_s = 1.0 + (phase_s - self.fed_s) % HOP_S
        block = np.concatenate([silence(lead_s), audio, silence(2.0)])
        self.daemon.process.stdin.write(pcm(block))
        self.daemon.process.stdin.flush()
        self.fed_s += len(block) / 16000
        last_window = self.fed_s - 1.0 - HOP_S
        self.daemon.wait_for(lambda: any(l.get("event") == "window" and l.get("start_s", -1) >= last_window
                                         for l in self.daemon.logs()), 30, what)


def test_a_false_alarm_verdict_quiets_that_sound_but_not_a_real_glass_break(shared_data: Path, tmp_path: Path,
                                                                          cleanup: list) -> None:
    broker = Broker(tmp_path / "broker").start()
    cleanup.append(broker)
    hub_side = Subscriber(broker, [EVENTS, FEEDBACK, f"earwitness/{DEVICE}/+/hearing"], persistent=False)
    cleanup.append(hub_side)
    game, real = game_glass_break(shared_data), real_glass_break(shared_data)
    settings = config(tmp_path, broker)
    daemon = DaemonProcess(_workdir(tmp_path, "d0", settings), "--config", str(tmp_path / "d0" / "config.yaml"),
                           stdin=subprocess.PIPE)
    cleanup.append(daemon)
    daemon.wait_for_log("mqtt connected", hub="home")
    player = Player(daemon, hub_side)

    # Play 1 fires; the household says it was the television.
    player.play(game, PHASES_S[0], "the first play")
    wait_until(lambda: player.glass_events("end"), 10, "the first event at the hub")
    first = player.glass_events("start")
    assert len(first) == 1 and "feedback" not in first[0]
    hub_side.publish(FEEDBACK, "{not json")
    daemon.wait_for_log("mqtt feedback ignored")
    hub_side.publish(FEEDBACK, json.dumps({"id": "no-such-event", "verdict": "false_alarm"}))
    hub_side.publish(FEEDBACK, json.dumps({"id": first[0]["id"], "verdict": "false_alarm"}))
    stored = daemon.wait_for_log("feedback stored", event_id=first[0]["id"], verdict="false_alarm")
    assert any("no recent event 'no-such-event'" in l.get("error", "") for l in daemon.logs())

    # Plays 2 to 5, each at another phase against the hop: nothing is raised, each is logged and counted.
    for k, phase_s in enumerate(PHASES_S[1:], start=2):
        player.play(game, phase_s, f"play {k}")
    assert player.raised() == 1, "no event after the verdict"
    assert len(player.suppressed()) == 4 and {l["example"] for l in player.suppressed()} == {stored["example"]}
    status = json.loads(subprocess.run(earwitness_command("status", "--json", "--socket", str(tmp_path / "status.sock")),
                                       capture_output=True, text=True, timeout=30, check=False).stdout)
    assert status["feedback"]["suppressed"] == {SOURCE: {LABEL: 4}} and status["feedback"]["false_alarms"] == 1

    # A real glass break still fires, and says feedback was weighed.
    player.play(real, 0.0, "the real glass break")
    wait_until(lambda: len(player.glass_events("start")) == 2, 10, "the real glass break at the hub")
    assert player.glass_events("start")[1]["feedback"]["suppressed"] is False
    assert len(player.glass_events("start")) == 2

    # The verdict survives a restart (and a retained feedback command is cleared, not applied).
    daemon.process.stdin.close()  # type: ignore[union-attr]
    assert daemon.stop(timeout=10) == 0
    hub_side.publish(FEEDBACK, json.dumps({"id": first[0]["id"], "verdict": "confirmed"}), retain=True)
    again = DaemonProcess(tmp_path / "d0", "--config", str(tmp_path / "d0" / "config.yaml"), stdin=subprocess.PIPE)
    cleanup.append(again)
    again.wait_for_log("mqtt command cleared, not applied: it was retained on the broker", topic=FEEDBACK)
    wait_until(lambda: hub_side.on(FEEDBACK)[-1].payload == b"", 10, "the retained command cleared")
    player = Player(again, hub_side)
    player.play(game, PHASES_S[0], "the play after the restart")
    assert len(player.suppressed()) == 1 and player.raised() == 0

    # `feedback forget` restores the first behaviour.
    listed = cli(tmp_path, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    examples = json.loads(listed.stdout)["examples"]
    assert [(e["id"], e["event_id"], e["verdict"]) for e in examples] == [(stored["example"], first[0]["id"], "false_alarm")]
    unknown = cli(tmp_path, "forget", "nosuchexample")
    assert unknown.returncode == 1 and "no feedback example 'nosuchexample'" in unknown.stderr
    forgot = cli(tmp_path, "forget", stored["example"])
    assert forgot.returncode == 0, forgot.stderr
    player.play(game, PHASES_S[1], "the play after forget")
    assert player.raised() == 1 and len(player.suppressed()) == 1
    assert not hub_side.matching(lambda m: m.topic.endswith("/hearing")), "hearing telemetry is off by default"


def test_listen_runs_the_pipeline_on_a_file_without_a_daemon(shared_data: Path, tmp_path: Path) -> None:
    import soundfile

    audio = tmp_path / "tv.wav"
    soundfile.write(str(audio), np.concatenate([silence(1.0), game_glass_break(shared_data), silence(2.0)]), 16000)
    _workdir(tmp_path, "d0", {"state_dir": str(tmp_path / "state")})
    view = subprocess.run(earwitness_command("listen", "--input", f"file:{audio}", "--config", str(tmp_path / "d0" / "config.yaml")),
                          capture_output=True, text=True, timeout=60, check=False)
    assert view.returncode == 0, view.stderr
    assert "hears:" in view.stdout and "(ended)" in view.stdout
    assert [line.split()[1:3] for line in view.stdout.splitlines() if LABEL in line and ("start" in line or "end" in line)] \
        == [["start", LABEL], ["end", LABEL]]


def test_feedback_commands_work_on_the_state_directory_while_the_daemon_is_stopped(tmp_path: Path) -> None:
    from earwitness.detectors.suppression import SuppressionStore, new_example

    state = tmp_path / "state"
    store = SuppressionStore.in_state_dir(state)
    example = new_example("false_alarm", SOURCE, LABEL, "event-1", [np.ones(4, np.float32)])
    store.add(example)
    settings = {"state_dir": str(state), "health": {"socket": str(tmp_path / "status.sock")}}
    _workdir(tmp_path, "d0", settings)
    listed = cli(tmp_path, "list")
    assert listed.returncode == 0 and example.id in listed.stdout and "no daemon running" in listed.stdout
    verdict = cli(tmp_path, "some-event-id")
    assert verdict.returncode == 1 and "needs the running daemon" in verdict.stderr
    assert cli(tmp_path, "forget").returncode == 2
    cleared = cli(tmp_path, "clear")
    assert cleared.returncode == 0 and "cleared 1" in cleared.stdout
    assert SuppressionStore.in_state_dir(state).examples() == []


def _workdir(tmp_path: Path, tag: str, settings: dict[str, Any]) -> Path:
    import yaml

    workdir = tmp_path / tag
    workdir.mkdir(exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(settings))
    return workdir
