"""Waveform augmentation: crops and placement, SNR mixing, gain, mic-like EQ, synthetic reverb."""

from __future__ import annotations

import numpy as np

from earwitness import SAMPLE_RATE

FRAME = 400
HOP = 160


def frame_energy_db(x: np.ndarray, frame: int = FRAME, hop: int = HOP) -> np.ndarray:
    """Energy in dB of 25 ms frames every 10 ms (at least one frame)."""
    if len(x) < frame:
        x = np.pad(x, (0, frame - len(x)))
    n = 1 + (len(x) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    e = np.mean(np.square(x[idx], dtype=np.float64), axis=1)
    return 10 * np.log10(e + 1e-12)


def activity(x: np.ndarray, rel_db: float = 25.0, abs_db: float = -75.0) -> np.ndarray:
    """Per-sample activity mask: samples in frames within `rel_db` of the clip's loudest frame."""
    e = frame_energy_db(x)
    act_frames = (e >= e.max() - rel_db) & (e > abs_db)
    mask = np.zeros(max(len(x), FRAME), dtype=bool)
    for i in np.flatnonzero(act_frames):
        mask[i * HOP : i * HOP + FRAME] = True
    return mask[: len(x)]


def active_rms(x: np.ndarray, mask: np.ndarray | None = None) -> float:
    if mask is None:
        mask = activity(x)
    sel = x[mask] if mask.any() else x
    return float(np.sqrt(np.mean(np.square(sel, dtype=np.float64)) + 1e-20))


def random_crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random n-sample crop; shorter audio is tiled (with a random start) to fill n."""
    if len(x) >= n:
        s = int(rng.integers(0, len(x) - n + 1))
        return x[s : s + n].copy()
    reps = int(np.ceil(n / max(len(x), 1))) + 1
    tiled = np.tile(x, reps)
    s = int(rng.integers(0, len(x)))
    return tiled[s : s + n].copy()


def place(x: np.ndarray, mask: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Place a clip into an n-sample window at a random shift, keeping part of its active region.

    Returns (window audio, window activity mask). For a clip longer than the window, a crop
    that contains some active samples is taken; a shorter clip lands at a random offset
    (possibly cut at the window's edges, so that onsets near the window's end are seen).
    """
    out = np.zeros(n, dtype=np.float32)
    m_out = np.zeros(n, dtype=bool)
    act = np.flatnonzero(mask)
    if len(act) == 0:
        act = np.arange(len(x))
    # Choose an active sample of the clip and where it lands in the window.
    anchor = int(act[rng.integers(0, len(act))])
    # Bias the landing point towards the window's end (the part the detector scores).
    pos = int(n * (rng.uniform(0.0, 1.0) ** 0.7)) if rng.random() < 0.8 else int(rng.integers(0, n))
    pos = min(max(pos, 0), n - 1)
    start = pos - anchor  # window index of clip sample 0
    a0, a1 = max(0, start), min(n, start + len(x))
    out[a0:a1] = x[a0 - start : a1 - start]
    m_out[a0:a1] = mask[a0 - start : a1 - start]
    return out, m_out


def mix_at_snr(signal: np.ndarray, signal_rms: float, background: np.ndarray, snr_db: float) -> np.ndarray:
    bg_rms = float(np.sqrt(np.mean(np.square(background, dtype=np.float64)) + 1e-20))
    if bg_rms < 1e-7:
        return signal + background
    target = bg_rms * 10 ** (snr_db / 20)
    return signal * (target / max(signal_rms, 1e-9)) + background


def set_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))
    if rms < 1e-8:
        return x
    y = x * (10 ** (dbfs / 20) / rms)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def mic_eq(x: np.ndarray, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Microphone-like colouring: random high-pass, low-pass and a smooth +-6 dB tilt/ripple."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / sr)
    hp = rng.uniform(30, 400)
    lp = rng.uniform(3500, 8000)
    gain = 1 / np.sqrt(1 + (hp / np.maximum(f, 1.0)) ** 4)  # 2nd-order-like high-pass
    gain = gain / np.sqrt(1 + (f / lp) ** 6)
    logf = np.log2(np.maximum(f, 20.0) / 1000.0)
    knots = rng.uniform(-6, 6, 6)
    ripple_db = np.interp(logf, np.linspace(-5.7, 3.0, 6), knots)
    gain = gain * 10 ** (ripple_db / 20)
    return np.fft.irfft(spec * gain, n=len(x)).astype(np.float32)


def synthetic_rir(rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A room impulse response: direct path, a few early reflections, exponential diffuse tail."""
    rt60 = rng.uniform(0.15, 0.9)
    n = int(min(rt60, 0.8) * sr)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    # Air/wall absorption: high frequencies decay faster (simple one-pole low-pass of the tail).
    alpha = rng.uniform(0.2, 0.7)
    for i in range(1, 3):
        tail[i:] = (1 - alpha) * tail[i:] + alpha * tail[:-i]
    rir = tail * 10 ** (rng.uniform(-20, -6) / 20) / (np.sqrt(np.sum(tail**2)) + 1e-9)
    rir[0] = 1.0
    for _ in range(int(rng.integers(2, 6))):
        k = int(rng.uniform(0.002, 0.03) * sr)
        if k < n:
            rir[k] += rng.uniform(-0.5, 0.5)
    return rir.astype(np.float32)


def reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import fftconvolve  # training only: `eval` runs from a plain install, without scipy

    return fftconvolve(x, synthetic_rir(rng))[: len(x)].astype(np.float32)
