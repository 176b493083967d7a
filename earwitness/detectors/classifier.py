"""The `classifier` detector: the shipped EarNet (glass_break, scratch and safety sounds).

Inference runs in ONNX Runtime when it is installed (one thread), otherwise in torch.
Each window is scored by the max over the model's output frames in the window's newest
`score_span_s` seconds (set it to the windower's hop), so consecutive windows score
disjoint stretches of time: events are located to within a hop and do not merge.
The window's penultimate embedding (mean over frames, float32) goes to
`window.features.shared["embedding"]`, the probabilities of all labels to
`shared["label_scores"]`.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_MODEL = "earwitness-v1"


def shipped_model_path() -> Path:
    """Path of the shipped model's metadata JSON (beside its .onnx and .pt)."""
    return Path(str(resources.files("earwitness.models").joinpath(f"{DEFAULT_MODEL}.json")))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class _OnnxRunner:
    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, logmel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, emb = self.session.run(None, {self.input: np.ascontiguousarray(logmel, dtype=np.float32)})
        return logits, emb


class _TorchRunner:
    def __init__(self, path: Path, meta: dict) -> None:
        import torch

        from earwitness.detectors.cnn import EarNet

        self.torch = torch
        self.model = EarNet(len(meta["labels"]), **meta.get("arch", {}))
        self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.model.eval()

    def __call__(self, logmel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.torch.inference_mode():
            logits, emb = self.model(self.torch.from_numpy(np.ascontiguousarray(logmel, dtype=np.float32)))
        return logits.numpy(), emb.numpy()


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

    def __init__(
        self,
        model: str | Path | None = None,
        backend: str = "auto",
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
        import torch

        from earwitness.frontend import LogMelFrontend

        # One window at a time: a second thread costs more than it gives, and the box is shared.
        torch.set_num_threads(1)
        self.frontend = LogMelFrontend()
        """The pipeline computes `window.features.logmel` with this (shared with later detectors)."""
        self.backend = self._pick_backend(backend)
        if self.backend == "onnx":
            self._run = _OnnxRunner(meta_path.with_suffix(".onnx"))
        else:
            self._run = _TorchRunner(meta_path.with_suffix(".pt"), meta)

    @staticmethod
    def _pick_backend(backend: str) -> str:
        if backend not in ("auto", "onnx", "torch"):
            raise ValueError(f"unknown backend {backend!r}")
        if backend == "auto":
            try:
                import onnxruntime  # noqa: F401

                return "onnx"
            except ImportError:
                return "torch"
        return backend

    # -- scoring -------------------------------------------------------------------------------
    def _tail_frames(self, n_out: int, window_s: float) -> slice:
        span = self.score_span_s if self.score_span_s is not None else float(self.meta.get("hop_s", 0.25))
        centres = np.arange(n_out) * self.frame_hop_s + 0.0275
        first = int(np.searchsorted(centres, window_s - span))
        return slice(min(first, n_out - 1), n_out)

    def score_logmel_batch(self, logmel: np.ndarray, window_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [B, all labels] and embeddings [B, emb] of a batch of windows' log-mels."""
        logits, emb = self._run(logmel)
        tail = self._tail_frames(logits.shape[1], window_s)
        probs = _sigmoid(logits[:, tail, :].max(axis=1))
        return probs.astype(np.float32), emb.mean(axis=1).astype(np.float32)

    def score(self, window) -> dict[str, float]:
        if self._auto_span:
            # Score the stretch of time this window adds: its hop, read from the window spacing.
            last, self._last_start_s = self._last_start_s, window.start_s
            if last is not None and 0 < window.start_s - last <= len(window.audio) / 16000.0:
                self.score_span_s = window.start_s - last
        feats = window.features
        logmel = feats.logmel
        probs, emb = self.score_logmel_batch(logmel[None], len(window.audio) / 16000.0)
        feats.shared["embedding"] = emb[0]
        feats.shared["label_scores"] = {lb: float(p) for lb, p in zip(self._all_labels, probs[0])}
        return {lb: float(probs[0, i]) for lb, i in zip(self.labels, self._idx)}
