"""sd_notify: the real daemon talks to a datagram socket bound by the test, as systemd would.

The watchdog test feeds the daemon through stdin (`--source -`) so that the test decides
when windows flow. When the test stops writing, the source stays open and listening and
the event loop keeps running (the status socket answers), but the pipeline processes no
windows: a stalled pipeline as systemd must see it. WATCHDOG=1 must stop then, which a
timer or the main loop pinging on its own could not do; it comes from the processing loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from earwitness.app import build_daemon
from earwitness.config import parse_config
from earwitness.core.health import Health, SourceState
from earwitness.integrations.systemd import Notifier, SystemdObserver, status_line, watchdog_interval_s
from tests.audio import tone_bursts, write_bursts
from tests.daemon_process import ENERGY, earwitness_command, write_config

SAMPLE_RATE = 16_000


class NotifyListener:
    """What systemd would receive on $NOTIFY_SOCKET: (monotonic time, {key: value}) per datagram."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.socket.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._running = True
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while self._running:
            try:
                data = self.socket.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def with_key(self, key: str, since: float = 0.0) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in list(self.messages) if key in m and t >= since]

    def wait_for(self, key: str, since: float = 0.0, timeout: float = 10.0) -> tuple[float, dict[str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.with_key(key, since)
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"no {key} within {timeout} s; got {[m for _, m in self.messages]}")

    def close(self) -> None:
        self._running = False
        self._thread.join()
        self.socket.close()


@pytest.fixture
def listener(tmp_path: Path):
    created = []

    def make(address: str | None = None) -> NotifyListener:
        created.append(NotifyListener(address or str(tmp_path / "notify.sock")))
        return created[-1]

    yield make
    for item in created:
        item.close()


def pcm(seconds: float, offset_s: float = 0.0) -> bytes:
    """Raw s16le 16 kHz mono: quiet noise with a burst now and then."""
    audio = tone_bursts(seconds, [0.5] if seconds > 1 else [], seed=int(offset_s * 10))
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


class Feeder:
    """Writes audio to the daemon's stdin in real time (50 ms chunks) while `flowing` is set."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.flowing = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        chunk = pcm(0.05)
        while not self._stop.is_set():
            if self.flowing.wait(0.05):
                try:
                    self._stream.write(chunk)
                    self._stream.flush()
                except (BrokenPipeError, ValueError):
                    return
                time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def status_json(socket_path: Path) -> dict:
    result = subprocess.run(earwitness_command("status", "--json", "--socket", str(socket_path)),
                            capture_output=True, text=True, timeout=20)
    assert result.returncode in (0, 3), result.stderr
    return json.loads(result.stdout)


def test_ready_after_the_first_window_and_watchdog_from_the_processing_loop(tmp_path: Path, listener) -> None:
    notify = listener(f"@earwitness-test-{os.getpid()}-{time.monotonic_ns()}")  # abstract namespace
    runtime = tmp_path / "run"
    process = subprocess.Popen(
        earwitness_command("run", "--source", "-"), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "daemon.err").open("w"),
        env={**os.environ, "NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "400000", "RUNTIME_DIRECTORY": str(runtime),
             "STATE_DIRECTORY": str(tmp_path / "state")},
    )
    assert process.stdin is not None
    feeder = Feeder(process.stdin)
    try:
        # Open but no audio yet, then less than one window (1 s) of audio: not ready.
        time.sleep(1.0)
        process.stdin.write(pcm(0.5))
        process.stdin.flush()
        time.sleep(1.0)
        assert notify.with_key("READY") == [], notify.messages
        assert status_json(runtime / "status.sock")["sources"]["stdin"]["windows"] == 0
        # The rest of the first window: ready, and the status line says what listens.
        process.stdin.write(pcm(0.6))
        process.stdin.flush()
        _, ready = notify.wait_for("READY")
        assert ready["READY"] == "1"
        assert ready["STATUS"] == "listening on stdin"
        assert status_json(runtime / "status.sock")["sources"]["stdin"]["windows"] >= 1

        # Windows flow (one every 0.25 s): WATCHDOG=1 with them, never more often than WATCHDOG_USEC/2 = 0.2 s.
        feeder.flowing.set()
        time.sleep(0.5)
        start = time.monotonic()
        time.sleep(2.0)
        pings = notify.with_key("WATCHDOG", since=start)
        assert 5 <= len(pings) <= 11, pings
        assert all(m["WATCHDOG"] == "1" for _, m in pings)
        assert min(b - a for (a, _), (b, _) in zip(pings, pings[1:])) > 0.15

        # The pipeline stalls: the source is open and listening, the loop answers, but no window
        # is processed, so no more pings (systemd would restart the service after WatchdogSec).
        feeder.flowing.clear()
        time.sleep(0.5)  # the daemon drains what it has buffered
        stalled = time.monotonic()
        time.sleep(1.5)
        figures = status_json(runtime / "status.sock")
        assert figures["sources"]["stdin"]["state"] == "listening"
        assert notify.with_key("WATCHDOG", since=stalled) == []
        assert process.poll() is None

        # Windows flow again: so do the pings.
        feeder.flowing.set()
        notify.wait_for("WATCHDOG", since=time.monotonic(), timeout=3.0)
    finally:
        feeder.close()
        process.send_signal(signal.SIGTERM)
        process.stdin.close()
        process.wait(10)
    assert notify.with_key("STOPPING"), notify.messages


def test_reload_sends_reloading_then_ready(tmp_path: Path, listener) -> None:
    notify = listener()
    audio = write_bursts(tmp_path / "cabin.wav", 3.0, [1.0])
    config = write_config(tmp_path / "config.yaml", {
        "sources": [{"name": "cabin", "location": "cabin", "input": f"file:{audio}", "loop": True},
                    {"name": "exterior", "location": "exterior", "input": f"file:{audio}", "loop": True, "enabled": False}],
        "health": {"socket": str(tmp_path / "status.sock")},
    })
    process = subprocess.Popen(
        earwitness_command("run", "--config", str(config)), stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "daemon.err").open("w"),
        env={**os.environ, "NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "2000000", "STATE_DIRECTORY": str(tmp_path / "state")},
    )
    try:
        _, ready = notify.wait_for("READY")
        assert ready["STATUS"] == "listening on cabin; off: exterior"
        before_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        sighup_at = time.monotonic()
        process.send_signal(signal.SIGHUP)
        reloading_at, reloading = notify.wait_for("RELOADING", since=sighup_at)
        after_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert reloading["RELOADING"] == "1"
        assert before_usec <= int(reloading["MONOTONIC_USEC"]) <= after_usec
        _, ready_again = notify.wait_for("READY", since=reloading_at)
        assert ready_again["READY"] == "1"
        assert ready_again["STATUS"] == "listening on cabin; off: exterior"
        # The reload turns the exterior source on: RELOADING=1, READY=1, and the new status line.
        config.write_text(config.read_text().replace("enabled: false", "enabled: true"))
        second_at = time.monotonic()
        process.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING", since=second_at)
        notify.wait_for("READY", since=second_at)
        deadline = time.monotonic() + 5
        while not notify.with_key("STATUS", since=second_at) or \
                notify.with_key("STATUS", since=second_at)[-1][1]["STATUS"] != "listening on cabin, exterior":
            assert time.monotonic() < deadline, notify.messages
            time.sleep(0.05)
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(10)


def test_all_sources_off_ready_at_once_and_the_main_loop_pings(tmp_path: Path, listener) -> None:
    """Nothing listens (privacy switch): READY=1 at once, WATCHDOG=1 from the main loop."""
    notify = listener()
    audio = write_bursts(tmp_path / "a.wav", 1.0, [])
    config = parse_config({"sensors_enabled": False, "sources": [{"name": "cabin", "input": f"file:{audio}"}],
                           "detectors": ENERGY,
                           "outputs": {"jsonl": {"enabled": False}}})
    observer = SystemdObserver(Notifier(notify.address), watchdog_s=0.1)
    daemon = build_daemon(config, observers=[observer])

    async def run_briefly() -> int:
        task = asyncio.create_task(daemon.run())
        await asyncio.sleep(0.8)
        daemon.request_stop()
        return await task

    assert asyncio.run(run_briefly()) == 0
    _, ready = notify.wait_for("READY")
    assert ready["STATUS"] == "all sensors off (privacy switch)"
    assert len(notify.with_key("WATCHDOG")) >= 3


def test_notifier_is_a_no_op_outside_systemd() -> None:
    assert not Notifier.from_env({}).enabled
    assert Notifier.from_env({}).send("READY=1")
    assert SystemdObserver.from_env({}) is None
    assert not Notifier("relative/path").enabled


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "junk"}) is None


def test_status_line_names_sources_by_state_and_counts_hubs() -> None:
    health = Health()
    states: tuple[tuple[str, SourceState], ...] = (
        ("cabin", "listening"), ("exterior", "listening"), ("door", "failed"), ("rear", "disabled"))
    for name, state in states:
        health.source(name, "car").state = state
    health.sinks["mqtt:home"] = {"connected": True, "outbox": 0}
    health.sinks["mqtt:vehicle"] = {"connected": True, "outbox": 3}
    assert status_line(health) == "listening on cabin, exterior; failed: door; off: rear; 2/2 hubs connected"
