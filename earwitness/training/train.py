"""`earwitness train`: train EarNet, calibrate its thresholds, export ONNX, write the model files.

Output in DIR: <name>.pt (torch state dict), <name>.onnx (same network, for ONNX Runtime),
<name>.json (labels, calibrated thresholds, frontend and split metadata, validation figures).
Copy these three into earwitness/models/ to ship them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from earwitness import SAMPLE_RATE, __version__
from earwitness.detectors.cnn import FRAME_HOP_S, WIDTHS, EarNet, n_params
from earwitness.detectors.frontend import HOP_LENGTH, N_MELS, WIN_LENGTH
from earwitness.training import calibrate as C
from earwitness.training.data import (
    DEFAULT_HOLDOUT_GROUPS,
    LABEL_CLASSES,
    AudioCache,
    Item,
    holdout_groups_from_sources,
    label_of,
    read_manifest,
    split_by_group,
)
from earwitness.training.metrics import roc_auc
from earwitness.training.pool import Pool, build_pool
from earwitness.training.scorer import TorchScorer
from earwitness.training.torch_frontend import LogMelFrontend
from earwitness.training.yamnet import model_dir_or_default

DEFAULT_LABELS = tuple(LABEL_CLASSES)
MIN_GROUPS = 10  # a real label needs at least this many distinct recordings in the corpus
OTHER_LABEL_AUC_BAR = 0.95
SCRATCH_LOGO_BAR = 0.85
NEG_WEIGHT_EXTRA = 1.0
DISTILL_WEIGHT = 1.0
"""Weight of the YAMNet distillation loss beside our own labels' losses."""
ELDER_WEIGHT = 1.0
"""Weight of the elder's per-frame probabilities (`--elder`) beside our labels' frame loss."""
MINE_FLOOR = 0.2
"""A negative window whose score of a shipped label reaches this is a hard negative for the next round."""
MINE_MAX = 4000
CONFIRM_HOPS = (0, 1)
"""Confirmation spans tried per label: the event starts once the score has held for this many more hops."""
# Event-tracker settings the figures are measured with (config `events.labels.<label>`): each
# window scores only its newest hop, so consecutive events separate without a long merge gap,
# and a cooldown would swallow a second break that follows the first within seconds.
EVENT_SETTINGS = {"merge_gap_s": 0.25, "cooldown_s": 0.0}


def _limit(items: list[Item], per_class: int | None, seed: int) -> list[Item]:
    if not per_class:
        return items
    # Smoke runs: short recordings only (the long background files dominate decoding and scoring).
    items = [it for it in items if it.duration_s <= 120.0]
    rng = np.random.default_rng(seed)
    out: list[Item] = []
    by: dict[str, list[Item]] = {}
    for it in items:
        by.setdefault(it.cls, []).append(it)
    for cls in sorted(by):
        group = by[cls]
        keep = rng.permutation(len(group))[:per_class]
        out.extend(group[i] for i in sorted(keep))
    return out


def export_onnx(model: EarNet, path: Path, n_frames: int = 97) -> None:
    model.eval()
    x = torch.randn(1, n_frames, N_MELS)
    batch = torch.export.Dim("batch", max=65536)
    frames = torch.export.Dim("frames", min=16, max=100000)
    outputs = ["frame_logits", "embedding"] + (["window_teacher_logits"] if model.aux_head is not None else [])
    torch.onnx.export(
        model, (x,), str(path), input_names=["logmel"], output_names=outputs,
        dynamic_shapes=({0: batch, 1: frames},), dynamo=True, optimize=True, external_data=False,
        verbose=False,
    )


def validation_scores(detector, frontend, items: list[Item], cache: AudioCache, progress: bool = True
                      ) -> dict[str, np.ndarray]:
    """Window scores [windows, all labels] of each validation recording, as the detector streams it."""
    out = {}
    for it in tqdm(items, desc="scoring validation", disable=not progress, leave=False):
        out[it.path] = C.window_scores(detector, frontend, cache.get(it.path))[0]
    return out


