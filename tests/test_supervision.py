"""Supervised tasks, stalled and ended sources, bounded queues: no fault ends the daemon silently."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from structlog.testing import capture_logs

from earwitness.config import ClipsConfig
from earwitness.core.health import Health
from earwitness.core.supervision import supervise_task
from earwitness.daemon.status import exit_code, format_status
from earwitness.integrations.clips import ClipWriter
from tests.audio import tone_bursts
from tests.daemon_process import ENERGY, earwitness_command, write_config


def pcm(audio: np.ndarray) -> bytes:
    return (audio * 32767).astype("<i2").tobytes()


def status(workdir: Path) -> dict:
    result = subprocess.run(earwitness_command("status", "--json", "--socket", str(workdir / "status.sock")),
                            capture_output=True, text=True, timeout=30)
    return json.loads(result.stdout)


def test_a_failing_task_is_logged_with_its_traceback_restarted_with_backoff_and_shown() -> None:
    health = Health()
    runs: list[float] = []

    async def flaky() -> None:
        runs.append(time.monotonic())
        if len(runs) <= 2:
            raise ValueError(f"bug number {len(runs)}")
        await asyncio.sleep(3600)

    async def main() -> None:
        task = supervise_task(health, "watcher", flaky)
        while len(runs) < 3:
            await asyncio.sleep(0.05)
        assert health.tasks["watcher"] == {"state": "running", "restarts": 2, "last_error": "ValueError: bug number 2"}
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    with capture_logs() as logs:
        asyncio.run(main())
    failures = [l for l in logs if l["event"] == "task failed"]
    assert [f["error"] for f in failures] == ["ValueError: bug number 1", "ValueError: bug number 2"]
    assert all(isinstance(f["exc_info"], ValueError) for f in failures), "logged with the traceback"
    assert [f["retry_in_s"] for f in failures] == [1.0, 2.0], "restarted with backoff"
    assert runs[2] - runs[1] >= 2.0 > runs[1] - runs[0] >= 1.0
    assert health.tasks["watcher"]["state"] == "stopped"

    snapshot = {"sources": {}, "sinks": {}, "tasks": {"watcher": {"state": "restarting", "restarts": 2,
                                                                "last_error": "ValueError: bug number 2"}}}
    assert "watcher restarting (2 restarts, last: ValueError: bug number 2)" in format_status(snapshot)
    assert exit_code(snapshot) == 3


def test_a_silent_pipe_is_reported_stalled_and_eof_ends_it_cleanly(tmp_path: Path, daemons) -> None:
    config = write_config(tmp_path / "config.yaml", {"detectors": ENERGY, "sources": [
        {"name": "pipe", "input": "-", "location": "cabin", "stall_s": 0.5}]})
    daemon = daemons("--config", str(config), stdin=subprocess.PIPE)
    workdir = daemon.stdout_path.parent
    daemon.process.stdin.write(pcm(tone_bursts(2.0, [1.2])))
    daemon.process.stdin.flush()
    daemon.wait_for_log("source listening", source="pipe")
    stalled = daemon.wait_for_log("source stalled: no audio", source="pipe")
    assert stalled["reopening"] is False, "a pipe is waited for: it cannot be reopened"
    figures = status(workdir)
    assert figures["sources"]["pipe"]["state"] == "stalled" and "no audio" in figures["sources"]["pipe"]["error"]
    assert figures["tasks"]["config-watch"]["state"] == "running"

    daemon.process.stdin.write(pcm(tone_bursts(2.0, [0.5])))
    daemon.process.stdin.flush()
    daemon.wait_for(lambda: len([l for l in daemon.logs() if l.get("event") == "source listening"]) == 2, what="listening again")
    daemon.process.stdin.close()  # EOF
    assert daemon.process.wait(timeout=20) == 0
    lines = daemon.lines()
    starts = [l for l in lines if l.get("type") == "start"]
    ends = [l for l in lines if l.get("type") == "end"]
    assert starts and {l["id"] for l in ends} == {l["id"] for l in starts}, "its events are ended"
    assert lines[-1] == {"type": "sensor", "source": "pipe", "location": "cabin", "enabled": False, "reason": "ended"}
    assert daemon.wait_for_log("source ended: its open events are ended", source="pipe")


def test_the_clip_writer_queue_is_bounded_and_counts_what_it_drops(tmp_path: Path) -> None:
    writer = ClipWriter(max_pending=2)
    audio = np.zeros(16000 * 30, np.float32)
    limits = ClipsConfig(enabled=True)
    for number in range(12):
        writer.submit(tmp_path / "clips" / f"{number}.flac", audio, limits)
        assert writer.pending <= 2
    writer.flush(30)
    written = len(list((tmp_path / "clips").glob("*.flac")))
    assert writer.dropped > 0 and written + writer.dropped == 12


def test_events_carry_the_time_their_audio_was_captured_not_processed(tmp_path: Path, daemons) -> None:
    """A pipe pauses for 4 s: the burst after the pause is stamped when it was heard, not 4 s early."""
    config = write_config(tmp_path / "config.yaml", {"detectors": ENERGY, "events": {"defaults": {"cooldown_s": 0}},
                                                     "sources": [{"name": "pipe", "input": "-", "stall_s": 30}]})
    daemon = daemons("--config", str(config), stdin=subprocess.PIPE)
    daemon.wait_for_log("daemon started")
    written = []
    for onset in (1.2, 0.5):
        written.append(time.time())
        daemon.process.stdin.write(pcm(tone_bursts(3.0, [onset])))
        daemon.process.stdin.flush()
        daemon.wait_for(lambda: len([l for l in daemon.lines() if l.get("type") == "start"]) == len(written),
                        what="the burst's event")
        time.sleep(4.0)
    daemon.process.stdin.close()
    assert daemon.process.wait(timeout=20) == 0
    starts = [l for l in daemon.lines() if l.get("type") == "start"]
    heard = [datetime.fromisoformat(l["started_at"].replace("Z", "+00:00")).timestamp() for l in starts]
    # Within a hop and a window of the truth; stream offsets alone would put the second 4 s early.
    assert abs(heard[0] - (written[0] + 1.2)) < 1.0
    assert abs(heard[1] - (written[1] + 0.5)) < 1.0, heard[1] - (written[1] + 0.5)
