"""`earwitness bench`: speed, CPU, memory and end-to-end latency, beside YAMNet.

Every figure is measured in one run on this machine:

* `frontend_ms_per_window`: the log-mel frontend per window as the pipeline pays it (the
  windower, given one hop of audio, computes that hop's new frames), median over windows;
* `model_ms_per_window`: the shipped detector's inference (features precomputed), one thread,
  median over windows;
  `detectors_ms_per_window`: every configured detector (the anomaly detector too).
* `yamnet_ms_per_window`: YAMNet TFLite through ai-edge-litert, one thread (null without it).
* `detect_x_realtime`: seconds of audio per second of wall time of `earwitness detect`
  on a 10-minute file, the whole command (start-up included); `detect_startup_s` is the
  same command on a 1-second file, and `detect_x_realtime_after_startup` the rate without it.
* `start_to_listening_s`, `startup_s`, `listen_cpu_percent`, `rss_mb`, `latency_ms_*`: one
  `earwitness run` process, audio played into it in real time (raw PCM on stdin, paced by
  this process's clock), events published to a real local mosquitto and received by a
  subscriber on it. The first window of audio is in the pipe when the process starts (as if
  the microphone had been open for a second), so `start_to_listening_s`, process start to
  its first processed window (READY=1, which the daemon sends then), is the daemon's own
  start-up; `startup_s` is the same figure under its older name. Latency runs from the
  moment an event's onset is played (the first 10 ms of the clip within 20 dB of its
  loudest) to the moment the subscriber receives its `start` message.
* `gate_listen_cpu_percent`, `gate_events_received`, `gate_latency_ms_p50|p95`: the same, with the
  energy gate of low-power listening on (`gate.enabled`); `quiet_listen_cpu_percent` and
  `gate_quiet_listen_cpu_percent`: a third as long of the room noise alone (a parked car at night),
  without and with the gate.
* `runtime_install_mb`: the size on disk of earwitness and of every distribution a plain
  install (no extras) pulls in, as installed in this environment (null if one is missing).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import yaml

from earwitness import SAMPLE_RATE
from earwitness.config import Config
from earwitness.core.windows import Detection, Window, WindowFeatures
from earwitness.detectors import build_detectors
from earwitness.detectors.frontend import Windower

YAMNET_INPUT = 15_600
CHUNK_S = 0.05
WARM_UP_S = 5.0
"""CPU is measured after this much audio: the steady state of a daemon that runs for months."""
SPACING_S = 4.0
"""Events are this far apart: well clear of the default 2 s cooldown and 0.5 s merge gap."""


@dataclass
class Scene:
    """Audio with known event onsets, for the detector the default config ships."""

    audio: np.ndarray
    onsets_s: list[float]


def main(json_path: Path | None, data_dir: Path, yamnet_path: Path, windows: int, listen_s: float) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": _machine(), "runtime_install_mb": _runtime_install_mb()}
    config = Config()
    detectors = build_detectors(config.detectors)
    rng = np.random.default_rng(0)
    test_windows = [rng.normal(0, 0.05, int(config.windows.length_s * SAMPLE_RATE)).astype(np.float32) for _ in range(windows)]

    frontend = next((d.frontend for d in detectors if d.frontend is not None), None)
    results["frontend_ms_per_window"] = _frontend_ms(config, frontend, test_windows) if frontend else None
    results["model_ms_per_window"] = _model_ms(config, detectors[:1], frontend, test_windows)
    results["detectors_ms_per_window"] = _model_ms(config, detectors, frontend, test_windows)
    results["yamnet_ms_per_window"] = _yamnet_ms(yamnet_path, test_windows)
    _progress(results)

    scene = _scene(data_dir, duration_s=listen_s, spacing_s=SPACING_S)
    with tempfile.TemporaryDirectory(prefix="earwitness-bench-") as tmp:
        workdir = Path(tmp)
        results.update(_detect_x_realtime(workdir, scene))
        _progress(results)
        results.update(_listen(workdir, scene))
        _progress(results)
        results.update(_gate_figures(workdir, scene, data_dir, listen_s))
    _print_table(results)
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2) + "\n")
    return results


def _progress(results: dict[str, Any]) -> None:
    print("  " + ", ".join(f"{k}={v}" for k, v in results.items() if k != "machine"), file=sys.stderr, flush=True)


def _machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    return f"{cpu}, {os.cpu_count()} cores"


def _median_ms(function, inputs: list) -> float:
    for item in inputs[:20]:
        function(item)
    times = []
    for item in inputs:
        began = time.perf_counter()
        function(item)
        times.append(time.perf_counter() - began)
    return round(statistics.median(times) * 1000, 4)


def _frontend_ms(config: Config, frontend, audio_windows: list[np.ndarray]) -> float:
    """The features' time per window as the pipeline pays it: the windower given one hop of audio
    computes that hop's new log-mel frames (the rest of the window's frames were computed before)."""
    windower = Windower(config.windows.length_s, config.windows.hop_s, frontend)
    stream = np.concatenate(audio_windows)
    hops = [stream[i : i + windower.hop] for i in range(0, len(stream) - windower.hop + 1, windower.hop)]
    for hop in hops[: windower.length // windower.hop]:
        list(windower.push(hop))  # fill the first window
    return _median_ms(lambda hop: list(windower.push(hop)), hops[windower.length // windower.hop :][: len(audio_windows)])


def _model_ms(config: Config, detectors: list, frontend, audio_windows: list[np.ndarray]) -> float:
    """The detectors' scoring time per window with the shared features already computed."""
    hop_s = config.windows.hop_s
    windows = [Window(audio, i * hop_s, WindowFeatures(audio, logmel=frontend(audio) if frontend else None))
               for i, audio in enumerate(audio_windows)]

    def score(window: Window) -> None:
        found = Detection()
        for detector in detectors:
            found = found.merged(detector.detect([window], [found])[0])

    return _median_ms(score, windows)