def mine(model: EarNet, frontend: LogMelFrontend, items: list[Item], cache: AudioCache, labels: tuple[str, ...],
         watched: tuple[str, ...], progress: bool = True) -> list[tuple[Item, int]]:
    """Windows of negative recordings that score high for a watched label: the next round's hard negatives.

    Each recording is streamed as the daemon would, starting out of digital silence, so sounds
    that fire as they begin out of silence are found too. A window is given by its first sample
    in the recording (negative: it starts in the silence before).
    """
    model.eval()
    scorer = TorchScorer(model)
    cols = [labels.index(lb) for lb in watched if lb in labels]
    found: list[tuple[float, Item, int]] = []
    for it in tqdm(items, desc="mining hard negatives", disable=not progress, leave=False):
        if label_of(it.cls) is not None:
            continue
        scores, ends = C.window_scores(scorer, frontend, cache.get(it.path))
        peak = scores[:, cols].max(axis=1)
        for i in np.flatnonzero(peak >= MINE_FLOOR):
            found.append((float(peak[i]), it, int(round((ends[i] - 1.0) * SAMPLE_RATE))))
    found.sort(key=lambda f: -f[0])
    model.train()
    return [(it, start) for _, it, start in found[:MINE_MAX]]


def _elder(pt: Path, labels: tuple[str, ...], train_groups: list[str]) -> EarNet:
    """A trained EarNet (its .pt beside its .json) whose per-frame probabilities a smaller student learns too.
    It must have been trained on exactly this split: scoring validation audio it had learned would leak it."""
    meta = json.loads(pt.with_suffix(".json").read_text())
    if tuple(meta["labels"]) != labels:
        raise ValueError(f"{pt}: its labels {meta['labels']} differ from {list(labels)}")
    if sorted(meta.get("train_groups", [])) != sorted(train_groups):
        raise ValueError(f"{pt} was trained on other groups than this split's: its figures would leak validation")
    model = EarNet(len(labels), **meta.get("arch", {}))
    model.load_state_dict(torch.load(pt, map_location="cpu", weights_only=True))
    return model.eval()


