"""Audio sources: microphone, file and stdin, each yielding 16 kHz mono float32 blocks.

A block is one window hop (0.25 s by default): the pipeline wakes once per window, and each
block completes exactly one window. `mic` and `-` (stdin) fill a bounded queue from another
thread; when the pipeline falls behind, the oldest audio is dropped, counted and logged,
never silently.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile
import soxr
import structlog

from earwitness import SAMPLE_RATE
from earwitness.config import SourceConfig

log = structlog.get_logger(__name__)

BLOCK_S = 0.25
"""Audio is handed to the pipeline in blocks of this many seconds unless told otherwise (the default hop)."""
DROP_LOG_INTERVAL_S = 10.0
PACED_SLEEP_SHARE = 0.8
"""Share of a pipe's missing block time its reader sleeps before reading again (the rest absorbs jitter)."""
ROOM_CHECK_S = 1.0
"""A pipe's reader waiting for room in the queue checks this often whether the daemon has gone."""


class SourceUnavailable(Exception):
    """A source that cannot be opened; the message says what is missing and how to fix it."""


class AudioSource(Protocol):
    @property
    def dropped_frames(self) -> int: ...

    @property
    def captured_at(self) -> float:
        """Wall-clock time (epoch seconds) at which the first sample of the block last yielded was captured:
        from the audio callback or the block's arrival, not from when the pipeline gets to it."""
        ...

    def chunks(self) -> AsyncGenerator[np.ndarray, None]:
        """Yield 16 kHz mono float32 blocks until the source ends; closing it releases the device."""
        ...


