"""YAMNet (TFLite, AudioSet 521 classes) as a baseline detector, through ai-edge-litert.

An evaluation/training extra only: the daemon never imports this module.
Label mapping (issue 3): glass_break = max(Glass, Chink/clink, Shatter, Smash/crash, Breaking);
scratch = max(Scratch, Scrape, Rub); dog_bark = max(Dog, Bark); car_horn = Vehicle horn;
gunshot = Gunshot/gunfire.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from earwitness.core.windows import Detection, Frontend, Window

YAMNET_SAMPLES = 15600
LABEL_CLASSES = {
    "glass_break": ("Glass", "Chink, clink", "Shatter", "Smash, crash", "Breaking"),
    "scratch": ("Scratch", "Scrape", "Rub"),
    "dog_bark": ("Dog", "Bark"),
    "car_horn": ("Vehicle horn, car horn, honking",),
    "gunshot": ("Gunshot, gunfire",),
}


MODEL_FILE = "yamnet.tflite"


def default_model_dir(data_dir: str | Path | None = None) -> Path:
    """../shared/models/yamnet next to a data dir (../shared/data), else relative to the cwd."""
    if data_dir is not None:
        cand = Path(data_dir).resolve().parent / "models" / "yamnet"
        if cand.exists():
            return cand
    return Path("../shared/models/yamnet")


def model_dir_or_default(model_dir: str | Path | None, data_dir: str | Path | None) -> Path:
    """`model_dir` when given, else the default next to `data_dir`: where train's teacher is read from."""
    return Path(model_dir) if model_dir else default_model_dir(data_dir)


class YamnetDetector:
    """Detector protocol around YAMNet: one 0.975 s patch (the window's newest samples) per window."""

    name = "yamnet"
    version = "tflite"
    gated = True

    def __init__(self, model_dir: str | Path, labels: tuple[str, ...] | None = None,
                 thresholds: dict[str, float] | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        model_dir = Path(model_dir)
        self.interpreter = Interpreter(model_path=str(model_dir / MODEL_FILE), num_threads=1)
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        with open(model_dir / "yamnet_class_map.csv", newline="") as fh:
            names = [r["display_name"] for r in csv.DictReader(fh)]
        self.labels = tuple(labels or LABEL_CLASSES)
        self._idx = {lb: [names.index(c) for c in LABEL_CLASSES[lb]] for lb in self.labels}
        self.thresholds = dict.fromkeys(self.labels, 0.5)
        if thresholds:
            self.thresholds.update(thresholds)
        self.frontend: Frontend | None = None
        self.event_settings: dict[str, dict[str, float]] = {}

    def class_scores(self, audio: np.ndarray) -> np.ndarray:
        x = audio[-YAMNET_SAMPLES:].astype(np.float32)
        if len(x) < YAMNET_SAMPLES:
            x = np.pad(x, (YAMNET_SAMPLES - len(x), 0))
        shape = tuple(self._input["shape"])
        self.interpreter.set_tensor(self._input["index"], x.reshape(shape))
        self.interpreter.invoke()
        return np.asarray(self.interpreter.get_tensor(self._output["index"])).reshape(-1, 521).max(axis=0)

    def detect(self, windows: Sequence[Window], found: Sequence[Detection]) -> list[Detection]:
        return [Detection(self._scores(window)) for window in windows]

    def close(self) -> None:
        """The interpreter holds nothing to save."""

    def _scores(self, window: Window) -> dict[str, float]:
        s = self.class_scores(window.audio)
        return {lb: float(s[idx].max()) for lb, idx in self._idx.items()}