def fit_round(model: EarNet, frontend: LogMelFrontend, pool: Pool, steps: int, batch: int, lr: float, seed: int,
              desc: str, progress: bool = True, elder: EarNet | None = None) -> None:
    """Train on batches drawn from the pool: frame and window losses on our labels, and the teacher's scores;
    with an `elder` (a trained, larger EarNet), also its per-frame label probabilities."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    bce = torch.nn.BCEWithLogitsLoss()
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=2.0)
    ema = None
    for step in bar:
        idx = np.sort(rng.integers(0, len(pool), batch))
        x = torch.from_numpy(pool.audio[idx].astype(np.float32) / 32767.0)
        y = torch.from_numpy(pool.targets[idx].astype(np.float32))
        teacher = torch.from_numpy(pool.teacher[idx].astype(np.float32))
        with torch.no_grad():
            mel = frontend(x)
        logits, _, aux = model(mel)  # [B, T', L], [B, T', E], [B, 521]
        n = min(logits.shape[1], y.shape[1])
        frame_loss = bce(logits[:, :n], y[:, :n])
        if elder is not None:
            with torch.no_grad():
                elder_probs = torch.sigmoid(elder(mel)[0])
            frame_loss = frame_loss + ELDER_WEIGHT * bce(logits, elder_probs)
        # Window-level loss on the max over frames; negatives weigh double, to push down the
        # tail of negative scores that sets the threshold at a small false-alarm budget.
        clip_y = y.max(dim=1).values
        clip_loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits.max(dim=1).values, clip_y, weight=1.0 + NEG_WEIGHT_EXTRA * (1.0 - clip_y))
        distill = bce(aux, teacher)
        loss = frame_loss + clip_loss + DISTILL_WEIGHT * distill
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        lv = loss.item()
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        if step % 20 == 0:
            bar.set_postfix(loss=f"{ema:.4f}", distill=f"{distill.item():.4f}")
    model.eval()


def train(
    data: str | Path,
    out: str | Path,
    steps: int = 6000,
    batch: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    val_fraction: float = 0.25,
    workers: int = 2,
    cache_dir: str | Path | None = ".cache",
    labels: tuple[str, ...] = DEFAULT_LABELS,
    limit_per_class: int | None = None,
    budget_per_24h: float = 1.0,
    name: str = "earwitness-v2",
    progress: bool = True,
    pool_size: int = 60000,
    rounds: int = 2,
    teacher_dir: str | Path | None = None,
    init: str | Path | None = None,
    widths: tuple[int, ...] | None = None,
    elder: str | Path | None = None,
    split_seed: int | None = None,
) -> dict:
    """Train, mine hard negatives and train again (`rounds`), fit the scratch head, export, calibrate.
    `split_seed` (default: `seed`) draws the validation groups, so that models trained with other seeds can be
    compared, or combined, on the same validation."""
    from earwitness.training import scratch_head

    t0 = time.time()
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(max(1, os.cpu_count() or 2))
    teacher_dir = model_dir_or_default(teacher_dir, data)

    items = read_manifest(data)
    holdout = holdout_groups_from_sources(data) | set(DEFAULT_HOLDOUT_GROUPS)
    split_seed = seed if split_seed is None else split_seed
    split = split_by_group(items, val_fraction, split_seed, holdout)
    train_items = _limit(split.train, limit_per_class, seed)
    val_items = _limit(split.val, limit_per_class, seed + 1)
    cache = AudioCache(data, cache_dir)

    # Labels: each with enough distinct recordings (scratch has the synthesis besides).
    groups_per_label = {lb: len({it.group_id for it in items if label_of(it.cls) == lb}) for lb in labels}
    labels = tuple(lb for lb in labels if lb == "scratch" or groups_per_label[lb] >= (MIN_GROUPS if not limit_per_class else 1))
    with open(teacher_dir / "yamnet_class_map.csv", newline="") as fh:
        import csv

        aux_classes = [r["display_name"] for r in csv.DictReader(fh)]

    widths = tuple(widths or WIDTHS)
    model = EarNet(len(labels), widths=widths, emb_dim=widths[-1], n_aux=len(aux_classes))
    frontend = LogMelFrontend()
    elder_model = _elder(Path(elder), labels, split.train_groups) if elder else None
    mined: list[tuple[Item, int]] = []
    if init:
        # Fine-tune an earlier model: its weights (the teacher head is new), and its hard negatives from the start.
        missing, _ = model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True), strict=False)
        if any(not k.startswith("aux_head.") for k in missing):
            raise ValueError(f"{init} is not an EarNet with the labels {labels}")
        mined = mine(model, frontend, train_items, cache, labels, ("glass_break", "gunshot"), progress)
    pool = build_pool(train_items, data, cache_dir, labels, teacher_dir, pool_size, seed, workers, mined=mined,
                      progress=progress)
    fit_round(model, frontend, pool, steps, batch, lr, seed, "training (round 1)", progress, elder_model)
    rounds_log = [{"round": 1, "pool": len(pool), "steps": steps, "init": str(init) if init else None,
                   "mined_windows": len(mined)}]
    for r in range(2, rounds + 1):
        mined = mine(model, frontend, train_items, cache, labels, ("glass_break", "gunshot"), progress)
        extra = build_pool(train_items, data, cache_dir, labels, teacher_dir, pool_size // 3, seed + r, workers,
                           mined=mined, progress=progress)
        pool = pool.concat(extra)
        fit_round(model, frontend, pool, max(steps // 2, 20), batch, lr / 3, seed + r, f"training (round {r})", progress,
                  elder_model)
        rounds_log.append({"round": r, "mined_windows": len(mined), "pool": len(pool), "steps": max(steps // 2, 20)})
    del pool
    train_s = time.time() - t0

    head = scratch_head.fit(model, frontend, train_items, val_items, cache, labels.index("scratch"), seed, progress)
    scratch_head.install(model, labels.index("scratch"), head)

    pt_path, onnx_path, meta_path = out / f"{name}.pt", out / f"{name}.onnx", out / f"{name}.json"
    torch.save(model.state_dict(), pt_path)
    export_onnx(model, onnx_path)
    meta: dict[str, Any] = {
        "name": name,
        "version": "2.0.0",
        "package_version": __version__,
        "created": dt.date.today().isoformat(),
        "labels": list(labels),
        "shipped_labels": list(labels),
        "thresholds": dict.fromkeys(labels, 0.5),
        "arch": {"n_aux": len(aux_classes), "widths": list(widths), "emb_dim": widths[-1]},
        "aux_classes": aux_classes,
        "frame_hop_s": FRAME_HOP_S,
        "window_s": 1.0,
        "hop_s": 0.25,
        "sample_rate": SAMPLE_RATE,
        "frontend": {"n_mels": N_MELS, "win_length": WIN_LENGTH, "hop_length": HOP_LENGTH, "log": "ln(mel power + 1e-10)"},
        "n_params": n_params(model),
        "train": {"seed": seed, "split_seed": split_seed, "elder": str(elder) if elder else None, "steps": steps, "batch": batch, "lr": lr,
                  "val_fraction": val_fraction, "limit_per_class": limit_per_class, "pool_size": pool_size, "rounds": rounds_log,
                  "teacher": "YAMNet (TFLite), 521 AudioSet classes", "train_seconds": round(train_s, 1)},
        "scratch_head": head.report,
        "train_groups": split.train_groups,
    }
    meta_path.write_text(json.dumps(meta, indent=1))

    meta = calibrate_and_validate(meta_path, val_items, cache, groups_per_label, budget_per_24h, progress)
    meta["train"]["total_seconds"] = round(time.time() - t0, 1)
    meta_path.write_text(json.dumps(meta, indent=1))
    if progress:
        print(f"model: {meta_path} ({n_params(model)} params, {onnx_path.stat().st_size / 1024:.0f} KiB onnx), "
              f"trained in {train_s:.0f} s")
        print(f"  scratch leave-one-group-out AUC: {head.report.get('logo_auc')}")
        metrics, calib, shipped = meta["validation"], meta["calibration"], meta["shipped_labels"]
        for lb in labels:
            m, c = metrics[lb], calib[lb]
            auc = "n/a" if m["clip_auc"] is None else f"{m['clip_auc']:.4f}"
            print(f"  {lb:12s} auc={auc} thr={c['threshold']:.3f} (1/24h extrapolated: {c['threshold_extrapolated']:.4f}) "
                  f"confirm={meta['event_settings'][lb].get('min_duration_s', 0)}s "
                  f"recall@thr={m['clip_recall_at_threshold']} "
                  f"FA/h={c['observed_rate_per_hour']:.2f} ({c['hours']:.2f} h) "
                  f"{'shipped' if lb in shipped else 'NOT shipped'}")
    return meta


def calibrate_and_validate(meta_path: Path, val_items: list[Item], cache: AudioCache, groups_per_label: dict,
                           budget_per_24h: float = 1.0, progress: bool = True) -> dict:
    """Thresholds from the validation negatives, clip figures on the validation clips; updates the .json.

    Runs the exported model the way the daemon does (ONNX Runtime when installed).
    """
    from earwitness.detectors.classifier import ClassifierDetector

    meta = json.loads(meta_path.read_text())
    labels = tuple(meta["labels"])
    det = ClassifierDetector(meta_path, labels=labels)
    val_clips = [i for i in val_items if i.cls not in ("glass_break_events",) and i.kind in ("clips", "background")]
    scores = validation_scores(det, det.frontend, val_clips, cache, progress)
    # Every validation clip also after a -70...-50 dBFS floor (streams start out of digital silence already).
    floor_rng = np.random.default_rng(0)
    clips = [i for i in val_clips if i.kind == "clips"]
    floored = {}
    for i in tqdm(clips, desc="scoring quiet-floor onsets", disable=not progress, leave=False):
        audio = cache.get(i.path)
        lead = np.zeros(int(floor_rng.uniform(0.5, 1.0) * SAMPLE_RATE), np.float32)
        x = np.concatenate([lead, audio]).astype(np.float32)
        x = x + floor_rng.standard_normal(len(x)).astype(np.float32) * np.float32(10 ** (floor_rng.uniform(-70, -50) / 20))
        floored[i.path] = C.window_scores(det, det.frontend, x)[0]
    release = 0.7
    calib: dict[str, dict[str, Any]] = {}
    metrics: dict[str, dict[str, Any]] = {}
    settings: dict[str, dict[str, float]] = {}
    for j, lb in enumerate(labels):
        negs = [i for i in val_clips if label_of(i.cls) != lb]
        hours = (sum(len(cache.get(i.path)) for i in negs) + sum(len(cache.get(i.path)) for i in negs if i.path in floored)
                 ) / SAMPLE_RATE / 3600
        pos = [i for i in clips if label_of(i.cls) == lb]
        neg_clips = [i for i in clips if i not in pos]
        best: tuple[float, int, C.Calibration, np.ndarray] | None = None
        for hops in CONFIRM_HOPS:
            def confirmed(s: np.ndarray, hops: int = hops) -> np.ndarray:
                return C.confirmed_scores(s, hops, release)
            neg_streams = [confirmed(scores[i.path][:, j]) for i in negs] + [confirmed(floored[i.path][:, j]) for i in negs if i.path in floored]
            cal = C.calibrate(neg_streams, hours, budget_per_24h)
            s = np.array([confirmed(scores[i.path][:, j]).max() for i in pos + neg_clips])
            recall = float(np.mean(s[: len(pos)] >= cal.threshold)) if pos else 0.0
            if best is None or recall > best[0] + 1e-9:
                best = (recall, hops, cal, s)
        assert best is not None
        _, hops, cal, s = best
        settings[lb] = {**EVENT_SETTINGS, "min_duration_s": round(max(0.0, 0.25 * hops - 0.05), 2), "release_ratio": release}
        calib[lb] = {**cal.__dict__, "confirm_hops": hops}
        y = np.array([1] * len(pos) + [0] * len(neg_clips))
        auc = roc_auc(y, s)
        clip_recall = float(np.mean(s[: len(pos)] >= cal.threshold)) if pos else None
        recall_ext = float(np.mean(s[: len(pos)] >= cal.threshold_extrapolated)) if pos else None
        metrics[lb] = {"clip_auc": auc, "clip_recall_at_threshold": clip_recall,
                       "clip_recall_at_extrapolated_threshold": recall_ext, "n_pos": len(pos),
                       "n_neg": len(neg_clips), "groups": groups_per_label.get(lb)}
    # glass_break always ships (the product needs it; its figures are reported); scratch ships
    # when its leave-one-group-out AUC reaches the bar, else it is off by default (still in the
    # model, so a user can switch it on). Another label ships when it passes the AUC bar and
    # still finds most of its validation clips at its calibrated threshold.
    logo = (meta.get("scratch_head") or {}).get("logo_auc") or 0.0
    shipped = [lb for lb in labels if lb == "glass_break" or (lb == "scratch" and logo >= SCRATCH_LOGO_BAR)
               or (lb != "scratch" and metrics[lb]["clip_auc"] is not None and metrics[lb]["clip_auc"] >= OTHER_LABEL_AUC_BAR
                   and (metrics[lb]["clip_recall_at_threshold"] or 0.0) >= 0.5)]
    meta["thresholds"] = {lb: round(calib[lb]["threshold"], 4) for lb in labels}
    meta["event_settings"] = settings
    meta["shipped_labels"] = shipped
    meta["calibration"] = {"budget_per_24h": budget_per_24h, **calib}
    meta["validation"] = metrics
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta
