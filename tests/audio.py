"""Test audio generated on the fly: quiet noise with loud tone bursts at known times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

SAMPLE_RATE = 16_000


def tone_bursts(duration_s: float, onsets_s: list[float], burst_s: float = 0.5, rate: int = SAMPLE_RATE,
                noise_dbfs: float = -50.0, seed: int = 0) -> np.ndarray:
    """Gaussian noise at `noise_dbfs` with 1 kHz tone bursts of amplitude 0.5 at `onsets_s`."""
    rng = np.random.default_rng(seed)
    audio = rng.normal(0.0, 10 ** (noise_dbfs / 20), int(duration_s * rate)).astype(np.float32)
    n = int(burst_s * rate)
    tone = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(n) / rate).astype(np.float32)
    for onset in onsets_s:
        start = int(onset * rate)
        audio[start : start + n] += tone[: len(audio) - start]
    return audio


def write_bursts(path: Path, duration_s: float, onsets_s: list[float], rate: int = SAMPLE_RATE, channels: int = 1) -> Path:
    audio = tone_bursts(duration_s, onsets_s, rate=rate)
    soundfile.write(str(path), np.repeat(audio[:, None], channels, axis=1) if channels > 1 else audio, rate)
    return path
