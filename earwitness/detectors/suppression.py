"""Feedback suppression: "that was a false alarm" examples that keep alike sounds from raising an event.

An example is the classifier's tail embeddings (the mean embedding of the frames that scored) of the windows
of one event, kept for the source and label it was raised at. A window at that source whose tail embedding
has a cosine similarity of at least the label's `similarity` with a window of a false-alarm example does not
start that label's event, and keeps it quiet while every later window of the sound matches too, unless its
score is at or above the label's `sure` score, or it is as close to a `confirmed` example: a positive that
no suppression may cover. Both figures are calibrated on the training data and stored in the model's JSON
(`feedback`, written by `python -m earwitness.training.feedback_calibration --write`): a label without them
cannot take false-alarm feedback, since an uncalibrated threshold could deafen it.

The examples live in `<state_dir>/feedback.json`, at most `MAX_EXAMPLES`, the oldest evicted first.
Everything here runs on the daemon's event loop (the pipelines and the control queue), or in a CLI
process while the daemon is stopped: no locks.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog

from earwitness.core.feedback import FeedbackError, Verdict

log = structlog.get_logger(__name__)

STORE_NAME = "feedback.json"
MAX_EXAMPLES = 200
"""False alarms and confirmations together; a household rarely gives more than a few dozen."""


@dataclass(frozen=True)
class LabelCalibration:
    similarity: float
    """Cosine similarity from which a false-alarm example covers a window."""
    sure: float
    """Score from which no suppression applies."""


@dataclass(frozen=True)
class FeedbackCalibration:
    """The model's figures for feedback, per label; a label without them is never suppressed."""

    labels: dict[str, LabelCalibration]

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> FeedbackCalibration | None:
        figures = meta.get("feedback")
        if not isinstance(figures, Mapping) or not isinstance(figures.get("labels"), Mapping):
            return None
        return cls({str(label): LabelCalibration(float(f["similarity"]), float(f["sure"]))
                    for label, f in figures["labels"].items()})


@dataclass(frozen=True)
class Example:
    """One piece of feedback: the embedding of an event's peak window, and where and when it was given."""

    id: str
    verdict: Verdict
    source: str
    label: str
    event_id: str
    created_at: str
    embeddings: tuple[tuple[float, ...], ...]
    """One per window of the event."""
    top_labels: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """What `feedback list` shows: everything but the embeddings."""
        return {**{k: v for k, v in asdict(self).items() if k != "embeddings"}, "windows": len(self.embeddings)}


def new_example(verdict: Verdict, source: str, label: str, event_id: str, embeddings: Sequence[np.ndarray],
                top_labels: Sequence[dict[str, Any]] = ()) -> Example:
    return Example(
        id=uuid.uuid4().hex[:12], verdict=verdict, source=source, label=label, event_id=event_id,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        embeddings=tuple(tuple(round(float(x), 5) for x in np.asarray(e, np.float32).ravel()) for e in embeddings),
        top_labels=list(top_labels),
    )


