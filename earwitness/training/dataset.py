"""Training windows generated on the fly from the corpus, with strong (per-frame) targets.

Each window is 1 s of 16 kHz audio built from:
- a bed: a crop of a background recording, a negative clip (classes drawn evenly, so that a
  rare household sound weighs as much as speech), both, near-silence, or a mined window that
  an earlier round scored high (hard-negative mining);
- for positives, a clip of the label (or a synthesised scratch), reverberated at random,
  placed at a random shift and mixed into the bed at an SNR of -5...+25 dB;
- at random, a hard negative (dishes, metal, keys, typing, clock ticks...) on top;
- mic-like EQ, then a gain to -65...-5 dBFS RMS (+-30 dB).
A share of windows are onsets: a sound (negative or positive) that starts inside the window
out of digital silence or a -70...-50 dBFS floor, at a peak level of -45...-1 dBFS. A daemon
at night hears exactly this.
Targets: per label, one value per 40 ms output frame (the share of the frame where the
clean source is active, thresholded), from the clean source's energy envelope.
"""

from __future__ import annotations

import numpy as np

from earwitness import SAMPLE_RATE
from earwitness.training import augment as A
from earwitness.training.data import (
    HARD_NEGATIVE_CLASSES,
    SCRATCH_LIKE,
    VALIDATION_ONLY_CLASSES,
    AudioCache,
    Item,
    label_of,
)
from earwitness.training.synth import synth_scratch

WINDOW = SAMPLE_RATE  # 1 s
OUT_FRAME = 640  # samples per output frame (40 ms)
N_OUT = WINDOW // OUT_FRAME  # 25
ONSET_SHARE = 0.25
"""Share of windows where a sound starts out of silence or a quiet floor."""
MINED_SHARE = 0.15
"""Share of windows whose bed is a mined hard negative, once there are mined windows."""


