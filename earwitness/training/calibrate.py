"""Threshold calibration to a false-alarm budget, on validation audio.

A false event is a rising edge of a label's window score through the threshold on audio
that does not contain the label (the way the event tracker opens events). The validation
negatives are short (about half an hour), so a budget of 1 false event per 24 h cannot be
verified: the shipped threshold leaves no false event on them (with a margin), and an
extrapolated threshold (exponential fit to the tail of false-event peaks) is kept beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from earwitness import SAMPLE_RATE


def pad_stream(audio: np.ndarray, window_s: float, hop_s: float) -> tuple[np.ndarray, float]:
    """Pad a recording so that every sample lands in some window's scored tail.

    Returns (padded audio, lead in seconds): `window_s - hop_s` of silence before (as if the
    stream had started earlier in silence) and enough after to complete the last window.
    """
    lead = int(round((window_s - hop_s) * SAMPLE_RATE))
    hop = int(round(hop_s * SAMPLE_RATE))
    n = lead + len(audio)
    tail = (-(n - int(round(window_s * SAMPLE_RATE)))) % hop if n > window_s * SAMPLE_RATE else int(
        round(window_s * SAMPLE_RATE)) - n
    return np.concatenate([np.zeros(lead, np.float32), audio.astype(np.float32), np.zeros(tail, np.float32)]), lead / SAMPLE_RATE


def window_scores(detector, frontend, audio: np.ndarray, window_s: float = 1.0, hop_s: float = 0.25,
                  batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Scores [windows, all labels] and window end times (s, in the unpadded recording's time)."""
    x, lead = pad_stream(audio, window_s, hop_s)
    wl, hl = int(round(window_s * SAMPLE_RATE)), int(round(hop_s * SAMPLE_RATE))
    n = 1 + (len(x) - wl) // hl
    idx = np.arange(wl)[None, :] + hl * np.arange(n)[:, None]
    out = []
    for i in range(0, n, batch):
        mel = frontend(x[idx[i : i + batch]])
        out.append(detector.score_logmel_batch(mel, window_s)[0])
    ends = (np.arange(n) * hl + wl) / SAMPLE_RATE - lead
    return np.concatenate(out), ends


def confirmed_scores(scores: np.ndarray, hops: int, release_ratio: float) -> np.ndarray:
    """The score stream as the tracker confirms it: an event starts at window i only if the next
    `hops` windows hold above `release_ratio` of the threshold (its `min_duration_s`), so window i
    counts as min(s[i], s[i+1] / r, ..., s[i+hops] / r); the stream's end does not confirm."""
    if hops <= 0 or len(scores) == 0:
        return scores
    out = scores.astype(np.float64).copy()
    for k in range(1, hops + 1):
        later = np.full(len(scores), -np.inf)
        later[:-k] = scores[k:] / release_ratio
        out = np.minimum(out, later)
    return np.maximum(out, 0.0)


def event_peaks(scores: np.ndarray, floor: float) -> list[float]:
    """Peak score of each run of consecutive windows above `floor`."""
    peaks, cur = [], None
    for s in scores:
        if s >= floor:
            cur = s if cur is None else max(cur, s)
        elif cur is not None:
            peaks.append(float(cur))
            cur = None
    if cur is not None:
        peaks.append(float(cur))
    return peaks


def count_events(scores: np.ndarray, threshold: float) -> int:
    above = scores >= threshold
    return int(above[0]) + int(np.sum(above[1:] & ~above[:-1])) if len(above) else 0


def _logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


@dataclass
class Calibration:
    threshold: float  # the shipped threshold
    threshold_extrapolated: float  # where the fitted tail meets the budget
    hours: float
    observed_max: float  # highest false-event peak on the calibration audio
    observed_rate_per_hour: float  # false events per hour at `threshold` on the calibration audio
    n_peaks: int


def calibrate(negative_scores: list[np.ndarray], hours: float, budget_per_24h: float = 1.0,
              floor: float = 0.02, top_k: int = 20, margin_logit: float = 0.5, ceiling: float = 0.999) -> Calibration:
    """Threshold for one label from its window scores on negative streams totalling `hours`.

    Shipped threshold: the lowest one that leaves the budgeted number of false events on the
    calibration audio (budget x hours, rounded down: with half an hour of audio and a budget
    of 1 per 24 h that is zero), raised by `margin_logit` in logit. The extrapolated threshold,
    where an exponential fit to the top false-event peaks (in logit) meets the budget, is
    returned beside it: it is what 1 per 24 h would take if the tail keeps its shape.
    """
    peaks = sorted((p for s in negative_scores for p in event_peaks(s, floor)), reverse=True)
    target_rate = budget_per_24h / 24.0
    allowed = int(math.floor(target_rate * hours + 1e-9))
    observed_max = peaks[0] if peaks else 0.0
    kth = peaks[allowed] if len(peaks) > allowed else 0.0  # the highest peak that must stay below
    thr = 1 / (1 + math.exp(-(_logit(kth) + margin_logit))) if kth > 0 else 0.5
    thr = min(max(thr, 0.5), ceiling)
    if len(peaks) >= 5:
        k = min(top_k, len(peaks))
        z = np.array([_logit(p) for p in peaks[:k]])
        u = z[-1]
        sigma = max(float(np.mean(z - u)), 0.1)
        t_fit = u + sigma * math.log(max((k / hours) / target_rate, 1.0))
        thr_ext = min(max(1 / (1 + math.exp(-t_fit)), thr), ceiling)
    else:
        thr_ext = thr
    rate = (sum(count_events(s, thr) for s in negative_scores) / hours) if hours > 0 else float("nan")
    return Calibration(float(thr), float(thr_ext), float(hours), float(observed_max), float(rate), len(peaks))
