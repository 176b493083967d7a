"""Windows and rolling log-mel frames: each frame computed once, every window the same as on its own."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from earwitness.core.windows import Detection, Window, WindowFeatures
from earwitness.detectors.classifier import ClassifierDetector
from earwitness.detectors.frontend import LogMel, Windower, n_frames
from tests.audio import tone_bursts
from tests.test_frontend import PARITY_TOLERANCE


class CountingLogMel(LogMel):
    """The numpy frontend, counting the frames it computes."""

    def __init__(self) -> None:
        super().__init__()
        self.frames_computed = 0

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        out = super().__call__(audio)
        self.frames_computed += out.shape[-2]
        return out


def _chunks(audio: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Cut audio into chunks of the given sizes, cycling through them."""
    chunks, at, i = [], 0, 0
    while at < len(audio):
        chunks.append(audio[at : at + sizes[i % len(sizes)]])
        at += sizes[i % len(sizes)]
        i += 1
    return chunks


def _windows(windower: Windower, chunks: list[np.ndarray]) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """(start, audio, log-mel) of every window, copied as each is yielded (they are views)."""
    return [(w.start_s, w.audio.copy(), w.features.logmel.copy()) for chunk in chunks for w in windower.push(chunk)]


@pytest.mark.parametrize("sizes", [[4000], [800], [16000], [1, 159, 161, 3999, 4001, 12345, 7]], ids=["hop", "50ms", "1s", "ragged"])
def test_rolling_windows_equal_windows_computed_on_their_own(sizes: list[int]) -> None:
    audio = tone_bursts(7.3, [1.0, 3.1, 5.55], noise_dbfs=-40.0)
    frontend = CountingLogMel()
    windower = Windower(1.0, 0.25, frontend)
    assert windower.rolling
    windows = _windows(windower, _chunks(audio, sizes))
    assert [start for start, _, _ in windows] == [i * 0.25 for i in range(1 + (len(audio) - 16000) // 4000)]
    reference = LogMel()
    for start, window_audio, logmel in windows:
        first = int(round(start * 16000))
        assert np.array_equal(window_audio, audio[first : first + 16000])
        assert logmel.shape == (97, 64)
        assert np.max(np.abs(logmel - reference(window_audio))) <= 1e-5
    # Each frame of the stream once, not 97 per window.
    assert frontend.frames_computed == n_frames(len(audio)) < len(windows) * 97 / 3


def test_a_hop_that_is_not_a_whole_number_of_frames_computes_each_window() -> None:
    audio = tone_bursts(3.0, [1.0])
    windower = Windower(1.0, 0.255, LogMel())
    assert not windower.rolling
    windows = _windows(windower, _chunks(audio, [800]))
    assert len(windows) == 1 + (len(audio) - 16000) // 4080
    for start, window_audio, logmel in windows:
        first = int(round(start * 16000))
        assert np.array_equal(window_audio, audio[first : first + 16000])
        assert np.array_equal(logmel, LogMel()(window_audio))


def test_without_a_frontend_windows_carry_audio_only() -> None:
    windower = Windower(1.0, 0.25)
    windows = [w for chunk in _chunks(tone_bursts(2.0, [0.5]), [800]) for w in windower.push(chunk)]
    assert len(windows) == 5
    with pytest.raises(RuntimeError):
        windows[0].features.logmel  # noqa: B018


def _glass_break(shared_data: Path) -> np.ndarray:
    from earwitness.daemon.sources import read_audio_blocks

    with (shared_data / "manifest.csv").open() as handle:
        rows = sorted((row for row in csv.DictReader(handle) if row["class"] == "glass_break"), key=lambda r: r["path"])
    clip = np.concatenate(list(read_audio_blocks(shared_data / rows[0]["path"], block_s=1.0)))
    quiet = np.random.default_rng(0).normal(0, 1e-3, 3 * 16000).astype(np.float32)
    return np.concatenate([quiet, clip * (0.3 / np.abs(clip).max()), quiet]).astype(np.float32)


def test_classifier_scores_with_rolling_frames_equal_scores_from_the_torch_frontend(shared_data: Path) -> None:
    """Today's scores (before rolling frames): each window's log-mel computed on its own by the torch
    frontend the model was trained with. Rolling numpy frames give the same scores within the parity tolerance."""
    torch = pytest.importorskip("torch", reason="torch (the `train` extra) computes the reference features")
    from earwitness.training.torch_frontend import LogMelFrontend

    torch.set_num_threads(1)
    audio = _glass_break(shared_data)
    rolling, per_window = ClassifierDetector(), ClassifierDetector()
    torch_frontend = LogMelFrontend()
    windower = Windower(1.0, 0.25, rolling.frontend)
    ours, theirs = [], []
    for chunk in _chunks(audio, [4000]):
        for window in windower.push(chunk):
            ours.append(rolling.detect([window], [Detection()])[0].scores)
            alone = window.audio.copy()
            theirs.append(per_window.detect([Window(alone, window.start_s, WindowFeatures(alone, torch_frontend))],
                                            [Detection()])[0].scores)
    assert len(ours) > 20
    labels = sorted(ours[0])
    ours_m = np.array([[s[label] for label in labels] for s in ours])
    theirs_m = np.array([[s[label] for label in labels] for s in theirs])
    assert ours_m[:, labels.index("glass_break")].max() > rolling.thresholds["glass_break"]  # the clip is found
    assert np.max(np.abs(ours_m - theirs_m)) <= PARITY_TOLERANCE
