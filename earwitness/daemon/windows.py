"""Cut a stream of audio chunks into overlapping windows, computing each log-mel frame once.

A 1 s window every 0.25 s shares 72 of its 97 log-mel frames with the window before. The
windower keeps the stream's recent samples and frames in two buffers, computes only the
frames that a chunk completes, and hands out each window's audio and log-mel as views of
those buffers: nothing is copied or recomputed per window. This needs a framewise frontend
(one that says its `frame_hop` and `frame_length`: frame k covers samples
[k * frame_hop, k * frame_hop + frame_length)) and a hop that is a whole number of frame hops;
otherwise each window's log-mel is computed from its audio when a detector first reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from earwitness import SAMPLE_RATE
from earwitness.features import Frontend, WindowFeatures


@dataclass
class Window:
    """One window of 16 kHz mono audio, placed on the stream's timeline.

    `audio` (and `features.logmel`) may be views of the windower's buffers: valid until the
    windower's next `push`; a caller that keeps them longer copies them.
    """

    audio: np.ndarray
    start_s: float
    features: WindowFeatures = field(repr=False)

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


class _StreamBuffer:
    """The recent stretch of a stream of rows (samples, or log-mel frames), indexed by stream position.

    Rows are appended at the end and released from the front; `view` gives a contiguous view of
    any stretch still held. Releasing only moves an index: the held rows move to the front of the
    storage when it runs out of room (at most once per `capacity - held` rows appended), and the
    storage grows when the held rows and a new block do not fit together.
    """

    def __init__(self, row_shape: tuple[int, ...], capacity: int) -> None:
        self._data = np.empty((capacity, *row_shape), np.float32)
        self._begin = 0  # storage row of stream position `first`
        self._end = 0
        self.first = 0

    @property
    def end(self) -> int:
        """Stream position after the last row held."""
        return self.first + self._end - self._begin

    def release_before(self, position: int) -> None:
        drop = min(max(0, position - self.first), self._end - self._begin)
        self._begin += drop
        self.first += drop

    def append(self, rows: np.ndarray) -> None:
        n, held = len(rows), self._end - self._begin
        if self._end + n > len(self._data):
            if held + n > len(self._data):
                grown = np.empty((2 * (held + n), *self._data.shape[1:]), np.float32)
                grown[:held] = self._data[self._begin : self._end]
                self._data = grown
            else:
                self._data[:held] = self._data[self._begin : self._end]
            self._begin, self._end = 0, held
        self._data[self._end : self._end + n] = rows
        self._end += n

    def view(self, start: int, stop: int) -> np.ndarray:
        return self._data[self._begin + start - self.first : self._begin + stop - self.first]


class Windower:
    """Buffers chunks and yields a window of `length_s` every `hop_s` seconds of audio."""

    def __init__(self, length_s: float, hop_s: float, frontend: Frontend | None = None) -> None:
        self.length = int(round(length_s * SAMPLE_RATE))
        self.hop = int(round(hop_s * SAMPLE_RATE))
        self._frontend = frontend
        self._audio = _StreamBuffer((), 4 * self.length)
        self._next_start = 0  # stream sample where the next window starts
        frame_hop = getattr(frontend, "frame_hop", None)
        self._frame_hop: int = frame_hop or 0
        self._frame_length: int = getattr(frontend, "frame_length", 0)
        self._frames: _StreamBuffer | None = None
        """The stream's log-mel frames (rolling), or None: each window computes its own."""
        if frame_hop and self.hop % frame_hop == 0:
            self._frames_per_window = 1 + (self.length - self._frame_length) // frame_hop
            self._frames = _StreamBuffer((int(frontend.n_mels),), 4 * self._frames_per_window)

    @property
    def rolling(self) -> bool:
        """True when windows' log-mels are views of frames computed once per stream."""
        return self._frames is not None

    def push(self, chunk: np.ndarray) -> Iterator[Window]:
        """Append a chunk and yield every window that is now complete (views valid until the next push)."""
        frames = self._frames
        if frames is None:
            self._audio.release_before(self._next_start)
            self._audio.append(chunk)
        else:
            self._audio.release_before(min(self._next_start, frames.end * self._frame_hop))
            self._audio.append(chunk)
            frames.release_before(self._next_start // self._frame_hop)
            self._compute_frames(frames)
        while self._next_start + self.length <= self._audio.end:
            start = self._next_start
            audio = self._audio.view(start, start + self.length)
            if frames is None:
                features = WindowFeatures(audio, self._frontend)
            else:
                first = start // self._frame_hop
                features = WindowFeatures(audio, logmel=frames.view(first, first + self._frames_per_window))
            yield Window(audio, start / SAMPLE_RATE, features)
            self._next_start += self.hop

    def _compute_frames(self, frames: _StreamBuffer) -> None:
        """Compute the frames the audio now completes, and only those."""
        first = frames.end
        count = (self._audio.end - self._frame_length) // self._frame_hop + 1 - first
        if count > 0:
            start = first * self._frame_hop
            stop = (first + count - 1) * self._frame_hop + self._frame_length
            assert self._frontend is not None
            frames.append(self._frontend(self._audio.view(start, stop)))
