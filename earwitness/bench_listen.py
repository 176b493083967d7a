"""`earwitness bench`'s listening figures: the real daemon (`earwitness run`) fed a scene through stdin in
real time, its alerts received from a throwaway mosquitto; CPU, memory and latency from onset to alert."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from earwitness.config import Config
from earwitness.core.audio import SAMPLE_RATE

CHUNK_S = 0.05
WARM_UP_S = 5.0
"""CPU is measured after this much audio: the steady state of a daemon that runs for months."""


@dataclass
class Scene:
    """Audio with known event onsets, for the detector the default config ships."""

    audio: np.ndarray
    onsets_s: list[float]
    """Where each event's sound begins: its first 10 ms within 20 dB of its loudest."""
    break_onsets_s: list[float] | None = None
    """Where each event's loudest part begins (within 10 dB): a break that opens with a knock or a click
    is alarmed from here in `earwitness eval`'s time to alarm; None: the same as `onsets_s`."""


def earwitness_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "earwitness", *args]


class _Mosquitto:
    """A throwaway mosquitto on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        + ("user root\n" if os.geteuid() == 0 else ""))
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(5)


def listen(workdir: Path, scene: Scene, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    import paho.mqtt.client as mqtt

    workdir.mkdir(exist_ok=True)
    broker = _Mosquitto(workdir)
    received: list[tuple[float, dict]] = []
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-subscriber")
    subscriber.on_message = lambda _c, _u, message: received.append((time.time(), json.loads(message.payload)))
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.subscribe("earwitness/bench/events", qos=1)
    subscriber.loop_start()

    config = {"device_id": "bench", "state_dir": str(workdir / "state"), "log_level": "warning",
              "sources": [{"name": "bench", "input": "-"}], "outputs": {"jsonl": {"enabled": False}},
              "hubs": [{"name": "local", "host": "127.0.0.1", "port": broker.port, "discovery": {"enabled": False}}],
              **(settings or {})}
    config_path = workdir / "bench.yaml"
    config_path.write_text(yaml.safe_dump(config))
    notify_path = workdir / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.05)

    pcm = (scene.audio * 32767).astype("<i2").tobytes()
    chunk_bytes = int(CHUNK_S * SAMPLE_RATE) * 2
    first_window = int(Config().windows.length_s * SAMPLE_RATE) * 2  # 32 KB: fits in the pipe's buffer
    ready_at: list[float] = []
    threading.Thread(target=_wait_ready, args=(notify, ready_at), daemon=True).start()
    began = time.time()
    daemon = subprocess.Popen(earwitness_command("run", "--config", str(config_path)), stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, env={**os.environ, "NOTIFY_SOCKET": str(notify_path)})
    stdin = daemon.stdin
    assert stdin is not None
    try:
        stdin.write(pcm[:first_window])
        stdin.flush()
        played_from = began - first_window / 2 / SAMPLE_RATE  # when sample 0 was "played"
        steady: tuple[float, float] | None = None
        for i in range(first_window, len(pcm), chunk_bytes):
            # A chunk is written once its last sample has been played, as a sound card hands it over.
            end = min(i + chunk_bytes, len(pcm))
            time.sleep(max(0.0, played_from + end / 2 / SAMPLE_RATE - time.time()))
            if steady is None and i / 2 / SAMPLE_RATE >= WARM_UP_S:
                steady = (time.time(), _cpu_seconds(daemon.pid))
            stdin.write(pcm[i : i + chunk_bytes])
            stdin.flush()
        assert steady is not None, "play more audio than the warm-up"
        played_s = time.time() - steady[0]
        cpu_s = _cpu_seconds(daemon.pid) - steady[1]
        rss_mb = _peak_rss_mb(daemon.pid)
        time.sleep(1.0)
    finally:
        stdin.close()
        daemon.wait(10)
        subscriber.loop_stop()
        broker.stop()
        notify.close()

    starts = [(at, message) for at, message in received if message.get("type") == "start"]
    arrivals = _arrivals(starts, [played_from + onset for onset in scene.onsets_s])
    latencies = _delays_ms(arrivals, [played_from + onset for onset in scene.onsets_s])
    from_break = _delays_ms(arrivals, [played_from + onset for onset in scene.break_onsets_s or scene.onsets_s])
    start_to_listening_s = round(ready_at[0] - began, 3) if ready_at else None
    return {
        "start_to_listening_s": start_to_listening_s,
        "startup_s": start_to_listening_s,
        "listen_cpu_percent": round(100 * cpu_s / played_s, 2),
        "rss_mb": round(rss_mb, 1),
        "events_played": len(scene.onsets_s),
        "events_received": len(latencies),
        "latency_ms_p50": _percentile(latencies, 50),
        "latency_ms_p95": _percentile(latencies, 95),
        "latency_ms_max": round(max(latencies), 1) if latencies else None,
        "latency_from_break_ms_p50": _percentile(from_break, 50),
        "latency_from_break_ms_p95": _percentile(from_break, 95),
    }


def _wait_ready(notify: socket.socket, ready_at: list[float]) -> None:
    while not ready_at:
        try:
            message = notify.recv(4096).decode()
        except TimeoutError:
            continue
        except OSError:
            return
        if "READY=1" in message.split("\n"):
            ready_at.append(time.time())


def _arrivals(starts: list[tuple[float, dict]], onsets_at: list[float]) -> list[float | None]:
    """For each played onset, when the first `start` after it and before the next onset was received (None: never)."""
    return [next((at for at, _ in starts if onset <= at < next_onset), None)
            for onset, next_onset in zip(onsets_at, onsets_at[1:] + [float("inf")])]


def _delays_ms(arrivals: list[float | None], since: list[float]) -> list[float]:
    """Milliseconds from each moment in `since` to its event's arrival, for the events that arrived."""
    return [(at - start) * 1000 for at, start in zip(arrivals, since) if at is not None]


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


