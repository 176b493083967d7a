"""Calibrate false-alarm feedback on the corpus: per label, the similarity at which an example covers a window,
and the score from which no suppression applies ("sure").

Every clip of the corpus is scored as the daemon scores it (1 s windows every 0.25 s, silence around it),
keeping each window's score and tail embedding (what the daemon matches). Per label:

- `sure` is the model's own extrapolated no-false-alarm threshold (`calibration.<label>.threshold_extrapolated`,
  from the background corpus): a window scoring there is never suppressed.
- A negative a household might mark is any negative clip (train and validation alike) that reaches
  `NEGATIVE_FLOOR`; its example is its windows at or above that floor, as the daemon keeps an event's windows.
- A validation positive that fires below `sure` is hidden by an example when every one of its windows that
  could start or hold an event (threshold <= score < sure) is within the similarity of one of the example's
  windows: that is when the daemon keeps the whole event quiet.
- `similarity` is the highest such similarity over every (negative, validation positive) pair, plus
  `MARGIN`: so suppressing any one negative hides no validation positive.

Run: `python -m earwitness.training.feedback_calibration [--data ../shared/data] [--model PATH] [--write]`;
`--write` stores the figures in the model's JSON (`feedback`), where the daemon reads them.
Needs only the runtime dependencies.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from earwitness import SAMPLE_RATE
from earwitness.detectors.classifier import ClassifierDetector, load_metadata
from earwitness.detectors.frontend import Windower
from earwitness.detectors.suppression import unit_rows
from earwitness.training.data import Item, label_of, load_audio, read_manifest

NEGATIVE_FLOOR = 0.5
MARGIN = 0.01
COMMAND = "python -m earwitness.training.feedback_calibration --write"


@dataclass
class ClipWindows:
    item: Item
    validation: bool
    scores: dict[str, np.ndarray]
    """label -> score per window."""
    embeddings: np.ndarray
    """Unit tail embeddings, one row per window."""


def score_clip(detector: ClassifierDetector, audio: np.ndarray, length_s: float = 1.0,
               hop_s: float = 0.25) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Scores per label and unit tail embeddings of a clip's windows, with silence around it as in `earwitness eval`."""
    lead = np.zeros(round((length_s - hop_s) * SAMPLE_RATE), np.float32)
    tail = np.zeros(round(length_s * SAMPLE_RATE), np.float32)
    windower = Windower(length_s, hop_s, detector.frontend)
    windows = list(windower.push(np.concatenate([lead, audio.astype(np.float32), tail])))  # one push: views stay valid
    found = detector.detect(windows)
    embeddings = unit_rows(np.stack([np.asarray(d.tail_embedding) for d in found]))
    return {label: np.array([d.scores[label] for d in found], np.float32) for label in detector.labels}, embeddings


def score_corpus(data: Path, detector: ClassifierDetector, train_groups: set[str]) -> list[ClipWindows]:
    clips = []
    for item in read_manifest(data):
        if item.kind != "clips":
            continue
        scores, embeddings = score_clip(detector, load_audio(data / item.path))
        clips.append(ClipWindows(item, item.group_id not in train_groups, scores, embeddings))
    return clips


def hiding_similarity(example: np.ndarray, windows: np.ndarray) -> float:
    """The similarity from which `example` (unit rows) covers every one of `windows` (unit rows)."""
    return float((windows @ example.T).max(axis=1).min())


def calibrate_label(clips: list[ClipWindows], label: str, threshold: float, sure: float) -> dict:
    negatives = [c.embeddings[c.scores[label] >= NEGATIVE_FLOOR] for c in clips
                 if label_of(c.item.cls) != label and c.scores[label].max() >= NEGATIVE_FLOOR]
    protected = [c.embeddings[(c.scores[label] >= threshold) & (c.scores[label] < sure)] for c in clips
                 if label_of(c.item.cls) == label and c.validation and threshold <= c.scores[label].max() < sure]
    closest = max((hiding_similarity(n, p) for n in negatives for p in protected), default=0.0)
    return {"similarity": round(min(0.999, closest + MARGIN), 4), "sure": sure, "closest": round(closest, 4),
            "negatives": len(negatives), "protected_positives": len(protected)}


def calibrate(clips: list[ClipWindows], meta: dict, thresholds: dict[str, float]) -> dict:
    """The `feedback` figures of the labels that have validation positives and a sure score above their threshold."""
    labels = {}
    for label, threshold in thresholds.items():
        sure = float(meta.get("calibration", {}).get(label, {}).get("threshold_extrapolated", 0.0))
        has_positives = any(label_of(c.item.cls) == label and c.validation for c in clips)
        if sure > threshold and has_positives:
            labels[label] = calibrate_label(clips, label, threshold, sure)
    return {"embedding": "tail", "negative_floor": NEGATIVE_FLOOR, "margin": MARGIN, "command": COMMAND, "labels": labels}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m earwitness.training.feedback_calibration", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--model", type=Path, default=None, help="model JSON (default: the shipped model)")
    parser.add_argument("--write", action="store_true", help="store the figures in the model's JSON (`feedback`)")
    args = parser.parse_args(argv)
    meta_path, meta = load_metadata(args.model)
    detector = ClassifierDetector(meta_path)
    clips = score_corpus(args.data, detector, set(meta.get("train_groups", [])))
    figures = calibrate(clips, meta, detector.thresholds)
    print(json.dumps(figures, indent=2))
    if args.write:
        meta["feedback"] = figures
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
        print(f"written to {meta_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
