"""The outbox's own faults never cost an alert: a full disk, a damaged file. Against a real mosquitto."""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from earwitness.core.events import Event, EventChange, SourceInfo
from earwitness.integrations.mqtt.outbox import Outbox, outbox_path
from tests.daemon_process import earwitness_command, write_config
from tests.mqtt_broker import MOSQUITTO, Broker, Subscriber, wait_until
from tests.test_mqtt import DEVICE, burst_loop, daemon_config, hub, logs_with, source, start_daemon  # noqa: F401

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")


class PipedDaemon:
    """`earwitness run` with its output on pipes, not files: a file-size limit on it then bounds only the files
    it writes itself (its outbox), as a full file system would."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.process = subprocess.Popen(
            earwitness_command("run", "--config", str(config)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "RUNTIME_DIRECTORY": str(workdir)},
        )
        self.lines: list[dict] = []
        self.logs: list[dict] = []
        self._readers = [threading.Thread(target=self._read, args=(stream, into), daemon=True)
                         for stream, into in ((self.process.stdout, self.lines), (self.process.stderr, self.logs))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list[dict]) -> None:
        for raw in stream:
            try:
                into.append(json.loads(raw))
            except ValueError:
                into.append({"event": "not JSON", "text": raw.decode(errors="replace")})

    def log(self, event: str) -> list[dict]:
        return [line for line in list(self.logs) if line.get("event") == event]

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(10)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def test_a_full_disk_loses_no_alert_while_the_broker_is_up(tmp_path: Path, cleanup: list) -> None:
    broker = Broker(tmp_path / "broker").start()
    cleanup.append(broker)
    received = Subscriber(broker, [f"earwitness/{DEVICE}/events"], persistent=False)
    cleanup.append(received)
    settings = daemon_config(tmp_path, sources=[source("room", burst_loop(tmp_path / "room.wav"))], hubs=[hub("home", broker)])
    daemon = PipedDaemon(write_config(tmp_path / "config.yaml", settings), tmp_path)
    try:
        wait_until(lambda: len(received.on(f"earwitness/{DEVICE}/events")) >= 4, what="alerts before the disk fills")
        wal = Path(f"{outbox_path(tmp_path / 'state', 'home')}-wal")
        # The file system is full: the outbox's files cannot grow by one byte more.
        resource.prlimit(daemon.process.pid, resource.RLIMIT_FSIZE, (wal.stat().st_size, resource.RLIM_INFINITY))
        full_since = len(daemon.lines)
        sent = lambda: {(l["id"], l["type"]) for l in daemon.lines[full_since:] if l.get("type") in ("start", "end")}  # noqa: E731
        delivered = lambda: {(m.json()["id"], m.json()["type"]) for m in received.on(f"earwitness/{DEVICE}/events")}  # noqa: E731
        wait_until(lambda: len(sent()) >= 10, timeout=20, what="10 alerts sent while the disk is full")
        alerts = set(list(sent())[:10]) if len(sent()) == 10 else sent()
        wait_until(lambda: alerts <= delivered(), what="every alert delivered")
        print(f"full disk: {len(alerts & delivered())} of {len(alerts)} alerts delivered")
        assert daemon.log("mqtt outbox cannot write its file: alerts are kept in memory and still sent"), "logged loudly"
        figures = json.loads(subprocess.run(earwitness_command("status", "--json", "--socket", str(tmp_path / "status.sock")),
                                            capture_output=True, text=True, timeout=30).stdout)
        assert figures["sinks"]["mqtt:home"]["outbox_write_failures"] > 0, "the fault is counted in status"
        assert figures["sinks"]["mqtt:home"]["connected"]

        # Space returns: the outbox writes to its file again, and alerts keep coming.
        resource.prlimit(daemon.process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        wait_until(lambda: daemon.log("mqtt outbox writes to its file again"), what="the outbox resumed")
        later = len(daemon.lines)
        wait_until(lambda: len([l for l in daemon.lines[later:] if l.get("type") == "start"]) >= 2, what="alerts after")
        wait_until(lambda: {(l["id"], l["type"]) for l in daemon.lines[later:] if l.get("type") == "start"} <= delivered(),
                   what="alerts after the disk freed up delivered")
        assert daemon.process.poll() is None
        assert daemon.stop() == 0
        assert not [l for l in daemon.logs if "exception" in l or l.get("event") == "not JSON"]
    finally:
        daemon.kill()


def test_a_damaged_outbox_is_moved_aside_salvaged_and_the_hub_connects(tmp_path: Path, cleanup: list) -> None:
    path = outbox_path(tmp_path / "state", "home")
    outbox = Outbox(path, "home", max_messages=10000, max_age_s=86400)
    for number in range(300):
        event = Event(label="loud", source=SourceInfo("room", "home"), device=DEVICE, model="energy-1", score=0.9,
                      start_s=float(number), started_at=datetime.now(timezone.utc))
        outbox.add(f"earwitness/{DEVICE}/events", json.dumps(EventChange("start", event).message()).encode())
    outbox.close()
    pages = path.stat().st_size // 4096
    assert pages > 10
    with path.open("r+b") as file:  # overwrite a few pages in the middle, as a failing card would
        for page in (pages // 2, pages // 2 + 1, pages // 2 + 3):
            file.seek(page * 4096)
            file.write(b"\xde\xad\xbe\xef" * 1024)

    broker = Broker(tmp_path / "broker").start()
    cleanup.append(broker)
    watch = Subscriber(broker, [f"earwitness/{DEVICE}/#"], persistent=False)
    cleanup.append(watch)
    config = daemon_config(tmp_path, sources=[source("room", burst_loop(tmp_path / "room.wav"))], hubs=[hub("home", broker)])
    daemon = start_daemon(tmp_path, config)
    cleanup.append(daemon)
    damaged = daemon.wait_for_log("mqtt outbox was damaged: moved aside, what could be read is salvaged, a fresh one starts")
    daemon.wait_for_log("mqtt connected", hub="home")
    assert Path(damaged["moved_to"]).parent == path.parent and Path(damaged["moved_to"]).is_file()
    assert Path(damaged["moved_to"]).name.startswith(f"{path.name}.damaged-")
    assert 0 < damaged["salvaged"] < 300
    # The salvaged alerts go out, and new ones too.
    wait_until(lambda: len(watch.on(f"earwitness/{DEVICE}/events")) >= damaged["salvaged"] + 1, timeout=20,
               what="the salvaged alerts and a new one delivered")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    assert daemon.stop() == 0
