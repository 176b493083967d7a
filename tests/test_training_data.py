"""Training windows: onsets out of silence, class-balanced negatives, mined hard negatives; confirmation."""

from __future__ import annotations

import numpy as np

from earwitness.training.calibrate import confirmed_scores
from earwitness.training.data import SCRATCH_LIKE, AudioCache, read_manifest
from earwitness.training.dataset import WINDOW, WindowSampler


def _sampler(shared_data, seed: int = 0) -> WindowSampler:
    items = [it for it in read_manifest(shared_data) if it.duration_s <= 30.0]
    return WindowSampler(items, AudioCache(shared_data, None), ("glass_break", "scratch"), seed)


def test_onset_windows_start_out_of_silence_or_a_quiet_floor(shared_data):
    sampler = _sampler(shared_data)
    quiet_starts = 0
    for _ in range(40):
        x = sampler._onset_sample(np.zeros((25, 2), np.float32))
        assert x.shape == (WINDOW,) and np.isfinite(x).all()
        head = x[: int(0.2 * WINDOW)]
        # The first 0.2 s hold nothing but the floor: digital silence or at most -50 dBFS of noise.
        rms_db = 10 * np.log10(np.mean(head.astype(np.float64) ** 2) + 1e-20)
        assert rms_db <= -49.0, rms_db
        quiet_starts += int(np.max(np.abs(x)) > 10 ** (-46 / 20))
    assert quiet_starts >= 30  # the sound itself is there, at -45...-1 dBFS peak


def test_real_scratches_stay_out_of_the_network_and_negatives_are_class_balanced(shared_data):
    sampler = _sampler(shared_data)
    assert not any(it.cls in SCRATCH_LIKE for it in sampler.negatives + sampler.background)
    assert sampler.positives["scratch"] == []
    picks = [sampler._negative().cls for _ in range(3000)]
    counts = np.array([picks.count(c) for c in sampler.negative_classes])
    # Drawn by class, not by clip: typing (100 clips) is not drawn far more often than coins (4).
    assert counts.max() <= 4 * max(1, counts.mean())


def test_mined_windows_are_cut_from_their_recording(shared_data):
    sampler = _sampler(shared_data)
    it = next(i for i in sampler.negatives if i.duration_s >= 3.0)
    sampler.mined = [(it, 8000)]
    x = sampler._mined()
    audio = sampler.cache.get(it.path)
    offsets = [s for s in range(max(0, 8000 - 1600), 8000 + 1601) if s + WINDOW <= len(audio)
               and np.allclose(audio[s : s + WINDOW], x)]
    assert offsets, "the mined window is a crop of its recording near the mined start"


def test_confirmation_needs_the_score_to_hold():
    s = np.array([0.1, 0.95, 0.2, 0.1, 0.9, 0.8, 0.7, 0.1])
    assert np.array_equal(confirmed_scores(s, 0, 0.7), s)
    c = confirmed_scores(s, 1, 0.7)
    assert c[1] < 0.5  # a one-window spike (a clink) is not confirmed
    assert c[4] >= 0.9 and c[5] >= 0.7  # a sound that holds is