def _yamnet_ms(path: Path, audio_windows: list[np.ndarray]) -> float | None:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    if not path.is_file():
        return None
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], [YAMNET_INPUT], strict=False)
    interpreter.allocate_tensors()

    def run(audio: np.ndarray) -> None:
        interpreter.set_tensor(detail["index"], audio[:YAMNET_INPUT])
        interpreter.invoke()

    return _median_ms(run, audio_windows)


def _scene(data_dir: Path, duration_s: float, spacing_s: float, events: bool = True) -> Scene:
    """Quiet room noise with events every `spacing_s` (none without `events`): real glass breaks from the
    corpus when the shipped classifier is the detector and the corpus is there, else tone bursts for `energy`."""
    rng = np.random.default_rng(1)
    audio = rng.normal(0, 10 ** (-50 / 20), int(duration_s * SAMPLE_RATE)).astype(np.float32)
    onsets = list(np.arange(2.0, duration_s - spacing_s, spacing_s)) if events else []
    clips = _glass_clips(data_dir) if "classifier" in {d.type for d in Config().detectors} else []
    played = []
    for i, onset in enumerate(onsets):
        if clips:
            clip = clips[i % len(clips)][: int((spacing_s - 1.0) * SAMPLE_RATE)]
        else:
            clip = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(int(0.5 * SAMPLE_RATE)) / SAMPLE_RATE)
        start = int(onset * SAMPLE_RATE)
        audio[start : start + len(clip)] += clip.astype(np.float32)
        played.append(float(onset) + _sound_onset_s(clip))
    return Scene(np.clip(audio, -1, 1), played)


