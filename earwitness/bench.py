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
  loudest) to the moment the subscriber receives its `start` message; `latency_from_break_ms_p50|p95`
  count from where the loudest part begins (within 10 dB), as `earwitness eval`'s time to alarm does.
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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from earwitness import SAMPLE_RATE
from earwitness.bench_listen import WARM_UP_S, Scene, earwitness_command, listen
from earwitness.config import Config
from earwitness.core.windows import Detection, Window, WindowFeatures
from earwitness.detectors import build_detectors
from earwitness.detectors.frontend import Windower

YAMNET_INPUT = 15_600
SPACING_S = 4.0
"""Events are this far apart: well clear of the default 2 s cooldown and 0.5 s merge gap."""


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
        results.update(listen(workdir, scene))
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
    played: list[float] = []
    breaks: list[float] = []
    for i, onset in enumerate(onsets):
        if clips:
            clip = clips[i % len(clips)][: int((spacing_s - 1.0) * SAMPLE_RATE)]
        else:
            clip = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(int(0.5 * SAMPLE_RATE)) / SAMPLE_RATE)
        start = int(onset * SAMPLE_RATE)
        audio[start : start + len(clip)] += clip.astype(np.float32)
        played.append(float(onset) + _sound_onset_s(clip))
        breaks.append(float(onset) + _sound_onset_s(clip, within_db=10.0))
    return Scene(np.clip(audio, -1, 1), played, breaks)


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


def _detect_x_realtime(workdir: Path, scene: Scene) -> dict[str, float]:
    def detect_s(seconds: int) -> float:
        path = workdir / f"detect_{seconds}s.flac"
        repeats = int(np.ceil(seconds * SAMPLE_RATE / len(scene.audio)))
        soundfile.write(str(path), np.tile(scene.audio, repeats)[: seconds * SAMPLE_RATE], SAMPLE_RATE)
        began = time.perf_counter()
        subprocess.run(earwitness_command("detect", str(path)), check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - began

    startup_s, ten_minutes_s = detect_s(1), detect_s(600)
    return {
        "detect_x_realtime": round(600 / ten_minutes_s, 1),
        "detect_startup_s": round(startup_s, 2),
        "detect_x_realtime_after_startup": round(600 / max(ten_minutes_s - startup_s, 1e-3), 1),
    }


def _gate_figures(workdir: Path, scene: Scene, data_dir: Path, listen_s: float) -> dict[str, Any]:
    """Low-power listening: the same scene with the energy gate on, and a quiet scene (the -50 dBFS room
    noise, no event) without and with it."""
    gate = {"gate": {"enabled": True}}
    gated = listen(workdir / "gate", scene, gate)
    quiet = _scene(data_dir, duration_s=max(listen_s / 3, 2 * WARM_UP_S), spacing_s=SPACING_S, events=False)
    results = {f"gate_{key}": gated[key] for key in ("listen_cpu_percent", "events_received", "latency_ms_p50", "latency_ms_p95")}
    results["quiet_listen_cpu_percent"] = listen(workdir / "quiet", quiet)["listen_cpu_percent"]
    results["gate_quiet_listen_cpu_percent"] = listen(workdir / "quiet-gate", quiet, gate)["listen_cpu_percent"]
    return results


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


def _print_table(results: dict[str, Any]) -> None:
    goals = {"model_ms_per_window": f"<= {results['yamnet_ms_per_window'] / 10:.3f} (yamnet/10)"
             if results.get("yamnet_ms_per_window") else "<= yamnet/10", "listen_cpu_percent": "<= 1", "detect_x_realtime": ">= 1000",
             "latency_ms_p95": "<= 300", "rss_mb": "<= 100", "start_to_listening_s": "<= 0.5"}
    print(f"earwitness bench on {results['machine']}")
    print(f"{'figure':<26} {'value':>12}  goal")
    for key, value in results.items():
        if key != "machine":
            print(f"{key:<26} {'-' if value is None else value!s:>12}  {goals.get(key, '')}")
