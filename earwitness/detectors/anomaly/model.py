"""A per-source model of "normal" sound for the anomaly detector (numpy only): scoring and learning.

Design (see README, "Anomaly detector"):

- **Memory bank + kNN.** Up to `bank_size` feature vectors of normal windows. A window's raw
  anomaly distance `d` is the mean Euclidean distance to its `k` nearest bank entries,
  ignoring entries taken within `exclude_s` of it (overlapping neighbours would make
  everything look familiar).
- **Learning period.** For the first `learn_s` seconds of audio, every window not claimed by a
  known label goes into the bank (reservoir sampling once full); no alerts.
- **Slow adaptation.** Afterwards an eligible window (below `learn_below` x threshold, not
  claimed, not within `hold_s` of an anomalous window) replaces a random bank entry with a
  probability that renews the bank over about `adapt_s` seconds. Anomalous windows never enter.
- **Habituation.** Anomalous windows go to a quarantine instead. When a new anomalous window
  has neighbours (closer than the threshold) in quarantine from `habituate_episodes` distinct
  episodes (separated by at least `episode_gap_s` without anomalies), that recurring sound is
  promoted into the bank: a sound that keeps coming back stops being anomalous.
- **Budget threshold.** The threshold on `d` is refitted every `refit_s` from a ring of recent
  scores: the tail above their 99th percentile is fitted with an exponential
  (peaks over threshold) and extrapolated to the exceedance rate that gives `max_per_day`
  events per day. At the end of the learning period the ring is seeded with the bank's
  leave-one-out distances, so alerting starts with a calibrated threshold.
- **Score.** A log-logistic in `d`, `1 / (1 + (threshold / d) ** p)`: 0.5 at the threshold, and `p` set so
  that this place's typical window (the median of the recent normal distances) scores `TYPICAL_SCORE`. The
  score then means the same everywhere (how far past its own normal a window is, measured from both ends),
  so one score ranks windows across places: what fires is `d >= threshold` either way.

A clock of audio seconds is kept in the state, so times stay consistent across restarts. Saving and
loading the state is `persistence`; fitting the threshold to the budget is `threshold`.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from earwitness.detectors.anomaly.threshold import budget_threshold

MIN_RING = 50
_ZERO = np.float32(0.0)
CANDIDATES = 16
"""Bank entries, beyond k, whose exact distance is taken after the fast (norm-expanded) pre-selection."""
TYPICAL_SCORE = 0.1
"""The score of a window at the median of recent normal distances (the threshold's is 0.5)."""


@dataclass(frozen=True)
class NormalModelParams:
    learn_s: float = 600.0
    bank_size: int = 2048
    k: int = 3
    exclude_s: float = 5.0
    calib_exclude_s: float = 30.0
    """At the end of learning, the bank's leave-one-out distances ignore entries this close in time:
    new sound is further from the bank than the seconds around a window are."""
    adapt_s: float = 86400.0
    learn_below: float = 0.6
    hold_s: float = 2.0
    max_per_day: float = 2.0
    cluster_windows: float = 4.0
    """Windows above threshold per false event (overlapping windows come in runs)."""
    min_threshold: float = 0.0
    refit_s: float = 60.0
    ring_size: int = 16384
    habituate_episodes: int = 3
    episode_gap_s: float = 60.0
    quarantine_size: int = 512
    quarantine_max_age_s: float = 7 * 86400.0
    quiet_percentile: float = 10.0
    """A window quieter than this percentile of recent window levels is never anomalous: anomalies are
    sounds that appear, not the background receding (music stopping, a fade-out)."""
    level_ring_size: int = 4096


class NormalModel:
    def __init__(self, params: NormalModelParams, seed: int = 0) -> None:
        self.p = params
        self.rng = np.random.default_rng(seed)
        self.dim: int | None = None
        self._bank = np.zeros((0, 0), np.float32)
        self._bank_t = np.zeros(0, np.float64)
        self._bank_sq = np.zeros(0, np.float32)
        """Squared norm of each bank entry, kept with the bank: a window's distances are then one matrix-vector product."""
        self.n_bank = 0
        self.n_seen = 0  # windows offered to the reservoir during learning
        self.clock_s = 0.0  # audio seconds seen (continues across restarts)
        self.learned_s = 0.0  # audio seconds of learning done
        self.threshold = math.inf
        self.typical = math.nan
        """Median of the recent normal distances (the ring), taken at each refit."""
        self.ring = np.zeros(0, np.float32)
        self.ring_pos = 0
        self.last_refit_s = -math.inf
        self.last_anomaly_s = -math.inf
        self.episode = 0
        self.q = np.zeros((0, 0), np.float32)
        self.q_t = np.zeros(0, np.float64)
        self.q_ep = np.zeros(0, np.int64)
        self.n_habituated = 0
        self.levels = np.zeros(0, np.float32)  # recent window levels (dBFS), a ring
        self.levels_pos = 0
        self._levels_sorted: list[float] = []
        """The same levels, kept sorted as they come and go: the quiet percentile without sorting per window."""

    # -- state --------------------------------------------------------------------------------
    @property
    def learning(self) -> bool:
        return self.learned_s < self.p.learn_s or not math.isfinite(self.threshold)

    @property
    def bank(self) -> np.ndarray:
        return self._bank[: self.n_bank]

    @property
    def bank_t(self) -> np.ndarray:
        return self._bank_t[: self.n_bank]

    def _init_dim(self, dim: int) -> None:
        self.dim = dim
        self._bank = np.zeros((self.p.bank_size, dim), np.float32)
        self._bank_t = np.zeros(self.p.bank_size, np.float64)
        self._bank_sq = np.zeros(self.p.bank_size, np.float32)
        self.n_bank = 0
        self.q = np.zeros((0, dim), np.float32)

    def _bank_put(self, x: np.ndarray, t: float, slot: int | None = None) -> None:
        """Append (while there is room) or overwrite `slot` (a random one if None)."""
        if self.n_bank < self.p.bank_size:
            slot, self.n_bank = self.n_bank, self.n_bank + 1
        elif slot is None:
            slot = int(self.rng.integers(self.n_bank))
        self._bank[slot] = x
        self._bank_t[slot] = t
        self._bank_sq[slot] = np.dot(self._bank[slot], self._bank[slot])

    # -- scoring ------------------------------------------------------------------------------
    def distance(self, x: np.ndarray, at_s: float | None = None) -> float:
        """Mean distance to the k nearest bank entries not taken within `exclude_s` of `at_s`."""
        n = self.n_bank
        if n == 0:
            return math.inf
        bank = self.bank
        # |b - x|^2 - |x|^2 = |b|^2 - 2 b.x picks the candidates; their distances are then taken exactly.
        rank = self._bank_sq[:n] - 2.0 * (bank @ x)
        if at_s is not None and self.p.exclude_s > 0:
            rank[np.abs(self.bank_t - at_s) < self.p.exclude_s] = np.inf
        k = min(self.p.k, n)
        m = min(n, k + CANDIDATES)
        candidates = np.argpartition(rank, m - 1)[:m] if m < n else np.arange(n)
        candidates = candidates[np.isfinite(rank[candidates])]
        if len(candidates) == 0:
            return math.inf
        d2 = np.add.reduce(np.square(bank[candidates] - x[None, :]), axis=1)
        nearest = np.sqrt(np.maximum(np.partition(d2, min(k, len(d2)) - 1)[:k], _ZERO))
        return float(np.add.reduce(nearest) / len(nearest))  # np.mean's value, without its wrapper (once a window)

    def to_score(self, d: float) -> float:
        if not math.isfinite(self.threshold) or self.threshold <= 0:
            return 0.0
        if not math.isfinite(d):
            return 1.0
        if d <= 0:
            return 0.0
        spread = math.log(self.threshold / self.typical) if 0 < self.typical < self.threshold else 0.0
        power = math.log((1 - TYPICAL_SCORE) / TYPICAL_SCORE) / spread if spread > 0 else 1.0
        return float(1.0 / (1.0 + math.exp(min(power * math.log(self.threshold / d), 700.0))))

    def step(self, x: np.ndarray, dt_s: float, claimed: bool = False,
             level_dbfs: float | None = None) -> tuple[float, float]:
        """Score one window (feature vector `x`), then learn from it as the rules allow.

        `dt_s`: audio seconds since the previous window (the hop); `level_dbfs`: the window's level,
        for the quiet gate. Returns (distance, score); the score is 0 during the learning period.
        """
        quiet = False
        if level_dbfs is not None:
            if self.p.quiet_percentile > 0 and len(self.levels) >= 100:
                quiet = level_dbfs < _percentile_of_sorted(self._levels_sorted, self.p.quiet_percentile)
            if not claimed:
                self._push_level(level_dbfs)
        x = np.asarray(x, np.float32).ravel()
        if self.dim is None:
            self._init_dim(len(x))
        elif len(x) != self.dim:
            raise ValueError(f"feature size {len(x)} differs from the model's {self.dim}")
        self.clock_s += max(dt_s, 0.0)
        now = self.clock_s
        d = self.distance(x, now)
        if self.learning:
            self.learned_s += max(dt_s, 0.0)
            if not claimed:
                self._reservoir(x, now)
            if self.learned_s >= self.p.learn_s and len(self.bank) > self.p.k:
                self._end_learning()
            return d, 0.0
        score = 0.0 if quiet else self.to_score(d)
        anomalous = d >= self.threshold and not quiet
        if not claimed and not anomalous and not quiet and math.isfinite(d):
            self._push_ring(d)  # recent *normal* scores: anomalies would raise the threshold over themselves
        if anomalous and not claimed:
            self._quarantine(x, now)
        elif not claimed and d < self.p.learn_below * self.threshold and now - self.last_anomaly_s >= self.p.hold_s:
            self._adapt(x, now, dt_s)
        if now - self.last_refit_s >= self.p.refit_s:
            self.refit()
        return d, score

    # -- learning -----------------------------------------------------------------------------
    def _reservoir(self, x: np.ndarray, now: float) -> None:
        self.n_seen += 1
        if self.n_bank < self.p.bank_size:
            self._bank_put(x, now)
            return
        j = int(self.rng.integers(self.n_seen))
        if j < self.p.bank_size:
            self._bank_put(x, now, j)

    def _adapt(self, x: np.ndarray, now: float, dt_s: float) -> None:
        rate = self.p.bank_size * max(dt_s, 1e-3) / self.p.adapt_s
        if self.rng.random() < rate:
            self._bank_put(x, now)

    def _end_learning(self) -> None:
        """Seed the score ring with the bank's leave-one-out distances and fit the threshold."""
        self.learned_s = max(self.learned_s, self.p.learn_s)
        n = len(self.bank)
        sq = np.sum(np.square(self.bank.astype(np.float64)), axis=1)
        dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * self.bank @ self.bank.T, 0.0))
        span = float(self.bank_t.max() - self.bank_t.min()) if n else 0.0
        gap = min(max(self.p.exclude_s, self.p.calib_exclude_s), span / 4)  # short learning: keep neighbours
        close = np.abs(self.bank_t[:, None] - self.bank_t[None, :]) < max(gap, self.p.exclude_s, 1e-9)
        dist[close] = np.inf  # includes the diagonal
        k = min(self.p.k, n - 1)
        part = np.sort(dist, axis=1)[:, :k]
        loo = np.array([np.mean(r[np.isfinite(r)]) if np.isfinite(r).any() else np.nan for r in part])
        loo = loo[np.isfinite(loo)]
        self.ring = loo.astype(np.float32)[-self.p.ring_size:]
        self.ring_pos = 0
        self.refit()
        if not math.isfinite(self.threshold):  # too few windows to fit: a wide margin
            self.threshold = float(np.max(loo)) * 2.0 if len(loo) else 1.0

    def _push_level(self, level: float) -> None:
        level = float(np.float32(level))
        if len(self.levels) < self.p.level_ring_size:
            self.levels = np.append(self.levels, np.float32(level))
        else:
            old = float(self.levels[self.levels_pos])
            del self._levels_sorted[bisect.bisect_left(self._levels_sorted, old)]
            self.levels[self.levels_pos] = level
            self.levels_pos = (self.levels_pos + 1) % self.p.level_ring_size
        bisect.insort(self._levels_sorted, level)

    def _push_ring(self, d: float) -> None:
        if len(self.ring) < self.p.ring_size:
            self.ring = np.append(self.ring, np.float32(d))
        else:
            self.ring[self.ring_pos] = d
            self.ring_pos = (self.ring_pos + 1) % self.p.ring_size

    def refit(self) -> None:
        """Threshold from recent scores, extrapolated to the false-event budget."""
        self.last_refit_s = self.clock_s
        if len(self.ring):
            self.typical = float(np.median(self.ring))
        if len(self.ring) < MIN_RING:
            return
        self.threshold = max(budget_threshold(self.ring, self.target_exceedance()), self.p.min_threshold)

    def target_exceedance(self) -> float:
        """Fraction of windows allowed above threshold: max_per_day events x windows per event."""
        hop = self._hop_s if getattr(self, "_hop_s", None) else 0.25
        windows_per_day = 86400.0 / hop
        return min(self.p.max_per_day * self.p.cluster_windows / windows_per_day, 0.5)

    def set_hop(self, hop_s: float) -> None:
        if hop_s > 0:
            self._hop_s = hop_s

    # -- habituation --------------------------------------------------------------------------
    def _quarantine(self, x: np.ndarray, now: float) -> None:
        if now - self.last_anomaly_s > self.p.episode_gap_s:
            self.episode += 1
        self.last_anomaly_s = now
        keep = now - self.q_t <= self.p.quarantine_max_age_s
        self.q, self.q_t, self.q_ep = self.q[keep], self.q_t[keep], self.q_ep[keep]
        if len(self.q):
            near = np.sqrt(np.sum(np.square(self.q - x[None]), axis=1)) < self.threshold
            episodes = set(self.q_ep[near].tolist()) | {self.episode}
            if len(episodes) >= self.p.habituate_episodes:
                self._promote(np.vstack([self.q[near], x[None]]), np.append(self.q_t[near], now))
                self.q, self.q_t, self.q_ep = self.q[~near], self.q_t[~near], self.q_ep[~near]
                self.n_habituated += 1
                return
        self.q = np.vstack([self.q, x[None]])[-self.p.quarantine_size:]
        self.q_t = np.append(self.q_t, now)[-self.p.quarantine_size:]
        self.q_ep = np.append(self.q_ep, self.episode)[-self.p.quarantine_size:]

    def _promote(self, xs: np.ndarray, ts: np.ndarray) -> None:
        for x, t in zip(xs, ts):
            self._bank_put(x, float(t))


def _percentile_of_sorted(values: list[float], q: float) -> float:
    """`np.percentile(values, q)` (linear interpolation) of values already sorted."""
    position = q / 100.0 * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)
