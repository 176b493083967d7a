"""Sources: file decoding and resampling, stdin, and the microphone path as far as no sound card allows."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from earwitness.daemon import sources
from earwitness.daemon.sources import SourceUnavailable, import_sounddevice, read_audio_blocks, resolve_input_device
from tests.audio import write_bursts

DEVICES = [
    {"name": "HDA Intel PCH: ALC256 Analog (hw:0,0)", "max_input_channels": 2, "default_samplerate": 44100.0},
    {"name": "HDMI 0", "max_input_channels": 0, "default_samplerate": 48000.0},
    {"name": "USB Audio Device: Mic (hw:1,0)", "max_input_channels": 1, "default_samplerate": 48000.0},
    {"name": "USB Audio Device: Line (hw:1,1)", "max_input_channels": 2, "default_samplerate": 48000.0},
]


def test_file_is_resampled_to_16k_mono(tmp_path: Path) -> None:
    path = write_bursts(tmp_path / "stereo44k.flac", 3.0, [1.0], rate=44_100, channels=2)
    audio = np.concatenate(list(read_audio_blocks(path)))
    assert abs(len(audio) - 3 * 16_000) <= 16
    burst = np.abs(audio[16_000:24_000]).max()
    assert 0.4 < burst < 0.6, "the tone keeps its level through downmix and resampling"
    assert np.abs(audio[:15_000]).max() < 0.02


def test_unreadable_file_gets_a_clear_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio" * 100)
    with pytest.raises(SourceUnavailable, match="cannot read audio file"):
        list(read_audio_blocks(garbage))


@pytest.mark.parametrize(
    "spec, expected",
    [(None, 0), (0, 0), ("2", 2), ("hw:1,1", 3), ("usb audio device: mic (hw:1,0)", 2), ("ALC256", 0)],
)
def test_device_selection(spec, expected: int) -> None:
    assert resolve_input_device(DEVICES, spec, default=0) == expected


def test_device_selection_errors() -> None:
    with pytest.raises(SourceUnavailable, match="no input device with index 1"):
        resolve_input_device(DEVICES, 1, default=0)
    with pytest.raises(SourceUnavailable, match="ambiguous"):
        resolve_input_device(DEVICES, "USB", default=0)
    with pytest.raises(SourceUnavailable, match="no input device matches 'webcam'.*USB Audio Device: Mic"):
        resolve_input_device(DEVICES, "webcam", default=0)
    with pytest.raises(SourceUnavailable, match="no audio input device found"):
        resolve_input_device(DEVICES[1:2], None, default=None)


def test_missing_portaudio_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_portaudio(name: str):
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(sources.importlib, "import_module", no_portaudio)
    with pytest.raises(SourceUnavailable, match="apt-get install libportaudio2"):
        import_sounddevice()


def test_missing_sounddevice_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_module(name: str):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(sources.importlib, "import_module", no_module)
    with pytest.raises(SourceUnavailable, match="pip install sounddevice"):
        import_sounddevice()


def test_sounddevice_imports_lazily() -> None:
    """File sources and tests work without PortAudio: nothing imports sounddevice up front."""
    probe = "import sys, earwitness.cli, earwitness.daemon.service; print('sounddevice' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def _collect(source) -> list[np.ndarray]:
    async def run() -> list[np.ndarray]:
        return [block async for block in source.chunks()]

    return asyncio.run(run())


def test_a_resampled_file_is_handed_out_in_whole_hops(tmp_path: Path) -> None:
    path = write_bursts(tmp_path / "stereo44k.flac", 3.1, [1.0], rate=44_100, channels=2)
    blocks = _collect(sources.FileSource(path, realtime=False, loop=False, block_s=0.25))
    assert {len(block) for block in blocks[:-1]} == {4000}
    assert 0 < len(blocks[-1]) <= 4000
    assert np.array_equal(np.concatenate(blocks), np.concatenate(list(read_audio_blocks(path))))


def test_stdin_is_handed_out_in_whole_hops_whatever_the_writes(tmp_path: Path) -> None:
    """A writer's 50 ms pieces (and an odd byte count) become 0.25 s blocks; the tail comes at the end."""
    pcm = (np.arange(4000 * 5 + 123) % 2000 - 1000).astype("<i2").tobytes()
    read_fd, write_fd = os.pipe()

    def write() -> None:
        with os.fdopen(write_fd, "wb") as pipe:
            for i in range(0, len(pcm), 1601):
                pipe.write(pcm[i : i + 1601])
                pipe.flush()

    writer = threading.Thread(target=write)
    writer.start()
    with os.fdopen(read_fd, "rb") as stream:
        blocks = _collect(sources.StdinSource("stdin", queue_s=10.0, stream=stream, block_s=0.25))
    writer.join()
    assert [len(block) for block in blocks] == [4000] * 5 + [123]
    expected = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    assert np.array_equal(np.concatenate(blocks), expected)


class _StallingMic:
    """A microphone that hands out a few hops and then goes silent without closing (a USB mic unplugged
    mid-stream, a stuck driver); counts how often it is opened and closed."""

    def __init__(self, opened: list[str]) -> None:
        self._opened = opened
        self.dropped_frames = 0
        self.captured_at = 0.0

    async def chunks(self):
        self._opened.append("open")
        try:
            for _ in range(3):
                await asyncio.sleep(0.01)
                yield np.zeros(4000, np.float32)
            await asyncio.Event().wait()  # no more audio, and no end either
        finally:
            self._opened.append("closed")


class _CountingPipeline:
    def __init__(self) -> None:
        self.hops = 0

    def process(self, chunk: np.ndarray, captured_at: float | None = None) -> None:
        self.hops += 1

    def finish(self) -> None:
        pass


def test_a_stalled_microphone_is_closed_and_reopened_and_stops_cleanly() -> None:
    from structlog.testing import capture_logs

    from earwitness.config import Config, SourceConfig
    from earwitness.core.health import Health
    from earwitness.daemon.runner import SourceRunner

    opened: list[str] = []
    pipelines: list[_CountingPipeline] = []

    class Parts:
        def audio(self, source, realtime, block_s):
            return _StallingMic(opened)

        def pipeline(self, config, source, emit, stats, feedback=None):
            pipelines.append(_CountingPipeline())
            return pipelines[-1]

    async def main() -> None:
        runner = SourceRunner(Parts(), Config(), SourceConfig(name="cabin", input="mic", stall_s=0.3),  # type: ignore[arg-type]
                              emit=lambda change: None, health=Health(), realtime=True)
        runner.start(on_done=lambda: None)
        deadline = asyncio.get_running_loop().time() + 10
        while opened.count("open") < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await runner.stop()
        assert runner.task is not None and runner.task.cancelled(), "stop() still ends the runner"

    with capture_logs() as logs:
        asyncio.run(main())
    assert opened[:3] == ["open", "closed", "open"], "the stalled device is closed before it is reopened"
    assert opened[-1] == "closed", "stopping closes the device"
    assert [p.hops for p in pipelines[:1]] == [3]
    stalls = [entry for entry in logs if entry["event"] == "source stalled: no audio"]
    assert stalls and stalls[0]["reopening"] is True and stalls[0]["silent_s"] == 0.3
    assert any(entry["event"] == "source will retry" for entry in logs)