class WindowSampler:
    def __init__(self, items: list[Item], cache: AudioCache, labels: tuple[str, ...], seed: int,
                 label_probs: dict[str, float] | None = None) -> None:
        self.cache = cache
        self.labels = labels
        self.rng = np.random.default_rng(seed)
        # Real scratches stay out of the network's training (see data.SCRATCH_LIKE).
        usable = [it for it in items if it.cls not in VALIDATION_ONLY_CLASSES + SCRATCH_LIKE
                  and it.kind in ("clips", "background")]
        self.background = [it for it in usable if it.kind == "background"]
        self.bg_weights = np.array([max(it.duration_s, 0.1) for it in self.background])
        self.bg_weights = self.bg_weights / self.bg_weights.sum() if len(self.bg_weights) else self.bg_weights
        self.negatives = [it for it in usable if it.kind == "clips" and label_of(it.cls) not in labels]
        self.negative_classes: dict[str, list[Item]] = {}
        for it in self.negatives:
            self.negative_classes.setdefault(it.cls, []).append(it)
        self._negative_class_names = sorted(self.negative_classes)
        self.hard = [it for it in self.negatives if it.cls in HARD_NEGATIVE_CLASSES]
        self.positives = {
            lb: [it for it in usable if it.kind == "clips" and label_of(it.cls) == lb] for lb in labels
        }
        self.mined: list[tuple[Item, int]] = []
        """Hard negatives found by an earlier round: (recording, first sample of the window)."""
        probs = label_probs or {"glass_break": 0.25, "scratch": 0.10}
        self.label_probs = {lb: probs.get(lb, 0.05) for lb in labels if lb == "scratch" or self.positives[lb]}
        self._masks: dict[str, np.ndarray] = {}

    # -- sources ---------------------------------------------------------------------------
    def _audio(self, it: Item) -> np.ndarray:
        return self.cache.get(it.path)

    def _mask(self, it: Item) -> np.ndarray:
        if it.path not in self._masks:
            self._masks[it.path] = A.activity(self._audio(it))
        return self._masks[it.path]

    def _pick(self, pool: list[Item]) -> Item:
        return pool[int(self.rng.integers(0, len(pool)))]

    def _negative(self) -> Item:
        """A negative clip: a class drawn evenly, then one of its clips."""
        cls = self._negative_class_names[int(self.rng.integers(0, len(self._negative_class_names)))]
        return self._pick(self.negative_classes[cls])

    def _mined(self) -> np.ndarray:
        it, start = self.mined[int(self.rng.integers(0, len(self.mined)))]
        audio = self._audio(it)
        start = int(np.clip(start + self.rng.integers(-1600, 1601), 0, max(0, len(audio) - WINDOW)))
        out = audio[start : start + WINDOW]
        return np.pad(out, (0, WINDOW - len(out))).astype(np.float32)

    def _floor(self) -> np.ndarray:
        """Digital silence or a -70...-50 dBFS noise floor (white, or brown-ish like a quiet room)."""
        rng = self.rng
        if rng.random() < 0.4:
            return np.zeros(WINDOW, np.float32)
        noise = rng.standard_normal(WINDOW)
        if rng.random() < 0.5:
            noise = np.cumsum(noise)
            noise -= np.linspace(noise[0], noise[-1], WINDOW)
        noise *= 10 ** (rng.uniform(-70, -50) / 20) / (np.sqrt(np.mean(noise**2)) + 1e-12)
        return noise.astype(np.float32)

    def _onset(self, sig: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shift a placed sound so that it starts inside the window, out of nothing."""
        act = np.flatnonzero(mask)
        first = int(act[0]) if len(act) else 0
        start = int(self.rng.integers(int(0.2 * WINDOW), int(0.95 * WINDOW)))
        shift = start - first
        out, m = np.zeros_like(sig), np.zeros_like(mask)
        if shift >= 0:
            out[shift:], m[shift:] = sig[: WINDOW - shift], mask[: WINDOW - shift]
        else:
            out[:shift], m[:shift] = sig[-shift:], mask[-shift:]
        out[:start] = 0.0
        m[:start] = False
        return out, m

    def _bed(self) -> np.ndarray:
        r = self.rng.random()
        rng = self.rng
        if self.mined and rng.random() < MINED_SHARE:
            return self._mined()
        if r < 0.05 or (not self.background and not self.negatives):
            level = 10 ** (rng.uniform(-100, -60) / 20)
            noise = rng.standard_normal(WINDOW).astype(np.float32) * level
            if rng.random() < 0.5:
                noise = np.cumsum(noise) * 0.05  # brown-ish
            return noise.astype(np.float32)
        if r < 0.45 and self.background:
            it = self.background[int(rng.choice(len(self.background), p=self.bg_weights))]
            return A.random_crop(self._audio(it), WINDOW, rng)
        it = self._negative() if self.negatives else self.background[0]
        x = self._audio(it)
        if r < 0.85 or not self.background:
            return A.random_crop(x, WINDOW, rng) if rng.random() < 0.5 else A.place(x, self._mask(it), WINDOW, rng)[0]
        bed = A.random_crop(self._audio(self.background[int(rng.choice(len(self.background), p=self.bg_weights))]),
                            WINDOW, rng)
        neg, m = A.place(x, self._mask(it), WINDOW, rng)
        return A.mix_at_snr(neg, A.active_rms(neg, m), bed, rng.uniform(-5, 20)).astype(np.float32)

    def _positive(self, label: str) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        if label == "scratch":
            clip, _ = synth_scratch(rng)
            mask = A.activity(clip)
        else:
            it = self._pick(self.positives[label])
            clip, mask = self._audio(it), self._mask(it)
        if rng.random() < 0.35:
            clip = A.reverb(clip, rng)
        return A.place(clip, mask, WINDOW, rng)

    # -- one example -------------------------------------------------------------------------
    def _onset_sample(self, targets: np.ndarray) -> np.ndarray:
        """A sound, positive or negative, starting out of silence or a quiet floor."""
        rng = self.rng
        labels = list(self.label_probs)
        p = np.array([self.label_probs[lb] for lb in labels])
        r = rng.random()
        if r < p.sum():
            label = labels[int(np.searchsorted(np.cumsum(p), r, side="right"))]
            sig, mask = self._onset(*self._positive(label))
            frac = mask.reshape(N_OUT, OUT_FRAME).mean(axis=1)
            targets[:, self.labels.index(label)] = (frac > 0.25).astype(np.float32)
        else:
            it = self._pick(self.hard) if self.hard and rng.random() < 0.7 else self._negative()
            x = self._audio(it)
            if rng.random() < 0.2:
                x = A.reverb(x, rng)
            sig, mask = self._onset(*A.place(x, self._mask(it), WINDOW, rng))
        peak = float(np.max(np.abs(sig))) or 1.0
        sig = sig * (10 ** (rng.uniform(-45, -1) / 20) / peak)
        return (sig + self._floor()).astype(np.float32)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """(audio [WINDOW] float32, targets [N_OUT, n_labels] float32)."""
        rng = self.rng
        targets = np.zeros((N_OUT, len(self.labels)), dtype=np.float32)
        if rng.random() < ONSET_SHARE:
            return self._onset_sample(targets), targets
        bed = self._bed()
        labels = list(self.label_probs)
        p = np.array([self.label_probs[lb] for lb in labels])
        r = rng.random()
        mix = bed
        if r < p.sum():
            label = labels[int(np.searchsorted(np.cumsum(p), r, side="right"))]
            sig, mask = self._positive(label)
            if mask.sum() >= 0.03 * SAMPLE_RATE or mask.sum() >= 0.5 * max(1, mask.size):
                frac = mask.reshape(N_OUT, OUT_FRAME).mean(axis=1)
                targets[:, self.labels.index(label)] = (frac > 0.25).astype(np.float32)
            mix = A.mix_at_snr(sig, A.active_rms(sig, mask), bed, rng.uniform(-5, 25))
        if self.hard and rng.random() < 0.3:
            it = self._pick(self.hard)
            h, hm = A.place(self._audio(it), self._mask(it), WINDOW, rng)
            if rng.random() < 0.2:
                h = A.reverb(h, rng)
            mix = A.mix_at_snr(h, A.active_rms(h, hm), mix, rng.uniform(-10, 10))
        if rng.random() < 0.5:
            mix = A.mic_eq(mix, rng)
        mix = A.set_level(mix, rng.uniform(-65, -5))
        return mix.astype(np.float32), targets

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(self.sample() for _ in range(n)))
        return np.stack(xs), np.stack(ys)