class SuppressionStore:
    """The examples, persisted after every change (written whole, then renamed over the old file)."""

    def __init__(self, path: Path | None, max_examples: int = MAX_EXAMPLES) -> None:
        self.path = path
        """None: keep the examples in memory only."""
        self.max_examples = max_examples
        self._examples: list[Example] = []
        self.revision = 0
        """Increases with every change: matchers rebuild their matrices when it moved."""
        self.load_error: str | None = None

    @classmethod
    def in_state_dir(cls, state_dir: Path | None) -> SuppressionStore:
        store = cls(None if state_dir is None else state_dir / STORE_NAME)
        store.load()
        return store

    def load(self) -> None:
        """Read the file; a damaged one is set aside (`.bad`) and logged, and the device starts without examples."""
        if self.path is None or not self.path.exists():
            return
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            self._examples = [Example(**{**item, "embeddings": tuple(tuple(e) for e in item["embeddings"])})
                              for item in document["examples"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            self.load_error = f"{type(error).__name__}: {error}"
            log.error("feedback examples cannot be read; starting without them", path=str(self.path),
                      error=self.load_error)
            with contextlib.suppress(OSError):
                os.replace(self.path, self.path.with_suffix(".bad"))
            self._examples = []
        self.revision += 1

    def examples(self, source: str | None = None, label: str | None = None) -> list[Example]:
        return [e for e in self._examples if (source is None or e.source == source) and (label is None or e.label == label)]

    def add(self, example: Example) -> list[Example]:
        """Store an example; returns those evicted to stay within `max_examples` (the oldest)."""
        self._examples.append(example)
        evicted = self._examples[: max(0, len(self._examples) - self.max_examples)]
        del self._examples[: len(evicted)]
        self._changed()
        return evicted

    def forget(self, example_id: str) -> Example:
        for index, example in enumerate(self._examples):
            if example.id == example_id:
                del self._examples[index]
                self._changed()
                return example
        raise FeedbackError(f"no feedback example {example_id!r} (see `earwitness feedback list`)")

    def clear(self) -> int:
        count = len(self._examples)
        self._examples = []
        self._changed()
        return count

    def _changed(self) -> None:
        self.revision += 1
        if self.path is None:
            return
        document = {"version": 1, "examples": [asdict(e) for e in self._examples]}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            with temporary.open("w", encoding="utf-8") as handle:
                json.dump(document, handle, separators=(",", ":"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as error:  # the examples still apply until the daemon stops
            log.error("feedback examples cannot be saved; they are kept in memory", path=str(self.path), error=str(error))


@dataclass(frozen=True)
class Decision:
    """Whether a window that would start an event is kept quiet, and why (it goes on the event as `feedback`)."""

    suppressed_by: str | None
    similarity: float
    reason: Literal["like a false alarm", "sure score", "like a confirmed event", "unlike the false alarms"]

    def feedback(self) -> dict[str, Any]:
        return {"suppressed": self.suppressed_by is not None, "reason": self.reason,
                "similarity": round(self.similarity, 4)}


def unit_rows(vectors: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Rows scaled to unit length: their dot products are cosine similarities."""
    matrix = np.asarray(vectors, np.float32)
    matrix = matrix.reshape(len(matrix), -1)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


class Suppressor:
    """Matches one source's windows against the store's examples for that source."""

    def __init__(self, store: SuppressionStore, source: str, calibration: FeedbackCalibration) -> None:
        self._store = store
        self._source = source
        self._calibration = calibration
        self._revision = -1
        self._matrices: dict[str, tuple[list[str], np.ndarray, np.ndarray]] = {}
        """label -> (the false-alarm example of each row, their windows' unit embeddings, confirmed ones')."""

    def decide(self, label: str, score: float, embedding: np.ndarray | None) -> Decision | None:
        """None when this label has no false alarms at this source, is not calibrated, or the window has no embedding."""
        if self._revision != self._store.revision:
            self._rebuild()
        matrices = self._matrices.get(label)
        figures = self._calibration.labels.get(label)
        if matrices is None or figures is None or embedding is None:
            return None
        owners, false_alarms, confirmed = matrices
        vector = unit_rows(np.asarray(embedding, np.float32)[None, :])[0]
        similarities = false_alarms @ vector
        best = int(np.argmax(similarities))
        similarity = float(similarities[best])
        if similarity < figures.similarity:
            return Decision(None, similarity, "unlike the false alarms")
        if score >= figures.sure:
            return Decision(None, similarity, "sure score")
        if len(confirmed) and float(np.max(confirmed @ vector)) >= figures.similarity:
            return Decision(None, similarity, "like a confirmed event")
        return Decision(owners[best], similarity, "like a false alarm")

    def _rebuild(self) -> None:
        self._revision = self._store.revision
        examples = self._store.examples(source=self._source)
        self._matrices = {}
        for label in {e.label for e in examples if e.verdict == "false_alarm"}:
            false_alarms = [e for e in examples if e.label == label and e.verdict == "false_alarm"]
            confirmed = [row for e in examples if e.label == label and e.verdict == "confirmed" for row in e.embeddings]
            rows = [row for e in false_alarms for row in e.embeddings]
            if not rows:
                continue
            self._matrices[label] = (
                [e.id for e in false_alarms for _ in e.embeddings],
                unit_rows(rows),
                unit_rows(confirmed) if confirmed else np.zeros((0, len(rows[0])), np.float32),
            )
