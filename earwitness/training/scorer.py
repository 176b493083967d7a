"""The model in memory, scored as the classifier detector scores its exported copy: training's hard-negative
mining and the scratch head see the scores the daemon would."""

from __future__ import annotations

import numpy as np
import torch

from earwitness.detectors.classifier import tail_slice
from earwitness.detectors.cnn import FRAME_HOP_S, EarNet


class TorchScorer:
    """Scores windows with the model in memory the way the classifier detector does (newest hop's frames)."""

    def __init__(self, model: EarNet, hop_s: float = 0.25) -> None:
        self.model, self.hop_s = model, hop_s

    def score_logmel_batch(self, logmel: np.ndarray, window_s: float) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(logmel, np.float32)))
        logits, emb = out[0].numpy(), out[1].numpy()
        tail = tail_slice(logits.shape[1], window_s, self.hop_s, FRAME_HOP_S)
        return 1 / (1 + np.exp(-logits[:, tail].max(axis=1))), emb[:, tail]
