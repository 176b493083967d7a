"""The `classifier` detector: the shipped EarNet (glass_break, scratch and safety sounds).

Inference runs in ONNX Runtime (one thread, no spinning); the session is loaded once per model
file and shared by every source. Features come from the numpy log-mel frontend: no torch.
Each window is scored by the max over the model's output frames in the window's newest
`score_span_s` seconds (set it to the windower's hop), so consecutive windows score
disjoint stretches of time: events are located to within a hop and do not merge.
Its `Detection` also carries the window's penultimate embedding (mean over frames, float32), the mean
over the frames that were scored (`tail_embedding`: what made the score, which false-alarm feedback
matches) and the probabilities of all the model's labels, which the anomaly detector reads.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from earwitness.core.windows import Detection, Window
from earwitness.detectors.frontend import LogMel

DEFAULT_MODEL = "earwitness-v2"


def shipped_model_path() -> Path:
    """Path of the shipped model's metadata JSON (beside its .onnx and .pt)."""
    return Path(str(resources.files("earwitness.models").joinpath(f"{DEFAULT_MODEL}.json")))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _frame_mean(per_frame: np.ndarray) -> np.ndarray:
    """Mean over the frames axis of [B, frames, dim]: what `mean` computes (a sum, then a division) at half its
    cost per window."""
    return per_frame.sum(axis=1) / per_frame.shape[1]


