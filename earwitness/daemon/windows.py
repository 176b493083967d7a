"""Cut a stream of audio chunks into overlapping windows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from earwitness import SAMPLE_RATE
from earwitness.features import WindowFeatures


@dataclass
class Window:
    """One window of 16 kHz mono audio, placed on the stream's timeline."""

    audio: np.ndarray
    start_s: float
    features: WindowFeatures = field(repr=False)

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


class Windower:
    """Buffers chunks and yields a window of `length_s` every `hop_s` seconds of audio."""

    def __init__(self, length_s: float, hop_s: float, frontend=None) -> None:
        self.length = int(round(length_s * SAMPLE_RATE))
        self.hop = int(round(hop_s * SAMPLE_RATE))
        self._frontend = frontend
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0  # stream sample index of _buffer[0]

    def push(self, chunk: np.ndarray) -> Iterator[Window]:
        """Append a chunk and yield every window that is now complete."""
        self._buffer = np.concatenate([self._buffer, chunk.astype(np.float32, copy=False)])
        while len(self._buffer) >= self.length:
            audio = self._buffer[: self.length].copy()
            yield Window(audio, self._buffer_start / SAMPLE_RATE, WindowFeatures(audio, self._frontend))
            self._buffer = self._buffer[self.hop :]
            self._buffer_start += self.hop
