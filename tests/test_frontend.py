"""The log-mel frontend: shape, level behaviour, and the run-time (numpy) = training (torch) parity."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from earwitness.detectors.frontend import N_MELS, LogMel, n_frames

PARITY_TOLERANCE = 1e-4
"""Max absolute difference of log-mel (natural log) between the numpy and the torch frontend."""


def _noise_burst(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(16000).astype(np.float32) * 0.01
    x[6000:9000] += np.sin(2 * np.pi * 2500 * np.arange(3000) / 16000).astype(np.float32) * 0.3
    return x


def _tone(freq_hz: float, amplitude: float, n: int = 16000) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq_hz * np.arange(n) / 16000)).astype(np.float32)


def test_shape_and_dtype():
    fe = LogMel()
    mel = fe(_noise_burst())
    assert mel.shape == (n_frames(16000), N_MELS) == (97, 64)
    assert mel.dtype == np.float32
    batch = fe(np.stack([_noise_burst(0), _noise_burst(1)]))
    assert batch.shape == (2, 97, 64)
    assert np.array_equal(batch[0], mel)
    assert fe(np.zeros(511, np.float32)).shape == (0, 64) == (n_frames(511), N_MELS)


def test_frames_depend_only_on_their_own_samples():
    """What rolling frames rely on: the frames of a stretch of audio are those of the whole stream."""
    fe = LogMel()
    x = np.concatenate([_noise_burst(0), _noise_burst(1)])
    whole = fe(x)
    assert np.array_equal(fe(x[160 * 30 : 160 * 30 + 16000]), whole[30 : 30 + 97])


def test_gain_shifts_log_mel_by_a_constant():
    """A gain of g dB adds g/10*ln(10) to every bin (above the floor): level lives in one offset."""
    fe = LogMel()
    x = _noise_burst()
    for db in (-30.0, 30.0):
        g = 10 ** (db / 20)
        diff = fe(np.clip(x * g, -1, 1) if db < 0 else x * g) - fe(x)
        assert np.allclose(diff, db / 10 * np.log(10), atol=1e-3)


def _parity_signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "white noise": rng.standard_normal(16000).astype(np.float32) * 0.1,
        "quiet noise (-80 dBFS)": rng.standard_normal(16000).astype(np.float32) * 1e-4,
        "full-scale noise": np.clip(rng.standard_normal(16000), -1, 1).astype(np.float32),
        "1 kHz tone": _tone(1000, 0.5),
        "333.3 Hz tone": _tone(333.3, 0.9),
        "7 kHz tone": _tone(7000, 0.1),
        "tone bursts in noise": _noise_burst(),
        "silence": np.zeros(16000, np.float32),
        "1.37 s of noise (odd length)": rng.standard_normal(21920 + 77).astype(np.float32) * 0.05,
    }


def _assert_parity(numpy_fe, torch_fe, audio: np.ndarray, what: str) -> None:
    ours, theirs = numpy_fe(audio), torch_fe(audio)
    assert ours.shape == theirs.shape, what
    diff = float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
    assert diff <= PARITY_TOLERANCE, f"{what}: max |numpy - torch| = {diff:.2e}"


def test_numpy_frontend_equals_the_training_frontend_on_synthetic_audio():
    torch = pytest.importorskip("torch", reason="torch (the `train` extra) is needed to compare with training")
    from earwitness.training.torch_frontend import LogMelFrontend

    torch.set_num_threads(1)
    numpy_fe, torch_fe = LogMel(), LogMelFrontend()
    for what, audio in _parity_signals().items():
        _assert_parity(numpy_fe, torch_fe, audio, what)
    batch = np.stack([_noise_burst(0), _tone(1000, 0.5)])
    assert np.max(np.abs(numpy_fe(batch) - torch_fe(torch.from_numpy(batch)).numpy())) <= PARITY_TOLERANCE


def test_numpy_frontend_equals_the_training_frontend_on_real_clips(shared_data: Path):
    """A real recording of every class in the corpus (its first 20 s), at 16 kHz as the pipeline reads it."""
    torch = pytest.importorskip("torch", reason="torch (the `train` extra) is needed to compare with training")
    from earwitness.daemon.sources import read_audio_blocks
    from earwitness.training.torch_frontend import LogMelFrontend

    torch.set_num_threads(1)
    numpy_fe, torch_fe = LogMel(), LogMelFrontend()
    with (shared_data / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    one_per_class = {row["class"]: row for row in sorted(rows, key=lambda r: r["path"])}
    assert len(one_per_class) >= 20
    for cls, row in sorted(one_per_class.items()):
        audio = next(read_audio_blocks(shared_data / row["path"], block_s=20.0))
        _assert_parity(numpy_fe, torch_fe, audio, f"{cls}: {row['path']}")


def test_model_is_level_invariant_over_60_db():
    """EarNet normalises each window, so +-30 dB of gain leaves its outputs unchanged."""
    torch = pytest.importorskip("torch", reason="torch (the `train` extra) builds the network")
    from earwitness.detectors.cnn import EarNet

    torch.manual_seed(0)
    model = EarNet(3).eval()
    fe = LogMel()
    x = _noise_burst()
    with torch.inference_mode():
        ref = model(torch.from_numpy(fe(x))[None])[0]
        for db in (-30.0, 30.0):
            out = model(torch.from_numpy(fe(x * 10 ** (db / 20)))[None])[0]
            assert torch.allclose(out, ref, atol=1e-3)
