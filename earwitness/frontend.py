"""Log-mel frontend: 64 mel bands, 25 ms window, 10 ms hop, 16 kHz, in numpy.

This is the run-time frontend (`detect`, `run`, `eval`, `bench`): no torch. Training computes
the same features in torch (`earwitness.training.torch_frontend`), from these constants and
this filterbank; `tests/test_frontend.py` holds the two equal (max abs difference <= 1e-4).

Framing is torch.stft's with `center=False`: frame k covers samples [k * HOP_LENGTH,
k * HOP_LENGTH + N_FFT), weighted by a periodic Hann window of WIN_LENGTH zero-padded
(centred) to N_FFT. Each frame depends on its own samples only, so a stream's frames can be
computed once as its audio arrives and every window's log-mel is a slice of them (see
`earwitness.daemon.windows`).

The FFT runs in float64 (here and in training): in float32 its rounding noise lies about
125 dB below a frame's loudest bin, so two float32 implementations disagree by up to 3e-3 on
real recordings and 0.3 on pure tones in the quiet bands; in float64 they agree to 2e-6.
The mel sum and the log are float32.

Output is the natural log of mel power (floor 1e-10, i.e. -100 dB), absolute in level. Level
robustness is handled in the model, which normalises every window (see
`earwitness.detectors.cnn`), and in training by gain augmentation over +-30 dB.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from earwitness import SAMPLE_RATE

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
        frames = sliding_window_view(audio, N_FFT, axis=-1)[..., ::HOP_LENGTH, :]
        spectrum = np.fft.rfft(frames * self._window, axis=-1)
        power = np.square(spectrum.real) + np.square(spectrum.imag)
        mel = power.astype(np.float32) @ self._mel
        return np.log(mel + np.float32(LOG_FLOOR))
