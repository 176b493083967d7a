"""The scratch output: a linear head on the network's frame embedding, fitted on real scratches.

There are few real scratch recordings (about 16 groups), too few to train the network on
and still measure it. So the network learns scratch only from the stick-slip synthesis (and
what a scratch is from YAMNet), and its scratch output is then replaced by a logistic
regression on its frozen frame embeddings: real scratches against household negatives
(rubbing, squeaks and skids included). Leave-one-group-out over the real scratch groups
measures this recipe: each group is scored by a head fitted without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from earwitness.detectors.cnn import EarNet
from earwitness.training import augment as A
from earwitness.training import calibrate as C
from earwitness.training.data import SCRATCH_LIKE, AudioCache, Item
from earwitness.training.scorer import TorchScorer
from earwitness.training.synth import synth_scratch

MAX_NEGATIVE_FRAMES = 60000
N_SYNTH = 150


@dataclass
class ScratchHead:
    weight: np.ndarray  # [emb]
    bias: float
    report: dict = field(default_factory=dict)


def _windows(model: EarNet, frontend, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per window of the stream: embeddings of the frames it scores [W, k, E], and its newest hop's activity share."""
    embs: list[np.ndarray] = []

    class _Keep(TorchScorer):
        def score_logmel_batch(self, logmel: np.ndarray, window_s: float) -> tuple[np.ndarray, np.ndarray]:
            probs, emb = super().score_logmel_batch(logmel, window_s)
            embs.append(emb)
            return probs, emb

    _, ends = C.window_scores(_Keep(model), frontend, audio)
    mask = A.activity(audio) if len(audio) else np.zeros(0, bool)
    active = np.array([mask[max(0, int((e - 0.25) * 16000)) : max(0, int(e * 16000))].mean()
                       if int(e * 16000) > 0 and int((e - 0.25) * 16000) < len(mask) else 0.0 for e in ends])
    return np.concatenate(embs), np.nan_to_num(active)


def _clip_score(emb: np.ndarray, w: np.ndarray, b: float) -> float:
    return float((emb @ w + b).max())


def _fit_lr(pos: np.ndarray, neg: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    lr = LogisticRegression(C=0.5, class_weight="balanced", max_iter=2000, random_state=seed)
    lr.fit((x - mu) / sd, y)
    w = lr.coef_[0] / sd
    return w.astype(np.float32), float(lr.intercept_[0] - np.sum(lr.coef_[0] * mu / sd))


def fit(model: EarNet, frontend, train_items: list[Item], val_items: list[Item], cache: AudioCache, col: int,
        seed: int = 0, progress: bool = True) -> ScratchHead:
    """Leave-one-group-out figures over all real scratch groups, then the head fitted on the training groups."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    model.eval()
    scratch = [it for it in train_items + val_items if it.cls in SCRATCH_LIKE and it.kind == "clips"]
    clip_emb: dict[str, np.ndarray] = {}
    pos_frames: dict[str, np.ndarray] = {}
    for it in tqdm(scratch, desc="scratch embeddings", disable=not progress, leave=False):
        emb, active = _windows(model, frontend, cache.get(it.path))
        clip_emb[it.path] = emb.reshape(-1, emb.shape[-1])
        sel = emb[active >= 0.5] if (active >= 0.5).any() else emb
        pos_frames[it.path] = sel.reshape(-1, emb.shape[-1])
    synth = []
    for _ in range(N_SYNTH):
        clip, _params = synth_scratch(rng)
        emb, active = _windows(model, frontend, clip * 10 ** (rng.uniform(-40, -6) / 20))
        synth.append(emb[active >= 0.5].reshape(-1, emb.shape[-1]))
    synth_frames = np.concatenate(synth)

    def negatives(items: list[Item], limit: int) -> tuple[np.ndarray, list[np.ndarray]]:
        per_clip, frames = [], []
        for it in tqdm(items, desc="negative embeddings", disable=not progress, leave=False):
            audio = cache.get(it.path)
            if len(audio) > 60 * 16000:  # long background: a few random minutes
                s = int(rng.integers(0, len(audio) - 60 * 16000))
                audio = audio[s : s + 60 * 16000]
            emb, _ = _windows(model, frontend, audio)
            per_clip.append(emb.reshape(-1, emb.shape[-1]))
            frames.append(per_clip[-1])
        allf = np.concatenate(frames)
        keep = rng.permutation(len(allf))[:limit]
        return allf[keep], per_clip

    def is_negative(it: Item) -> bool:
        return it.kind in ("clips", "background") and it.cls not in SCRATCH_LIKE

    train_neg, _ = negatives([it for it in train_items if is_negative(it)], MAX_NEGATIVE_FRAMES)
    val_negatives = [it for it in val_items if is_negative(it) and it.kind == "clips"]
    _, val_neg_clips = negatives(val_negatives, 1)

    groups = sorted({it.group_id for it in scratch})
    ranks, per_group = [], {}
    for g in tqdm(groups, desc="scratch leave-one-group-out", disable=not progress, leave=False):
        fit_pos = np.concatenate([pos_frames[it.path] for it in scratch if it.group_id != g] + [synth_frames])
        w, b = _fit_lr(fit_pos, train_neg, seed)
        neg_scores = np.array([_clip_score(e, w, b) for e in val_neg_clips])
        held = [it for it in scratch if it.group_id == g]
        scores = [float(np.mean(neg_scores < _clip_score(clip_emb[it.path], w, b))) for it in held]
        ranks += scores
        per_group[g] = round(float(np.mean(scores)), 4)

    train_groups = {it.group_id for it in train_items}
    fit_pos = np.concatenate([pos_frames[it.path] for it in scratch if it.group_id in train_groups] + [synth_frames])
    w, b = _fit_lr(fit_pos, train_neg, seed)
    report = {
        "logo_auc": round(float(np.mean(ranks)), 4) if ranks else None,
        "logo_auc_per_group": per_group,
        "groups": len(groups),
        "clips": len(scratch),
        "fitted_on_groups": sorted({it.group_id for it in scratch if it.group_id in train_groups}),
        "negative_frames": int(len(train_neg)),
        "validation_negative_clips": len(val_neg_clips),
    }
    return ScratchHead(w, b, report)


def install(model: EarNet, col: int, head: ScratchHead) -> None:
    """Write the head into the network's output layer, so the exported model carries it."""
    with torch.no_grad():
        model.head.weight[col, :, 0] = torch.from_numpy(head.weight)
        assert model.head.bias is not None
        model.head.bias[col] = head.bias
