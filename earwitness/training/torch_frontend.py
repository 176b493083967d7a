"""The log-mel frontend in torch, for training (batched tensors, on the training device).

The same features as the run-time numpy frontend `earwitness.detectors.frontend` (its constants and
filterbank, its float64 FFT), so the model never sees features computed differently from those
it was trained on; `tests/test_frontend.py` holds the two equal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from earwitness.detectors.frontend import HOP_LENGTH, LOG_FLOOR, N_FFT, N_MELS, analysis_window, mel_filterbank


class LogMelFrontend(torch.nn.Module):
    """Audio [..., samples] -> log-mel [..., frames, 64].

    Call it with a numpy array (returns numpy float32) or with a float tensor
    (batched, differentiable).
    """

    n_mels = N_MELS

    window: torch.Tensor
    mel: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.from_numpy(analysis_window()).double(), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_filterbank()), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        lead = audio.shape[:-1]
        flat = audio.reshape(-1, audio.shape[-1]).float().double()
        spec = torch.stft(
            flat, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=N_FFT, window=self.window,
            center=False, return_complex=True,
        )  # [B, bins, frames]
        power = (spec.real.square() + spec.imag.square()).float()
        mel = torch.matmul(power.transpose(1, 2), self.mel)  # [B, frames, mels]
        out = torch.log(mel + LOG_FLOOR)
        return out.reshape(*lead, out.shape[-2], out.shape[-1])

    def __call__(self, audio: Any) -> Any:
        if isinstance(audio, np.ndarray):
            with torch.inference_mode():
                return super().__call__(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))).numpy()
        return super().__call__(audio)
