"""Log-mel frontend: 64 mel bands, 25 ms window, 10 ms hop, 16 kHz, in numpy.

This is the run-time frontend (`detect`, `run`, `eval`, `bench`): no torch. Training computes
the same features in torch (`earwitness.training.torch_frontend`), from these constants and
this filterbank; `tests/test_frontend.py` holds the two equal (max abs difference <= 1e-4).

Framing is torch.stft's with `center=False`: frame k covers samples [k * HOP_LENGTH,
k * HOP_LENGTH + N_FFT), weighted by a periodic Hann window of WIN_LENGTH zero-padded
(centred) to N_FFT. Each frame depends on its own samples only, so a stream's frames can be
computed once as its audio arrives and every window's log-mel is a slice of them: the
`Windower` below does that. A 1 s window every 0.25 s shares 72 of its 97 frames with the window
before; the windower computes only the frames a chunk completes and hands out each window's audio
and log-mel as views of two rolling buffers, copying nothing per window. With a frontend that does
not say its `frame_hop` and `frame_length`, or a hop that is not a whole number of frame hops, each
window's log-mel is computed from its audio when a detector first reads it.

The FFT runs in float64 (here and in training): in float32 its rounding noise lies about
125 dB below a frame's loudest bin, so two float32 implementations disagree by up to 3e-3 on
real recordings and 0.3 on pure tones in the quiet bands; in float64 they agree to 2e-6.
The mel sum and the log are float32.

Output is the natural log of mel power (floor 1e-10, i.e. -100 dB), absolute in level. Level
robustness is handled in the model, which normalises every window (see
`earwitness.detectors.cnn`), and in training by gain augmentation over +-30 dB.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from earwitness.core.audio import SAMPLE_RATE
from earwitness.core.windows import Frontend, Window, WindowFeatures

N_MELS = 64
WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_FFT = 512
F_MIN = 60.0
F_MAX = 7800.0
LOG_FLOOR = 1e-10


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SAMPLE_RATE, f_min: float = F_MIN, f_max: float = F_MAX
) -> np.ndarray:
    """Triangular HTK-mel filterbank, shape [n_fft // 2 + 1, n_mels], unit peak."""
    freqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - lower[None, :]) / (centre - lower)[None, :]
    down = (upper[None, :] - freqs[:, None]) / (upper - centre)[None, :]
    return np.clip(np.minimum(up, down), 0.0, None).astype(np.float32)


def analysis_window() -> np.ndarray:
    """Periodic Hann window of WIN_LENGTH, zero-padded on both sides to N_FFT (torch.stft's placement)."""
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN_LENGTH) / WIN_LENGTH)
    pad = (N_FFT - WIN_LENGTH) // 2
    return np.pad(hann, (pad, N_FFT - WIN_LENGTH - pad)).astype(np.float32)


def n_frames(n_samples: int) -> int:
    """Number of frames the frontend yields for `n_samples` of audio (no centre padding)."""
    if n_samples < N_FFT:
        return 0
    return 1 + (n_samples - N_FFT) // HOP_LENGTH


@runtime_checkable
class FramewiseFrontend(Protocol):
    """A frontend whose frame k covers samples [k * frame_hop, k * frame_hop + frame_length): the windower
    may then compute a stream's frames once and hand each window a view of them."""

    n_mels: int
    frame_hop: int
    frame_length: int

    def __call__(self, audio: np.ndarray) -> np.ndarray: ...


class LogMel:
    """Audio [..., samples] -> log-mel [..., frames, N_MELS], float32.

    The window and filterbank are built once; `frame_hop` and `frame_length` (samples) tell
    the windower that it may compute a stream's frames incrementally.
    """

    n_mels = N_MELS
    frame_hop = HOP_LENGTH
    frame_length = N_FFT

    def __init__(self) -> None:
        self._window = analysis_window().astype(np.float64)
        self._mel = mel_filterbank()

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.shape[-1] < N_FFT:
            return np.zeros((*audio.shape[:-1], 0, N_MELS), np.float32)
        frames = _frames(audio)
        spectrum = np.fft.rfft(frames * self._window, axis=-1)
        power = np.square(spectrum.real) + np.square(spectrum.imag)
        # One vector-matrix product per frame: a frame's bands then do not depend on how many frames are
        # computed with it (a matrix product's rounding can, with the BLAS kernel), so a stream's frames
        # computed hop by hop equal those of the whole window, to the bit.
        mel = (power.astype(np.float32)[..., None, :] @ self._mel)[..., 0, :]
        return np.log(mel + np.float32(LOG_FLOOR))


def _frames(audio: np.ndarray) -> np.ndarray:
    """A view of the frames [..., n_frames(samples), N_FFT]: for one contiguous stretch of audio (every hop
    of a stream) built directly, as sliding_window_view's Python costs a fifth of a hop's frontend."""
    if audio.ndim == 1 and audio.flags.c_contiguous:
        step = audio.strides[0]
        return as_strided(audio, (n_frames(len(audio)), N_FFT), (HOP_LENGTH * step, step), writeable=False)
    return sliding_window_view(audio, N_FFT, axis=-1)[..., ::HOP_LENGTH, :]


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
        self._frame_hop = frontend.frame_hop if isinstance(frontend, FramewiseFrontend) else 0
        self._frame_length = frontend.frame_length if isinstance(frontend, FramewiseFrontend) else 0
        self._frames: _StreamBuffer | None = None
        """The stream's log-mel frames (rolling), or None: each window computes its own."""
        if isinstance(frontend, FramewiseFrontend) and self.hop % frontend.frame_hop == 0:
            self._frames_per_window = 1 + (self.length - self._frame_length) // self._frame_hop
            self._frames = _StreamBuffer((frontend.n_mels,), 4 * self._frames_per_window)

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
