"""The anomaly threshold that meets a false-alarm budget, from the tail of recent normal scores."""

from __future__ import annotations

import math

import numpy as np

TAIL_QUANTILE = 0.99


def budget_threshold(scores: np.ndarray, exceedance: float, tail_quantile: float = TAIL_QUANTILE,
                     min_tail: int = 50) -> float:
    """Score that `exceedance` of windows exceed, from an exponential fit of the tail.

    Above the tail quantile (the 99th percentile, lower when there are too few scores for
    `min_tail` exceedances) the excesses are modelled as exponential (peaks over threshold,
    shape 0). Its scale is estimated robustly, from the median excess, so that a few
    anomalies among the scores do not inflate it. The result is never below the highest
    score seen when the target lies beyond the observed range.
    """
    s = np.sort(np.asarray(scores, np.float64)[np.isfinite(scores)])
    if len(s) == 0:
        return math.inf
    tail_p = min(max(1.0 - tail_quantile, min_tail / len(s)), 0.5)
    if exceedance >= tail_p:
        return float(np.quantile(s, 1.0 - exceedance))
    u = float(np.quantile(s, 1.0 - tail_p))
    excess = s[s > u] - u
    beta = float(np.median(excess)) / math.log(2.0) if len(excess) else 0.0
    beta = max(beta, 1e-6)
    t = u + beta * math.log(tail_p / exceedance)
    if exceedance < 1.0 / len(s) and len(s) >= 1000:
        t = max(t, float(s[-1]))
    return t
