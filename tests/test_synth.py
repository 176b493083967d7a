"""The procedural scratch: spectral and temporal properties of stick-slip friction."""

from __future__ import annotations

from typing import Any

import numpy as np

from earwitness.training.synth import ScratchParams, render, synth_scratch

SR = 16_000


def _params(**kw: Any) -> ScratchParams:
    base: dict[str, Any] = {
        "duration_s": 1.2,
        "strokes": [(0.0, 0.45), (0.65, 1.2)],
        "pressure": [0.8, 0.6],
        "speed": [0.2, 0.3],
        "texture_mm": 0.2,
        "squeal_hz": None,
        "jitter": 0.6,
        "modes_hz": [900.0, 3100.0, 5200.0],
        "modes_q": [20.0, 25.0, 30.0],
        "modes_gain": [0.6, 1.0, 0.8],
        "noise_mix": 0.3,
        "highpass_hz": 300.0,
    }
    base.update(kw)
    return ScratchParams(**base)


def _band_db(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return 10 * np.log10(spec[(f >= lo) & (f < hi)].mean() + 1e-20)


def test_reproducible_and_sized():
    a, pa = synth_scratch(np.random.default_rng(3))
    b, pb = synth_scratch(np.random.default_rng(3))
    assert np.array_equal(a, b) and pa == pb
    assert a.dtype == np.float32 and len(a) == int(round(pa.duration_s * SR))
    assert 0.3 <= pa.duration_s <= 2.5 and np.max(np.abs(a)) <= 0.9 + 1e-6


def test_spectrum_is_high_and_broadband():
    """Friction noise is mostly above 500 Hz, centred in the 1.5-7 kHz range, never a low hum."""
    rng = np.random.default_rng(0)
    for _ in range(10):
        x, _ = synth_scratch(rng)
        spec = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(len(x), 1 / SR)
        assert spec[f > 500].sum() / spec.sum() > 0.8
        centroid = (spec * f).sum() / spec.sum()
        assert 1500 < centroid < 7000


def test_strokes_and_lifts_shape_the_envelope():
    """Sound during strokes, (near) silence during the lift between them, nothing before the first."""
    x = render(_params(), np.random.default_rng(1))
    def rms_db(t0, t1):
        seg = x[int(t0 * SR) : int(t1 * SR)]
        return 10 * np.log10(np.mean(seg.astype(np.float64) ** 2) + 1e-20)
    stroke1, gap, stroke2 = rms_db(0.1, 0.35), rms_db(0.55, 0.63), rms_db(0.8, 1.1)
    assert stroke1 - gap > 15 and stroke2 - gap > 15
    # Stick-slip is impulsive: the short-term envelope fluctuates strongly within a stroke.
    seg = x[int(0.8 * SR) : int(1.1 * SR)]
    env = np.sqrt(np.convolve(seg.astype(np.float64) ** 2, np.ones(32) / 32, mode="valid"))
    assert env.std() / env.mean() > 0.2


def test_squeal_is_tonal_at_its_pitch():
    """A locked stick-slip oscillation puts a spectral peak at the squeal pitch; rough friction does not."""
    rng = np.random.default_rng(2)
    squeal = render(_params(squeal_hz=2000.0, jitter=0.01, noise_mix=0.1), rng)
    rough = render(_params(jitter=0.8), np.random.default_rng(2))
    peak = _band_db(squeal, 1950, 2050)
    around = max(_band_db(squeal, 1500, 1800), _band_db(squeal, 2200, 2500))
    assert peak - around > 10
    assert _band_db(rough, 1950, 2050) - max(_band_db(rough, 1500, 1800), _band_db(rough, 2200, 2500)) < 6

    def flatness(x):
        p = np.abs(np.fft.rfft(x)) ** 2 + 1e-12
        return np.exp(np.mean(np.log(p))) / np.mean(p)
    assert flatness(rough) > 2 * flatness(squeal)