def _sound_onset_s(clip: np.ndarray, frame_s: float = 0.01, within_db: float = 20.0) -> float:
    """Where the sound in a clip begins: its first 10 ms frame within `within_db` of its loudest."""
    frame = int(frame_s * SAMPLE_RATE)
    frames = clip[: len(clip) // frame * frame].reshape(-1, frame)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    return float(np.argmax(rms >= rms.max() * 10 ** (-within_db / 20)) * frame_s)


def _glass_clips(data_dir: Path) -> list[np.ndarray]:
    manifest = data_dir / "manifest.csv"
    if not manifest.is_file():
        return []
    with manifest.open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["class"] == "glass_break"]
    clips = []
    for row in sorted(rows, key=lambda r: r["path"])[:: max(1, len(rows) // 12)]:
        audio, rate = soundfile.read(str(data_dir / row["path"]), dtype="float32", always_2d=True)
        if rate == SAMPLE_RATE:
            clip = audio.mean(axis=1)
            clips.append(clip * (0.3 / max(np.abs(clip).max(), 1e-6)))
    return clips


def _earwitness(*args: str) -> list[str]:
    return [sys.executable, "-m", "earwitness", *args]


def _detect_x_realtime(workdir: Path, scene: Scene) -> dict[str, float]:
    def detect_s(seconds: int) -> float:
        path = workdir / f"detect_{seconds}s.flac"
        repeats = int(np.ceil(seconds * SAMPLE_RATE / len(scene.audio)))
        soundfile.write(str(path), np.tile(scene.audio, repeats)[: seconds * SAMPLE_RATE], SAMPLE_RATE)
        began = time.perf_counter()
        subprocess.run(_earwitness("detect", str(path)), check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - began

    startup_s, ten_minutes_s = detect_s(1), detect_s(600)
    return {
        "detect_x_realtime": round(600 / ten_minutes_s, 1),
        "detect_startup_s": round(startup_s, 2),
        "detect_x_realtime_after_startup": round(600 / max(ten_minutes_s - startup_s, 1e-3), 1),
    }


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


def _gate_figures(workdir: Path, scene: Scene, data_dir: Path, listen_s: float) -> dict[str, Any]:
    """Low-power listening: the same scene with the energy gate on, and a quiet scene (the -50 dBFS room
    noise, no event) without and with it."""
    gate = {"gate": {"enabled": True}}
    gated = _listen(workdir / "gate", scene, gate)
    quiet = _scene(data_dir, duration_s=max(listen_s / 3, 2 * WARM_UP_S), spacing_s=SPACING_S, events=False)
    results = {f"gate_{key}": gated[key] for key in ("listen_cpu_percent", "events_received", "latency_ms_p50", "latency_ms_p95")}
    results["quiet_listen_cpu_percent"] = _listen(workdir / "quiet", quiet)["listen_cpu_percent"]
    results["gate_quiet_listen_cpu_percent"] = _listen(workdir / "quiet-gate", quiet, gate)["listen_cpu_percent"]
    return results


def _listen(workdir: Path, scene: Scene, settings: dict[str, Any] | None = None) -> dict[str, Any]:
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
    daemon = subprocess.Popen(_earwitness("run", "--config", str(config_path)), stdin=subprocess.PIPE,
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
    latencies = _latencies(starts, [played_from + onset for onset in scene.onsets_s])
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
    }


def _runtime_install_mb() -> float | None:
    """Size on disk of earwitness and the distributions its plain install requires, transitively."""
    from importlib import metadata

    from packaging.requirements import Requirement

    package_dir = Path(__file__).resolve().parent
    total = sum(f.stat().st_size for f in package_dir.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
    seen: set[str] = set()
    todo = [Requirement(r) for r in metadata.requires("earwitness") or []]
    while todo:
        requirement = todo.pop()
        name = requirement.name.lower().replace("_", "-")
        if name in seen or (requirement.marker is not None and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return None
        files = [Path(str(dist.locate_file(f))) for f in dist.files or []]
        total += sum(path.stat().st_size for path in files if path.is_file())
        todo += [Requirement(r) for r in dist.requires or []]
    return round(total / 2**20, 1)


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


def _latencies(starts: list[tuple[float, dict]], onsets_at: list[float]) -> list[float]:
    """For each played onset, the first `start` received after it and before the next onset."""
    latencies = []
    for onset, next_onset in zip(onsets_at, onsets_at[1:] + [float("inf")]):
        arrival = next((at for at, _ in starts if onset <= at < next_onset), None)
        if arrival is not None:
            latencies.append((arrival - onset) * 1000)
    return latencies


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


def _print_table(results: dict[str, Any]) -> None:
    goals = {"model_ms_per_window": f"<= {results['yamnet_ms_per_window'] / 10:.3f} (yamnet/10)"
             if results.get("yamnet_ms_per_window") else "<= yamnet/10", "listen_cpu_percent": "<= 1", "detect_x_realtime": ">= 1000",
             "latency_ms_p95": "<= 300", "rss_mb": "<= 100", "start_to_listening_s": "<= 0.5"}
    print(f"earwitness bench on {results['machine']}")
    print(f"{'figure':<26} {'value':>12}  goal")
    for key, value in results.items():
        if key != "machine":
            print(f"{key:<26} {'-' if value is None else value!s:>12}  {goals.get(key, '')}")