class _Reblocker:
    """Cuts a stream of arrays of any length into blocks of exactly `size` samples (a resampler's
    output varies by a few samples per call; the pipeline wants whole hops)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pending = np.zeros(0, np.float32)

    def __call__(self, samples: np.ndarray) -> list[np.ndarray]:
        if len(self._pending):
            samples = np.concatenate([self._pending, samples])
        whole = len(samples) // self._size * self._size
        self._pending = samples[whole:]
        return [samples[i : i + self._size] for i in range(0, whole, self._size)]

    def rest(self) -> np.ndarray:
        """What is left over at the end of the stream (less than a block)."""
        rest, self._pending = self._pending, np.zeros(0, np.float32)
        return rest


class _Resampler:
    """Streaming mono resampler to 16 kHz (a no-op at 16 kHz)."""

    def __init__(self, rate: int) -> None:
        self._stream = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")

    def __call__(self, mono: np.ndarray, last: bool = False) -> np.ndarray:
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        if self._stream is None:
            return mono
        return self._stream.resample_chunk(mono, last=last)


def read_audio_blocks(path: str | Path, block_s: float = BLOCK_S) -> Iterator[np.ndarray]:
    """Read any file soundfile can decode as 16 kHz mono float32 blocks, as fast as possible."""
    try:
        audio_file = soundfile.SoundFile(str(path))
    except (soundfile.LibsndfileError, OSError, RuntimeError) as error:
        raise SourceUnavailable(f"cannot read audio file {path}: {error}") from None
    with audio_file:
        resample = _Resampler(audio_file.samplerate)
        blocksize = max(1, int(audio_file.samplerate * block_s))
        frames = 0
        try:
            for block in audio_file.blocks(blocksize=blocksize, dtype="float32", always_2d=True):
                frames += len(block)
                yield resample(block.mean(axis=1))
        except (soundfile.LibsndfileError, OSError, RuntimeError) as error:  # truncated or damaged past this point
            raise SourceUnavailable(f"cannot read audio file {path} past {frames / audio_file.samplerate:.1f} s: "
                                    f"{str(error).removeprefix('Error : ')}") from None
        tail = resample(np.zeros(0, dtype=np.float32), last=True)
        if len(tail):
            yield tail


class FileSource:
    """Audio from a file: paced like a microphone (`realtime`) or as fast as possible."""

    def __init__(self, path: Path, realtime: bool, loop: bool, block_s: float = BLOCK_S) -> None:
        self.path = path
        self.realtime = realtime
        self.loop = loop
        self.block_s = block_s
        self.dropped_frames = 0
        self.captured_at = time.time()

    async def chunks(self) -> AsyncGenerator[np.ndarray, None]:
        if not self.path.is_file():
            raise SourceUnavailable(f"audio file not found: {self.path}")
        started = time.monotonic()
        samples = 0
        reblock = _Reblocker(int(round(self.block_s * SAMPLE_RATE)))
        while True:
            for block in read_audio_blocks(self.path, self.block_s):
                for hop in reblock(block):
                    samples += len(hop)
                    if self.realtime:
                        await asyncio.sleep(max(0.0, started + samples / SAMPLE_RATE - time.monotonic()))
                    else:
                        await asyncio.sleep(0)
                    self.captured_at = time.time() - len(hop) / SAMPLE_RATE
                    yield hop
            if not self.loop:
                if len(rest := reblock.rest()):
                    self.captured_at = time.time()
                    yield rest
                return


class _ChunkQueue:
    """A bounded queue filled from a foreign thread; on overflow the oldest chunk is dropped and counted.

    Each chunk costs the event loop one wake-up (`call_soon_threadsafe`), not a task: a pipe's
    back-pressure waits on a semaphore in the writing thread instead."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_seconds: float, block_s: float, source: str,
                 back_pressure: bool = False) -> None:
        self._loop = loop
        size = max(2, int(max_seconds / block_s))
        self._queue: asyncio.Queue[Captured | None] = asyncio.Queue(maxsize=size)
        self._room = threading.Semaphore(size) if back_pressure else None
        self._source = source
        self.dropped_frames = 0
        self._last_drop_log = float("-inf")

    def put_threadsafe(self, chunk: Captured | None) -> None:
        """Queue a chunk without waiting (a live device cannot wait): may drop the oldest."""
        self._loop.call_soon_threadsafe(self._put, chunk)

    def put_waiting(self, chunk: Captured | None) -> bool:
        """Queue a chunk, waiting for room (back-pressure on a pipe); False once the loop is gone."""
        assert self._room is not None, "a queue with back-pressure"
        while not self._room.acquire(timeout=ROOM_CHECK_S):
            if self._loop.is_closed():
                return False
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)
        except RuntimeError:  # the loop has closed
            return False
        return True

    def _put(self, chunk: Captured | None) -> None:
        if self._queue.full():
            dropped = self._queue.get_nowait()
            self.count_dropped(0 if dropped is None else len(dropped[0]))
        self._queue.put_nowait(chunk)

    def count_dropped(self, frames: int) -> None:
        self.dropped_frames += frames
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            self._last_drop_log = now
            log.warning("audio dropped: the pipeline fell behind", source=self._source, dropped_frames=self.dropped_frames)

    async def get(self) -> Captured | None:
        item = await self._queue.get()
        if self._room is not None:
            self._room.release()
        return item

    def clear(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()


class StdinSource:
    """Raw s16le 16 kHz mono from standard input (arecord, ffmpeg, a car's audio bus).

    A pipe gets back-pressure instead of drops: when the pipeline is busy the writer
    waits, so `ffmpeg ... -f s16le - | earwitness run --source -` loses nothing.
    """

    def __init__(self, name: str, queue_s: float, stream: Any = None, block_s: float = BLOCK_S) -> None:
        self._name = name
        self._queue_s = queue_s
        self._block = int(round(block_s * SAMPLE_RATE))
        self._stream = stream if stream is not None else sys.stdin.buffer
        self._queue: _ChunkQueue | None = None
        self.captured_at = time.time()

    @property
    def dropped_frames(self) -> int:
        return self._queue.dropped_frames if self._queue else 0

    async def chunks(self) -> AsyncGenerator[np.ndarray, None]:
        self._queue = _ChunkQueue(asyncio.get_running_loop(), self._queue_s, self._block / SAMPLE_RATE, self._name,
                                  back_pressure=True)
        threading.Thread(target=self._read, args=(self._queue,), name=f"stdin-{self._name}", daemon=True).start()
        while (item := await self._queue.get()) is not None:
            chunk, self.captured_at = item
            yield chunk

    def _read(self, queue: _ChunkQueue) -> None:
        """Queue whole blocks as they fill (and what is left at the end of the stream)."""
        block_bytes = self._block * 2
        pending = b""
        fd = self._stream.fileno()
        while data := os.read(fd, block_bytes - len(pending)):
            pending += data
            if len(pending) == block_bytes:
                if not queue.put_waiting(_captured(_pcm_to_float(pending), SAMPLE_RATE)):
                    return
                pending = b""
            else:
                # A paced writer (arecord, a sound card) cannot finish the block sooner than the audio it still
                # owes: sleeping through most of that spares a wake-up for each of its small writes.
                time.sleep(PACED_SLEEP_SHARE * (block_bytes - len(pending)) / 2 / SAMPLE_RATE)
        if len(pending) >= 2:
            queue.put_waiting(_captured(_pcm_to_float(pending[: len(pending) // 2 * 2]), SAMPLE_RATE))
        queue.put_waiting(None)


Captured = tuple[np.ndarray, float]
"""A block of audio and the wall-clock time its first sample was captured."""


def _captured(block: np.ndarray, rate: int) -> Captured:
    """A block that has just arrived whole: its first sample was captured its duration ago."""
    return block, time.time() - len(block) / rate


def _pcm_to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def import_sounddevice() -> Any:
    """Import sounddevice lazily; explain what to install when it or PortAudio is missing."""
    try:
        return importlib.import_module("sounddevice")
    except ImportError as error:
        raise SourceUnavailable(
            f"the microphone needs the Python package sounddevice ({error}); install it with: pip install sounddevice"
        ) from None
    except OSError as error:
        raise SourceUnavailable(
            f"the microphone needs the PortAudio library ({error}); "
            "install it with: sudo apt-get install libportaudio2"
        ) from None


def resolve_input_device(devices: list[dict[str, Any]], spec: str | int | None, default: int | None) -> int:
    """Pick an input device by index, by (part of) its name, or the system default."""
    inputs = {index: device for index, device in enumerate(devices) if device.get("max_input_channels", 0) > 0}
    if not inputs:
        raise SourceUnavailable("no audio input device found (is a microphone connected, and is the user in the 'audio' group?)")
    available = "; ".join(f"{index}: {device['name']}" for index, device in inputs.items())
    if spec is None:
        if default is not None and default in inputs:
            return default
        return next(iter(inputs))
    if isinstance(spec, int) or spec.strip().isdigit():
        index = int(spec)
        if index in inputs:
            return index
        raise SourceUnavailable(f"no input device with index {index}; input devices: {available}")
    exact = [index for index, device in inputs.items() if device["name"].lower() == spec.lower()]
    partial = [index for index, device in inputs.items() if spec.lower() in device["name"].lower()]
    matches = exact or partial
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise SourceUnavailable(f"no input device matches {spec!r}; input devices: {available}")
    names = "; ".join(f"{index}: {inputs[index]['name']}" for index in matches)
    raise SourceUnavailable(f"input device {spec!r} is ambiguous, it matches: {names}")


class MicSource:
    """A PortAudio input stream: its callback fills a bounded queue, resampled to 16 kHz."""

    def __init__(self, name: str, device: str | int | None, queue_s: float, block_s: float = BLOCK_S) -> None:
        self._name = name
        self._device = device
        self._queue_s = queue_s
        self._block_s = block_s
        self._queue: _ChunkQueue | None = None
        self._overflows = 0
        self.captured_at = time.time()

    @property
    def dropped_frames(self) -> int:
        return self._overflows + (self._queue.dropped_frames if self._queue else 0)

    async def chunks(self) -> AsyncGenerator[np.ndarray, None]:
        sounddevice = import_sounddevice()
        try:
            default_input = sounddevice.default.device[0]
            index = resolve_input_device(list(sounddevice.query_devices()), self._device, default_input)
            rate = int(sounddevice.query_devices(index)["default_samplerate"])
        except sounddevice.PortAudioError as error:
            raise SourceUnavailable(f"PortAudio cannot list input devices: {error}") from None
        queue = self._queue = _ChunkQueue(asyncio.get_running_loop(), self._queue_s, self._block_s, self._name)
        resample = _Resampler(rate)
        reblock = _Reblocker(int(round(self._block_s * SAMPLE_RATE)))

        def on_audio(indata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
            if status.input_overflow:
                self._overflows += frames
            queue.put_threadsafe(_captured(indata[:, 0].copy(), rate))

        try:
            stream = sounddevice.InputStream(
                device=index, channels=1, samplerate=rate, dtype="float32", blocksize=int(round(rate * self._block_s)),
                callback=on_audio,
            )
        except sounddevice.PortAudioError as error:
            raise SourceUnavailable(f"cannot open input device {index}: {error}") from None
        stream.start()
        log.info("microphone open", source=self._name, device=index, native_rate=rate)
        try:
            while (item := await queue.get()) is not None:
                block, captured_at = item
                for hop in reblock(resample(block)):
                    self.captured_at = captured_at  # to within a block: the pipeline keeps the stream continuous
                    yield hop
        finally:
            stream.stop()
            stream.close()
            queue.clear()
            log.info("microphone closed", source=self._name, device=index)


def open_source(config: SourceConfig, realtime: bool, block_s: float = BLOCK_S) -> AudioSource:
    """The source a config entry describes, handing out blocks of `block_s` (the window hop);
    not yet started: iterate `chunks()` to open it."""
    if config.input == "mic":
        return MicSource(config.name, config.device, config.queue_s, block_s)
    if config.input == "-":
        return StdinSource(config.name, config.queue_s, block_s=block_s)
    path = Path(config.input.removeprefix("file:")).expanduser()
    return FileSource(path, realtime=realtime, loop=config.loop, block_s=block_s)