def _window_scores(logits: np.ndarray, emb: np.ndarray, tail: slice) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities [B, labels] (the max over the frames in `tail`) and embeddings [B, emb] of a batch of windows."""
    return _sigmoid(logits[:, tail].max(axis=1)), _frame_mean(emb)


class _TopLabels(Mapping[str, Any]):
    """An event's `top_labels` detail: the three teacher classes heard best over the window (the model scores
    them for the whole window, as YAMNet does), worked out on first use. Most windows start no event, and
    nobody asks."""

    KEY = "top_labels"

    def __init__(self, names: tuple[str, ...], teacher_logits: np.ndarray) -> None:
        self._names = names
        self._logits: np.ndarray | None = teacher_logits
        self._top: list[list] | None = None

    def _value(self) -> list[list]:
        if self._top is None:
            assert self._logits is not None
            logits = self._logits
            best = np.argpartition(logits, -3)[-3:]
            best = best[np.argsort(logits[best])[::-1]]
            self._top = [[self._names[i], round(float(_sigmoid(logits[i])), 3)] for i in best]
            self._logits = None
        return self._top

    def __getitem__(self, key: str) -> list[list]:
        if key != self.KEY:
            raise KeyError(key)
        return self._value()

    def __iter__(self) -> Iterator[str]:
        return iter((self.KEY,))

    def __len__(self) -> int:
        return 1


class _OnnxRunner:
    """Runs the model's (shared) session on a batch of log-mels: (logits, embeddings) per frame."""

    def __init__(self, session) -> None:
        self.session = session
        self.input = session.get_inputs()[0].name
        # (logits, embeddings); a distilled model has a third output, the teacher's classes.
        self.outputs = [o.name for o in session.get_outputs()[:2]]
        self.all_outputs = [o.name for o in session.get_outputs()[:3]]

    def __call__(self, logmel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, emb = self.session.run(self.outputs, {self.input: np.ascontiguousarray(logmel, dtype=np.float32)})
        return logits, emb

    def with_teacher_classes(self, logmel: np.ndarray) -> list[np.ndarray]:
        """(logits, embeddings) per frame[, the window's teacher-class logits]."""
        return self.session.run(self.all_outputs, {self.input: np.ascontiguousarray(logmel, dtype=np.float32)})


@functools.lru_cache(maxsize=4)
def _session(path: Path, mtime_ns: int):
    """The model's inference session, loaded once (again only when the file changes)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # One window at a time on a shared box: a second thread costs more than it gives, and a
    # spinning thread pool would burn CPU between the hops.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def load_session(path: Path):
    """The ONNX Runtime session of a model file (shared; see `_session`)."""
    return _session(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=16)
def tail_slice(n_out: int, window_s: float, span_s: float, frame_hop_s: float) -> slice:
    """The output frames whose centres lie in the window's newest `span_s` (the same for every window)."""
    centres = np.arange(n_out) * frame_hop_s + 0.0275
    first = int(np.searchsorted(centres, window_s - span_s))
    return slice(min(first, n_out - 1), n_out)


def load_metadata(model: str | Path | None = None) -> tuple[Path, dict]:
    """(metadata path, metadata) of a model given as its .json, .onnx or .pt path, or the shipped one."""
    path = Path(model) if model else shipped_model_path()
    if path.suffix != ".json":
        path = path.with_suffix(".json")
    return path, json.loads(path.read_text())


def scored_labels(meta: dict, labels: Sequence[str] | None = None) -> tuple[str, ...]:
    """The labels a classifier reports: `labels` when given, else the model's shipped labels."""
    return tuple(labels) if labels else tuple(meta.get("shipped_labels", meta["labels"]))


class ClassifierDetector:
    """Detector protocol implementation around the exported EarNet."""

    name = "classifier"
    gated = True

    def __init__(
        self,
        model: str | Path | None = None,
        score_span_s: float | None = None,
        labels: tuple[str, ...] | list[str] | None = None,
        thresholds: dict[str, float] | None = None,
    ) -> None:
        meta_path, meta = load_metadata(model)
        self.meta = meta
        self.version = str(meta.get("version", "unknown"))
        self.model_name = str(meta.get("name", meta_path.stem))
        self._all_labels: tuple[str, ...] = tuple(meta["labels"])
        self.labels: tuple[str, ...] = scored_labels(meta, labels)
        unknown = set(self.labels) - set(self._all_labels)
        if unknown:
            raise ValueError(f"model {self.model_name} has no label(s) {sorted(unknown)}")
        self._idx = [self._all_labels.index(lb) for lb in self.labels]
        self.thresholds = {lb: float(meta["thresholds"][lb]) for lb in self.labels}
        if thresholds:
            self.thresholds.update({k: float(v) for k, v in thresholds.items() if k in self.labels})
        self.event_settings: dict[str, dict] = {
            lb: dict(meta.get("event_settings", {}).get(lb, {})) for lb in self.labels
        }
        """Event-tracker settings per label that the model's figures were measured with (merge gap, cooldown)."""
        self.score_span_s = None if score_span_s is None else float(score_span_s)
        self._auto_span = score_span_s is None
        self._last_start_s: float | None = None
        self.frame_hop_s = float(meta["frame_hop_s"])
        self.frontend = LogMel()
        """The pipeline computes `window.features.logmel` with this (shared with later detectors)."""
        self._run = _OnnxRunner(load_session(meta_path.with_suffix(".onnx")))
        self.top_label_names: tuple[str, ...] = tuple(meta.get("aux_classes", ()))
        """AudioSet classes of a model distilled from YAMNet: events carry the three it hears best."""

    # -- scoring -------------------------------------------------------------------------------
    def _tail_frames(self, n_out: int, window_s: float) -> slice:
        span = self.score_span_s if self.score_span_s is not None else float(self.meta.get("hop_s", 0.25))
        return tail_slice(n_out, window_s, span, self.frame_hop_s)

    def score_logmel_batch(self, logmel: np.ndarray, window_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [B, all labels] and embeddings [B, emb] of a batch of windows' log-mels."""
        logits, emb = self._run(logmel)
        return _window_scores(logits, emb, self._tail_frames(logits.shape[1], window_s))

    def detect(self, windows: Sequence[Window], found: Sequence[Detection] = ()) -> list[Detection]:
        """Findings in consecutive windows of one stream, in one model run: the scored labels' probabilities,
        the embedding and every label's probability (for the anomaly detector), and the top AudioSet labels."""
        if self._auto_span:
            # Score the stretch of time each window adds: its hop, read from the window spacing (the
            # smallest seen: windows the energy gate turned away leave wider gaps).
            for window in windows:
                last, self._last_start_s = self._last_start_s, window.start_s
                spacing = window.start_s - last if last is not None else 0.0
                if 0 < spacing <= len(window.audio) / 16000.0 and (self.score_span_s is None or spacing < self.score_span_s):
                    self.score_span_s = spacing
        # One window at a time is the daemon's case: a view, not a stacked copy.
        logmel = windows[0].features.logmel[np.newaxis] if len(windows) == 1 else np.stack(
            [window.features.logmel for window in windows])
        logits, emb, *teacher = self._run.with_teacher_classes(logmel)
        tail = self._tail_frames(logits.shape[1], len(windows[0].audio) / 16000.0)
        probs, window_emb = _window_scores(logits, emb, tail)
        tail_emb = _frame_mean(emb[:, tail])
        out = []
        for k, window_probs in enumerate(probs.tolist()):
            details: dict[str, Mapping[str, Any]] = {}
            if teacher and self.top_label_names:
                details = dict.fromkeys(self.labels, _TopLabels(self.top_label_names, teacher[0][k]))
            out.append(Detection(
                scores={lb: window_probs[i] for lb, i in zip(self.labels, self._idx)},
                details=details,
                embedding=window_emb[k],
                tail_embedding=tail_emb[k],
                label_scores=dict(zip(self._all_labels, window_probs)),
            ))
        return out

    def close(self) -> None:
        """The session is shared by every source's classifier and outlives the stream."""
