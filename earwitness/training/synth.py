"""Procedural scratch synthesis: stick-slip friction of a hard point dragged over a panel.

Physical sketch. A hard point (key, screwdriver, glass cutter) is pressed onto a surface
and dragged. The contact alternately sticks and slips: every slip releases a short
impulse. The slip rate follows the drag speed divided by the surface texture spacing
(irregular, so the sound is a rough noise), unless the contact locks into a
self-sustained oscillation (a squeal) at a pitch set by the tip and the panel, where the
impulses become periodic and the sound tonal. The impulses and a broadband friction noise,
both scaled by the normal pressure, excite the panel, whose modes (surface resonance)
colour the sound. A scratch is a few strokes, each with its own pressure, speed and
envelope, separated by short lifts.

Everything is randomised from a `numpy.random.Generator`: pressure, speed, texture,
squeal pitch and probability, duration, stroke count and the panel's modes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import butter, lfilter, sosfilt

from earwitness import SAMPLE_RATE


@dataclass
class ScratchParams:
    duration_s: float
    strokes: list[tuple[float, float]]  # (start_s, end_s) of each stroke
    pressure: list[float]  # per stroke, 0..1
    speed: list[float]  # per stroke, m/s
    texture_mm: float  # spacing of surface asperities
    squeal_hz: float | None  # pitch of the stick-slip squeal, or None (rough scratch)
    jitter: float  # relative jitter of slip times (high = rough)
    modes_hz: list[float] = field(default_factory=list)
    modes_q: list[float] = field(default_factory=list)
    modes_gain: list[float] = field(default_factory=list)
    noise_mix: float = 0.3  # share of broadband friction noise in the excitation
    highpass_hz: float = 300.0


def random_params(rng: np.random.Generator, duration_s: float | None = None) -> ScratchParams:
    duration = float(duration_s if duration_s is not None else rng.uniform(0.3, 2.5))
    n_strokes = int(rng.integers(1, 6))
    # Partition the duration into strokes and short lifts between them.
    weights = rng.uniform(0.5, 1.5, n_strokes)
    gaps = rng.uniform(0.02, 0.15, n_strokes - 1) if n_strokes > 1 else np.zeros(0)
    if gaps.sum() > 0.4 * duration:
        gaps *= 0.4 * duration / gaps.sum()
    active = duration - gaps.sum()
    lens = active * weights / weights.sum()
    strokes, t = [], 0.0
    for i, ln in enumerate(lens):
        strokes.append((t, t + float(ln)))
        t += float(ln) + (float(gaps[i]) if i < len(gaps) else 0.0)
    n_modes = int(rng.integers(4, 13))
    squeal = float(np.exp(rng.uniform(np.log(700.0), np.log(5000.0)))) if rng.random() < 0.45 else None
    return ScratchParams(
        duration_s=duration,
        strokes=strokes,
        pressure=[float(p) for p in rng.uniform(0.3, 1.0, n_strokes)],
        speed=[float(v) for v in np.exp(rng.uniform(np.log(0.03), np.log(0.6), n_strokes))],
        texture_mm=float(np.exp(rng.uniform(np.log(0.05), np.log(1.0)))),
        squeal_hz=squeal,
        jitter=float(rng.uniform(0.005, 0.04) if squeal else rng.uniform(0.3, 0.9)),
        modes_hz=sorted(float(f) for f in np.exp(rng.uniform(np.log(250.0), np.log(7000.0), n_modes))),
        modes_q=[float(q) for q in rng.uniform(8.0, 80.0, n_modes)],
        modes_gain=[float(g) for g in rng.uniform(0.2, 1.0, n_modes)],
        noise_mix=float(rng.uniform(0.1, 0.6)),
        highpass_hz=float(rng.uniform(150.0, 600.0)),
    )


def _resonator(x: np.ndarray, f: float, q: float, sr: int) -> np.ndarray:
    """Two-pole resonator (one panel mode) with unit peak gain."""
    r = np.exp(-np.pi * f / (q * sr))
    theta = 2 * np.pi * f / sr
    a = [1.0, -2 * r * np.cos(theta), r * r]
    b = [(1 - r * r) / 2, 0.0, -(1 - r * r) / 2]
    return lfilter(b, a, x)


def render(params: ScratchParams, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Render a scratch to float32 audio of `params.duration_s`, peak-normalised to 0.9."""
    n = int(round(params.duration_s * sr))
    t = np.arange(n) / sr
    pressure = np.zeros(n)
    speed = np.zeros(n)
    for (s0, s1), p, v in zip(params.strokes, params.pressure, params.speed):
        i0, i1 = int(s0 * sr), min(n, int(s1 * sr))
        if i1 <= i0:
            continue
        m = i1 - i0
        attack = max(1, int(min(0.03, 0.2 * m / sr) * sr))
        release = max(1, int(min(0.06, 0.3 * m / sr) * sr))
        env = np.ones(m)
        env[:attack] = np.linspace(0, 1, attack) ** 2
        env[-release:] = np.minimum(env[-release:], np.linspace(1, 0, release))
        # Hand tremor: slow random wobble of pressure and speed within a stroke.
        wob = 1 + 0.25 * np.interp(np.arange(m), np.linspace(0, m, 8), rng.standard_normal(8))
        pressure[i0:i1] = p * env * np.clip(wob, 0.3, None)
        speed[i0:i1] = v * np.clip(2 - wob, 0.3, None)
    active = pressure > 1e-3

    # Slip rate: squeal pitch (locked oscillation) or speed / texture spacing (rough).
    if params.squeal_hz:
        rate = params.squeal_hz * (1 + 0.04 * (speed / max(np.max(speed), 1e-9) - 0.5))
    else:
        rate = speed / (params.texture_mm * 1e-3)
    rate = np.clip(rate, 20.0, sr / 3)
    inc = rate / sr * np.clip(1 + params.jitter * rng.standard_normal(n), 0.05, None)
    phase = np.cumsum(inc * active)
    slips = np.diff(np.floor(phase), prepend=0.0) > 0
    amp = pressure * (1 + params.jitter * rng.standard_normal(n)) * slips
    excitation = amp.copy()
    # Broadband friction noise, scaled by pressure and (sub-linearly) by speed.
    noise = rng.standard_normal(n) * pressure * np.sqrt(speed / max(np.max(speed), 1e-9))
    excitation = (1 - params.noise_mix) * excitation / (np.std(excitation) + 1e-9) + params.noise_mix * noise / (
        np.std(noise) + 1e-9
    )

    out = 0.3 * excitation  # direct contact sound
    for f, q, g in zip(params.modes_hz, params.modes_q, params.modes_gain):
        if f < sr / 2 * 0.95:
            out = out + g * _resonator(excitation, f, q, sr)
    sos = butter(2, params.highpass_hz, btype="highpass", fs=sr, output="sos")
    out = sosfilt(sos, out)
    del t
    peak = np.max(np.abs(out))
    return (0.9 * out / peak).astype(np.float32) if peak > 0 else out.astype(np.float32)


def synth_scratch(rng: np.random.Generator, duration_s: float | None = None) -> tuple[np.ndarray, ScratchParams]:
    """A random scratch (audio float32 at 16 kHz, its parameters)."""
    params = random_params(rng, duration_s)
    return render(params, rng), params
