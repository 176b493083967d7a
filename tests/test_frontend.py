"""The log-mel frontend: shape, numpy/torch agreement, level behaviour."""

from __future__ import annotations

import numpy as np
import torch

from earwitness.detectors.cnn import EarNet
from earwitness.frontend import N_MELS, LogMelFrontend, n_frames


def _noise_burst(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(16000).astype(np.float32) * 0.01
    x[6000:9000] += np.sin(2 * np.pi * 2500 * np.arange(3000) / 16000).astype(np.float32) * 0.3
    return x


def test_shape_and_dtype():
    fe = LogMelFrontend()
    mel = fe(_noise_burst())
    assert mel.shape == (n_frames(16000), N_MELS) == (97, 64)
    assert mel.dtype == np.float32
    batch = fe(torch.from_numpy(np.stack([_noise_burst(0), _noise_burst(1)])))
    assert tuple(batch.shape) == (2, 97, 64)
    assert np.allclose(batch[0].numpy(), mel, atol=1e-5)


def test_gain_shifts_log_mel_by_a_constant():
    """A gain of g dB adds g/10*ln(10) to every bin (above the floor): level lives in one offset."""
    fe = LogMelFrontend()
    x = _noise_burst()
    for db in (-30.0, 30.0):
        g = 10 ** (db / 20)
        diff = fe(np.clip(x * g, -1, 1) if db < 0 else x * g) - fe(x)
        assert np.allclose(diff, db / 10 * np.log(10), atol=1e-3)


def test_model_is_level_invariant_over_60_db():
    """EarNet normalises each window, so +-30 dB of gain leaves its outputs unchanged."""
    torch.manual_seed(0)
    model = EarNet(3).eval()
    fe = LogMelFrontend()
    x = _noise_burst()
    with torch.inference_mode():
        ref = model(torch.from_numpy(fe(x))[None])[0]
        for db in (-30.0, 30.0):
            out = model(torch.from_numpy(fe(x * 10 ** (db / 20)))[None])[0]
            assert torch.allclose(out, ref, atol=1e-3)
