"""A pool of augmented training windows with their targets and the teacher's scores, made once.

Making a window (crops, reverb, EQ, mixing) and scoring it with YAMNet costs more than a
training step of the student, and the 2-core machine cannot do both at full rate. So each
round of training draws its batches from a pool generated up front by worker processes,
each with its own sampler seed and its own YAMNet interpreter. Audio is kept as int16.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from earwitness.training.data import AudioCache, Item
from earwitness.training.dataset import WindowSampler
from earwitness.training.yamnet import MODEL_FILE, YAMNET_SAMPLES

CHUNK = 256
_CACHES: dict[tuple[str, str | None], AudioCache] = {}
"""One decoded-audio cache per process; the parent warms it before the workers fork."""


def shared_cache(data_dir: str | Path, cache_dir: str | Path | None) -> AudioCache:
    key = (str(data_dir), str(cache_dir) if cache_dir else None)
    if key not in _CACHES:
        _CACHES[key] = AudioCache(*key)
    return _CACHES[key]


@dataclass
class Pool:
    audio: np.ndarray  # [N, samples] int16
    targets: np.ndarray  # [N, output frames, labels] uint8
    teacher: np.ndarray  # [N, 521] float16 (YAMNet's scores of the window's newest 0.975 s)

    def __len__(self) -> int:
        return len(self.audio)

    def concat(self, other: Pool) -> Pool:
        return Pool(np.concatenate([self.audio, other.audio]), np.concatenate([self.targets, other.targets]),
                    np.concatenate([self.teacher, other.teacher]))


class Teacher:
    """YAMNet (TFLite) scores of 1 s windows: its 521 AudioSet class probabilities."""

    def __init__(self, model_dir: str | Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(Path(model_dir) / MODEL_FILE), num_threads=1)
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]["index"]
        self._output = self.interpreter.get_output_details()[0]["index"]

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        out = np.empty((len(windows), 521), np.float32)
        for i, w in enumerate(windows):
            self.interpreter.set_tensor(self._input, np.ascontiguousarray(w[-YAMNET_SAMPLES:], np.float32))
            self.interpreter.invoke()
            out[i] = self.interpreter.get_tensor(self._output).reshape(-1, 521).max(axis=0)
        return out


@dataclass(frozen=True)
class _Job:
    items: list[Item]
    data_dir: str
    cache_dir: str | None
    labels: tuple[str, ...]
    teacher_dir: str
    mined: list[tuple[Item, int]]
    seed: int
    n: int


def _make(job: _Job) -> Pool:
    sampler = WindowSampler(job.items, shared_cache(job.data_dir, job.cache_dir), job.labels, job.seed)
    sampler.mined = list(job.mined)
    teacher = Teacher(job.teacher_dir)
    x, y = sampler.batch(job.n)
    return Pool(np.round(np.clip(x, -1, 1) * 32767).astype(np.int16), (y > 0.5).astype(np.uint8),
                teacher(x).astype(np.float16))


def build_pool(items: list[Item], data_dir: str | Path, cache_dir: str | Path | None, labels: tuple[str, ...],
               teacher_dir: str | Path, n: int, seed: int, workers: int = 2,
               mined: list[tuple[Item, int]] | None = None, progress: bool = True) -> Pool:
    """`n` windows, generated in chunks by `workers` processes; seeded and reproducible per chunk."""
    from tqdm import tqdm

    cache = shared_cache(data_dir, cache_dir)
    for it in items:
        cache.get(it.path)
    jobs = [_Job(items, str(data_dir), str(cache_dir) if cache_dir else None, labels, str(teacher_dir),
                 list(mined or ()), seed * 100_003 + i, min(CHUNK, n - i * CHUNK))
            for i in range((n + CHUNK - 1) // CHUNK)]
    bar = tqdm(total=n, desc="making windows", disable=not progress, mininterval=2.0)
    parts: list[Pool] = []
    if workers <= 1:
        for job in jobs:
            parts.append(_make(job))
            bar.update(job.n)
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            for part in pool.imap(_make, jobs):
                parts.append(part)
                bar.update(len(part))
    bar.close()
    return Pool(np.concatenate([p.audio for p in parts]), np.concatenate([p.targets for p in parts]),
                np.concatenate([p.teacher for p in parts]))

