"""Log-mel frontend: 64 mel bands, 25 ms window, 10 ms hop, 16 kHz, in torch.

The same module computes the features for training (batched tensors), and for
`detect`, `eval` and `run` (one numpy window at a time), so the model never sees
features computed by different code than it was trained on.

Output is the natural log of mel power (floor 1e-10, i.e. -100 dB), absolute in
level. Level robustness is handled in the model, which normalises every window
(see `earwitness.detectors.cnn`), and in training by gain augmentation over +-30 dB.
"""

from __future__ import annotations


import numpy as np
import torch

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


def n_frames(n_samples: int) -> int:
    """Number of frames the frontend yields for `n_samples` of audio (no centre padding)."""
    if n_samples < N_FFT:
        return 0
    return 1 + (n_samples - N_FFT) // HOP_LENGTH


class LogMelFrontend(torch.nn.Module):
    """Audio [..., samples] -> log-mel [..., frames, 64].

    Call it with a numpy array (one window, returns numpy float32) or use
    `forward` with a float tensor (batched, differentiable; used in training).
    """

    n_mels = N_MELS
    hop_s = HOP_LENGTH / SAMPLE_RATE

    def __init__(self) -> None:
        super().__init__()
        window = torch.hann_window(WIN_LENGTH, periodic=True)
        pad = (N_FFT - WIN_LENGTH) // 2
        window = torch.nn.functional.pad(window, (pad, N_FFT - WIN_LENGTH - pad))
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_filterbank()), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        lead = audio.shape[:-1]
        flat = audio.reshape(-1, audio.shape[-1]).float()
        spec = torch.stft(
            flat, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=N_FFT, window=self.window,
            center=False, return_complex=True,
        )  # [B, bins, frames]
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(power.transpose(1, 2), self.mel)  # [B, frames, mels]
        out = torch.log(mel + LOG_FLOOR)
        return out.reshape(*lead, out.shape[-2], out.shape[-1])

    def __call__(self, audio):  # type: ignore[override]
        if isinstance(audio, np.ndarray):
            with torch.inference_mode():
                return super().__call__(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))).numpy()
        return super().__call__(audio)
