"""Captions through the real daemon: `earwitness run` with a `file:` source of tone bursts, paced in
real time, the JSON-lines sink writing to a file, and a small OpenAI-compatible server on loopback.

Daemons that do not depend on each other run side by side to keep the wall time short.
Bursts start at 1 s or later: the energy detector learns its noise floor from the first window.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from earwitness import SAMPLE_RATE
from tests.audio import tone_bursts
from tests.daemon_process import ENERGY, earwitness_command, write_config
from tests.test_captions import (  # noqa: F401 (fixture)
    CAPTION,
    FAILED,
    REFUSED,
    FakeLLM,
    closed_port_url,
    decode_wav,
    llm,
)

SCHEMA = {"id", "type", "device", "source", "location", "label", "score", "started_at", "ended_at", "caption", "model"}
JSONL_EXTRAS = {"start_s", "end_s"}


class Watched:
    """One daemon run: its audio, config, and the JSON lines as they arrive (with the wall time first seen)."""

    def __init__(self, daemons, workdir: Path, onsets: list[float], duration_s: float, captions: dict[str, Any],
                 **config: Any) -> None:
        workdir.mkdir()
        self.audio = tone_bursts(duration_s, onsets)
        self.audio_path = workdir / "bursts.wav"
        soundfile.write(str(self.audio_path), self.audio, SAMPLE_RATE, subtype="FLOAT")
        self.jsonl = workdir / "events.jsonl"
        self.config_path = write_config(workdir / "config.yaml", {
            "device_id": "hub",
            "state_dir": str(workdir / "state"),
            "sources": [{"name": "hall", "input": f"file:{self.audio_path}", "location": "living_room"}],
            "detectors": ENERGY,
            "events": {"defaults": {"cooldown_s": 0.0, "merge_gap_s": 0.25}},
            "outputs": {"jsonl": {"path": str(self.jsonl)}},
            "captions": captions,
            **config,
        })
        self.seen: dict[tuple[str, str], float] = {}
        self.lines: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self.daemon = daemons("--config", str(self.config_path))
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        offset = 0
        pending = b""
        while not self._stop.is_set():
            if self.jsonl.exists():
                with self.jsonl.open("rb") as stream:
                    stream.seek(offset)
                    data = stream.read()
                offset += len(data)
                pending += data
                now = time.time()
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    line = json.loads(raw)
                    self.lines.append(line)
                    if "id" in line:
                        self.seen.setdefault((line["id"], line["type"]), now)
            time.sleep(0.01)

    def finish(self, timeout: float = 20.0) -> int:
        code = self.daemon.process.wait(timeout=timeout)
        time.sleep(0.05)
        self._stop.set()
        self._thread.join()
        return code

    def of_type(self, change: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("type") == change]

    def latency(self, line: dict[str, Any]) -> float:
        """Seconds from the event's start (in the stream, paced in real time) to its message's arrival."""
        started = datetime.fromisoformat(line["started_at"].replace("Z", "+00:00")).timestamp()
        return self.seen[(line["id"], line["type"])] - started


def best_offset(needle: np.ndarray, haystack: np.ndarray, around: int, spread: int = 64) -> tuple[int, float]:
    """The offset near `around` where `needle` best matches `haystack`, and the largest difference there."""
    best = (around, float("inf"))
    for offset in range(max(0, around - spread), around + spread + 1):
        part = haystack[offset : offset + len(needle)]
        if len(part) == len(needle):
            error = float(np.max(np.abs(part - needle)))
            if error < best[1]:
                best = (offset, error)
    return best


def test_caption_with_audio_arrives_as_update_of_the_event(daemons, llm, tmp_path: Path) -> None:  # noqa: F811
    server = llm()
    run = Watched(daemons, tmp_path / "run", [1.0], 4.5, {
        "backend": "openai", "send_audio": True,
        "openai": {"base_url": server.url, "model": "midashenglm", "max_tokens": 50},
    }, clips={"enabled": True, "pre_roll_s": 1.0})
    assert run.finish() == 0, run.daemon.stderr_path.read_text()[-2000:]

    [start], [end], [update] = run.of_type("start"), run.of_type("end"), run.of_type("update")
    assert start["id"] == end["id"] == update["id"]
    assert set(start) == SCHEMA | JSONL_EXTRAS | {"clip"}
    assert (start["caption"], start["clip"]) == (None, None)  # the alert does not wait for caption or clip
    # the caption was made once the clip was complete (audio sent): it follows the end, with the end's state
    assert end["caption"] is None and end["clip"]
    assert update["caption"] == CAPTION.removesuffix(".") + f" ({end['end_s'] - start['start_s']:.1f} s)."
    assert update["ended_at"] == end["ended_at"] and update["clip"] == end["clip"]
    assert run.seen[(update["id"], "update")] >= run.seen[(end["id"], "end")]

    [request] = server.requests
    body = request["body"]
    assert request["path"] == "/v1/chat/completions" and "Authorization" not in request["headers"]
    assert body["model"] == "midashenglm" and body["max_tokens"] == 50
    system, user = body["messages"]
    assert system["role"] == "system" and user["role"] == "user"
    text, sound = user["content"]
    assert "Detected label: loud" in text["text"] and "Source: hall; location: living room" in text["text"]
    assert sound["type"] == "input_audio" and sound["input_audio"]["format"] == "wav"

    # the WAV is the event's audio, pre-roll included: [start - 1 s, end] of the file
    wav, rate, info = decode_wav(sound["input_audio"]["data"])
    assert (rate, info.channels) == (SAMPLE_RATE, 1)
    expected_len = (end["end_s"] - max(0.0, start["start_s"] - 1.0)) * SAMPLE_RATE
    assert abs(len(wav) - expected_len) <= 32
    offset, error = best_offset(wav, run.audio, int(round(max(0.0, start["start_s"] - 1.0) * SAMPLE_RATE)))
    assert error <= 1.5 / 32768, error
    assert offset / SAMPLE_RATE <= 1.0 - 0.9  # the burst at 1.0 s is inside, with a second of pre-roll

    # the clip file holds the same audio, and it is the only file written
    clip = Path(end["clip"])
    written, _ = soundfile.read(clip, dtype="float32")
    np.testing.assert_allclose(written, wav, atol=1.5 / 32768)  # both 16-bit; libsndfile rounds FLAC and WAV alike up to 1 LSB
    assert [p.name for p in (tmp_path / "run" / "state").rglob("*") if p.is_file()] == [clip.name]


def test_alerts_on_time_and_template_captions_when_the_endpoint_fails(daemons, llm, tmp_path: Path) -> None:  # noqa: F811
    runs: dict[str, tuple[Watched, FakeLLM]] = {}
    for mode in ("slow", "down", "500", "garbage"):
        server = llm(mode="ok" if mode in ("slow", "down") else mode, delay_s=5.0 if mode == "slow" else 0.0)
        url = closed_port_url() if mode == "down" else server.url
        runs[mode] = (Watched(daemons, tmp_path / mode, [1.0, 3.0], 5.0, {
            "backend": "openai", "retries": 1, "backoff_s": 0.1,
            "openai": {"base_url": url, "model": "m", "timeout_s": 0.4},
        }), server)
    for mode, (run, server) in runs.items():
        assert run.finish() == 0, f"{mode}: {run.daemon.stderr_path.read_text()[-2000:]}"
        starts, ends = run.of_type("start"), run.of_type("end")
        assert len(starts) == len(ends) == 2, mode  # the daemon kept running: the second event too
        for start in starts:
            assert set(start) == SCHEMA | JSONL_EXTRAS, mode  # no `clip` key with clip files off
            assert start["caption"] is None
            assert run.latency(start) < 1.5, (mode, run.latency(start))
        captions = {line["id"]: line["caption"] for line in run.of_type("update") if line["caption"]}
        assert set(captions) == {start["id"] for start in starts}, mode
        assert all(c.startswith("Loud sound at living room (hall), ") for c in captions.values()), captions
        failed = [e for e in run.daemon.logs() if e.get("event") in (FAILED, REFUSED)]
        assert len(failed) == 2 and failed[0]["level"] == "warning", mode
        assert len(server.requests) == {"slow": 4, "down": 0, "500": 4, "garbage": 2}[mode]


def test_alert_delivery_does_not_depend_on_caption_latency(daemons, llm, tmp_path: Path) -> None:  # noqa: F811
    runs = {}
    for delay in (0.0, 3.0):
        server = llm(delay_s=delay)
        runs[delay] = Watched(daemons, tmp_path / f"delay{delay:g}", [1.0, 3.0], 5.5, {
            "backend": "openai", "concurrency": 1, "timeout_s": 10,
            "openai": {"base_url": server.url, "model": "m", "timeout_s": 5},
        })
    for run in runs.values():
        assert run.finish() == 0, run.daemon.stderr_path.read_text()[-2000:]
    fast, slow = ([run.latency(line) for line in run.of_type("start")] for run in runs.values())
    assert len(fast) == len(slow) == 2
    for quick, waited in zip(fast, slow):
        assert quick < 1.5 and waited < 1.5
        assert abs(quick - waited) < 0.3, (fast, slow)
    # the slow endpoint really was slow: the first caption came 3 s after its alert, while the second alert
    # had already gone out on time
    first = runs[3.0].of_type("start")[0]
    caption_at = runs[3.0].seen[(first["id"], "update")]
    assert caption_at - runs[3.0].seen[(first["id"], "start")] >= 2.9
    assert runs[3.0].seen[(runs[3.0].of_type("start")[1]["id"], "start")] < caption_at
    assert [line["caption"] for line in runs[3.0].of_type("update") if line["id"] == first["id"]] == [CAPTION]


def test_endpoint_checked_on_reload_and_its_failure_shown_by_status(daemons, llm, tmp_path: Path) -> None:  # noqa: F811
    server = llm(models=("qwen2-audio",))
    audio_path = tmp_path / "bursts.wav"
    soundfile.write(str(audio_path), tone_bursts(3.0, [1.0]), SAMPLE_RATE, subtype="FLOAT")
    socket_path = tmp_path / "status.sock"
    settings = {"detectors": ENERGY, "health": {"socket": str(socket_path)},
                "sources": [{"name": "hall", "input": f"file:{audio_path}", "loop": True}],
                "captions": {"backend": "openai", "openai": {"base_url": server.url, "model": "qwen2-audio"}}}
    config = write_config(tmp_path / "config.yaml", settings)
    daemon = daemons("--config", str(config))
    daemon.wait_for_log("caption endpoint ready", timeout=30, model="qwen2-audio")

    write_config(config, {**settings, "captions": {"backend": "openai", "openai": {"base_url": server.url,
                                                                                   "model": "qwen2-audo"}}})
    daemon.process.send_signal(signal.SIGHUP)
    check = daemon.wait_for_log("caption model not served, template captions until it is", timeout=30,
                                model="qwen2-audo")
    assert check["level"] == "warning" and check["served"] == ["qwen2-audio"]
    shown = subprocess.run(earwitness_command("status", "--socket", str(socket_path)), capture_output=True, text=True,
                           timeout=10)
    [line] = [line for line in shown.stdout.splitlines() if line.startswith("captions: ")]
    # the check's finding, or the refusal of a caption request made since (the server has no such model)
    assert (f"state model not served, last_failure model 'qwen2-audo' is not served by {server.url} "
            "(it serves: qwen2-audio)" in line) or (
            f"state refused, last_failure HTTP 404 from {server.url}/chat/completions: The model `qwen2-audo` "
            "does not exist." in line), line
    assert daemon.stop() == 0
