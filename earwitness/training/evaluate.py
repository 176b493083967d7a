"""`earwitness eval`: measure a model through the daemon's own streaming path.

Every recording of DIR (layout of ../shared/data) is read with the daemon's file reader
and pushed through a `Pipeline` (windows -> frontend -> detector -> event tracker) built
from the config (default config unless --config; the detector list is replaced by the
classifier under test). Measured:
- clip-level ROC AUC per label (a clip's score: its max over windows);
- on events/ recordings with a CSV of onset_s,offset_s,label: event recall, precision and
  F1 per label, an event matching when its onset is within +-0.5 s (DCASE collar);
- on background/ and every clip that is not of the label: false events per hour.
By default only recordings whose group_id the model did not train on are used (the
model's metadata lists its training groups); --all-groups uses everything.
Each recording is preceded by (window - hop) s of silence, as if the stream had started
earlier, so that its first samples are scored; times are reported in the recording's time.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from earwitness.training.data import SCRATCH_LIKE, Item, label_of, read_event_labels, read_manifest
from earwitness.training.metrics import roc_auc
from earwitness.training.streaming import RecordingResult, run_recording

COLLAR_S = 0.5


def _config(config_path: str | Path | None):
    from earwitness.config import load_config

    return load_config(config_path)


def replay_events(config, result: RecordingResult, thresholds: dict[str, float], event_settings: dict) -> list:
    """Events of recorded window scores at other thresholds, through the daemon's event tracker."""
    from earwitness.core.events import EventChange, SourceInfo
    from earwitness.detectors.tracker import EventTracker

    changes: list[EventChange] = []
    labels = list(result.scores)
    tracker = EventTracker(SourceInfo("eval", result.item.path), "eval", config.events, thresholds,
                           dict.fromkeys(labels, "replay"), event_settings, datetime.now(timezone.utc), changes.append)
    for i in range(len(result.onsets)):
        tracker.observe({lb: float(result.scores[lb][i]) for lb in labels}, float(result.onsets[i]), float(result.ends[i]))
    tracker.finish()
    return [(c.event.label, c.event.start_s, c.event.end_s or c.event.start_s, c.event.score)
            for c in changes if c.type == "end"]


def match_events(truth: list[tuple[float, float]], detected: list[float], collar: float = COLLAR_S) -> int:
    """Number of true events matched one-to-one by a detected onset within the collar."""
    used = set()
    hits = 0
    for onset, _ in sorted(truth):
        best, best_d = None, None
        for j, d in enumerate(detected):
            if j in used:
                continue
            dist = abs(d - onset)
            if dist <= collar and (best_d is None or dist < best_d):
                best, best_d = j, dist
        if best is not None:
            used.add(best)
            hits += 1
    return hits


def _is_positive(item: Item, label: str) -> bool:
    return item.cls in SCRATCH_LIKE if label == "scratch" else label_of(item.cls) == label


def _is_negative(item: Item, label: str) -> bool:
    """Audio that must not raise `label` (scratch-like clips are neither for scratch)."""
    if item.kind == "events":
        return False
    if label == "scratch" and item.cls in SCRATCH_LIKE:
        return False
    return not _is_positive(item, label) and label_of(item.cls) != label


def metrics(results: list[RecordingResult], labels: tuple[str, ...], thresholds: dict[str, float],
            events_of: dict[str, list], data_dir: Path) -> dict:

    out: dict = {}
    neg_hours_all = sum(r.duration_s for r in results if r.item.kind == "background"
                        or (r.item.kind == "clips" and label_of(r.item.cls) is None and r.item.cls not in SCRATCH_LIKE)) / 3600
    for lb in labels:
        clips = [r for r in results if r.item.kind == "clips" and (_is_positive(r.item, lb) or _is_negative(r.item, lb))]
        y = np.array([_is_positive(r.item, lb) for r in clips], dtype=int)
        s = np.array([r.scores[lb].max() if len(r.scores[lb]) else 0.0 for r in clips])
        auc = roc_auc(y, s)
        negs = [r for r in results if _is_negative(r.item, lb)]
        hours = sum(r.duration_s for r in negs) / 3600
        fa = sum(sum(1 for e in events_of[r.item.path] if e[0] == lb) for r in negs)
        rec = prec = f1 = None
        truth_n = hits = det_n = 0
        for r in results:
            if r.item.kind != "events":
                continue
            csv_path = (data_dir / r.item.path).with_suffix(".csv")
            if not csv_path.exists():
                continue
            truth = [(on, off) for on, off, l in read_event_labels(csv_path) if l == lb]
            det = [e[1] for e in events_of[r.item.path] if e[0] == lb]
            truth_n += len(truth)
            det_n += len(det)
            hits += match_events(truth, det)
        if truth_n:
            rec = hits / truth_n
            prec = hits / det_n if det_n else 0.0
            f1 = 2 * rec * prec / (rec + prec) if rec + prec > 0 else 0.0
        out[lb] = {
            "clip_auc": auc,
            "threshold": float(thresholds[lb]),
            "event_recall": rec,
            "event_precision": prec,
            "event_f1": f1,
            "false_alarms_per_hour": fa / hours if hours > 0 else None,
            "_false_events": fa,
            "_hours": hours,
            "_n_pos": int(y.sum()),
            "_n_clips": len(y),
        }
    return {"background_hours": neg_hours_all, "labels": out}


def public(m: dict, model: str) -> dict:
    """The JSON shape of issue 3 (underscore keys dropped)."""
    return {"model": model, "background_hours": round(m["background_hours"], 4),
            "labels": {lb: {k: v for k, v in d.items() if not k.startswith("_")} for lb, d in m["labels"].items()}}


def _fmt(v, spec=".3f") -> str:
    return "—" if v is None else format(v, spec)


def print_table(ours: dict, base: dict | None, model: str) -> None:
    print(f"\nmodel {model}; negative audio measured: {ours['background_hours']:.2f} h "
          f"(background + negative clips); collar ±{COLLAR_S} s")
    head = f"{'label':12s} {'who':8s} {'clip AUC':>8s} {'thr':>6s} {'ev.rec':>7s} {'ev.prec':>7s} {'ev.F1':>6s} {'FA/h':>7s} {'FA (n/h)':>12s}"
    print(head)
    print("-" * len(head))
    for lb, d in ours["labels"].items():
        rows = [("ours", d)] + ([("yamnet", base["labels"][lb])] if base and lb in base["labels"] else [])
        for who, x in rows:
            print(f"{lb:12s} {who:8s} {_fmt(x['clip_auc'], '.4f'):>8s} {x['threshold']:6.3f} {_fmt(x['event_recall']):>7s} "
                  f"{_fmt(x['event_precision']):>7s} {_fmt(x['event_f1']):>6s} {_fmt(x['false_alarms_per_hour'], '.2f'):>7s} "
                  f"{x['_false_events']:>5d}/{x['_hours']:.2f}h")


def print_scratch(results: list[RecordingResult], threshold: float, who: str) -> None:
    rows = [r for r in results if r.item.cls in SCRATCH_LIKE and "scratch" in r.scores]
    if not rows:
        return
    print(f"\nscratch-like clips ({who}, threshold {threshold:.3f}):")
    for r in rows:
        peak = float(r.scores["scratch"].max()) if len(r.scores["scratch"]) else 0.0
        print(f"  {'FOUND ' if peak >= threshold else 'missed'} {peak:.3f}  {r.item.cls:12s} {r.item.path}")


def plots(results: dict[str, list[RecordingResult]], labels: tuple[str, ...], thresholds: dict[str, dict], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for lb in labels:
        fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
        for who, res in results.items():
            clips = [r for r in res if r.item.kind == "clips" and lb in r.scores and (_is_positive(r.item, lb) or _is_negative(r.item, lb))]
            y = np.array([_is_positive(r.item, lb) for r in clips], dtype=int)
            s = np.array([r.scores[lb].max() if len(r.scores[lb]) else 0.0 for r in clips])
            if 0 < y.sum() < len(y):
                fpr, tpr, _ = roc_curve(y, s)
                ax[0].plot(fpr, tpr, label=who)
            bins = np.linspace(0, 1, 41)
            ax[1].hist(s[y == 0], bins=bins, alpha=0.5, log=True, label=f"{who}: negatives (n={int((y == 0).sum())})")
            ax[1].hist(s[y == 1], bins=bins, alpha=0.6, log=True, label=f"{who}: {lb} (n={int(y.sum())})")
            if lb in thresholds.get(who, {}):
                ax[1].axvline(thresholds[who][lb], ls="--", color="k" if who == "ours" else "grey")
        ax[0].plot([0, 1], [0, 1], ":", color="grey")
        ax[0].set(title=f"{lb}: clip ROC", xlabel="false positive rate", ylabel="true positive rate")
        ax[0].legend()
        ax[1].set(title=f"{lb}: clip max-score distribution", xlabel="score", ylabel="clips")
        ax[1].legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{lb}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def evaluate(data: str | Path, model: str | Path | None = None, out: str | Path | None = None,
             plot: str | Path | None = None, baseline: str | None = None, config_path: str | Path | None = None,
             all_groups: bool = False, labels: list[str] | None = None, limit: int | None = None,
             progress: bool = True, long_day_hours: float = 24.0, seed: int = 0) -> dict:
    from earwitness.detectors.classifier import ClassifierDetector
    from earwitness.logs import configure_logging
    from earwitness.training.calibrate import calibrate

    configure_logging("warning")  # the pipeline logs every window at debug level
    began = time.monotonic()
    data = Path(data)
    config = _config(config_path)
    det = ClassifierDetector(model, labels=labels)
    meta = det.meta
    train_groups = set() if all_groups else set(meta.get("train_groups", []))
    items = [it for it in read_manifest(data) if it.group_id not in train_groups]
    if limit:  # smoke runs: N random clips (long background recordings left out) and the event recordings
        clips = [i for i, it in enumerate(items) if it.kind == "clips"]
        keep = {clips[k] for k in np.random.default_rng(0).permutation(len(clips))[:limit].tolist()}
        items = [it for i, it in enumerate(items) if i in keep or it.kind == "events"]
    thresholds = {lb: (config.events.for_label(lb).threshold if config.events.for_label(lb).threshold is not None
                       else det.thresholds[lb]) for lb in det.labels}
    failed: list[str] = []
    results = [run_recording(config, det, data / it.path, it, failed)
               for it in tqdm(items, desc=f"eval {det.model_name}", disable=not progress)]
    events_of = {r.item.path: r.events for r in results}
    ours = metrics(results, det.labels, thresholds, events_of, data)
    by_who = {"ours": results}
    thr_who = {"ours": thresholds}
    base = None
    if baseline == "yamnet":
        from earwitness.training.yamnet import YamnetDetector, default_model_dir

        ydet = YamnetDetector(default_model_dir(data), labels=det.labels)
        yres = [run_recording(config, ydet, data / it.path, it)
                for it in tqdm(items, desc="eval yamnet", disable=not progress)]
        # YAMNet has no thresholds of its own for our labels: calibrate them with the same
        # procedure and budget, on this same negative audio (which favours YAMNet).
        ythr = {}
        for lb in det.labels:
            negs = [r for r in yres if _is_negative(r.item, lb)]
            hours = sum(r.duration_s for r in negs) / 3600
            ythr[lb] = calibrate([r.scores[lb] for r in negs], hours, meta.get("calibration", {}).get("budget_per_24h", 1.0)).threshold
        # Its thresholds are calibrated for one window's score: no second, sustained path (ours is tuned to our model).
        ysettings = {lb: {k: v for k, v in st.items() if k != "sustain_ratio"} for lb, st in det.event_settings.items()}
        yevents = {r.item.path: replay_events(config, r, ythr, ysettings) for r in yres}
        base = metrics(yres, det.labels, ythr, yevents, data)
        by_who["yamnet"] = yres
        thr_who["yamnet"] = ythr
    for lb in det.labels:
        ev = config.events.for_label(lb, det.event_settings.get(lb))
        print(f"events {lb}: threshold {thresholds[lb]:.3f}, release_ratio {ev.release_ratio}, sustain_ratio "
              f"{ev.sustain_ratio}, min_duration_s {ev.min_duration_s}, merge_gap_s {ev.merge_gap_s}, cooldown_s {ev.cooldown_s}")
    print_table(ours, base, det.model_name)
    if "scratch" in det.labels:
        print_scratch(results, thresholds["scratch"], "ours")
        if base:
            print_scratch(by_who["yamnet"], thr_who["yamnet"]["scratch"], "yamnet")
    for r in results:
        if r.item.kind == "events":
            print(f"\nevents in {r.item.path}:")
            csv_path = (data / r.item.path).with_suffix(".csv")
            if csv_path.exists():
                print("  truth:   " + ", ".join(f"{on:.2f}-{off:.2f} {l}" for on, off, l in read_event_labels(csv_path)))
            print("  detected: " + ", ".join(f"{s:.2f}-{e:.2f} {lb} ({p:.2f})" for lb, s, e, p in r.events))
    result = public(ours, det.model_name)
    from earwitness.training.home_eval import home_figures, print_home  # issue 12: a lived-in home

    home = home_figures(config, det, data, items, results, _is_negative, long_day_hours, seed, progress)
    for lb, figures in home["labels"].items():
        result["labels"][lb].update({k: v for k, v in figures.items() if not k.startswith("_")})
    if home["long_day"] is not None:
        result["long_day"] = home["long_day"]
    print_home(home)
    from earwitness.training.anomaly_eval import anomaly_metrics  # issue 5: the anomaly detector

    result["anomaly"] = anomaly_metrics(data, det, config, all_backgrounds=all_groups, progress=progress)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        if base:
            out.with_name(out.stem + ".yamnet.json").write_text(json.dumps(public(base, "yamnet"), indent=2))
    if plot:
        for p in plots(by_who, det.labels, thr_who, Path(plot)):
            print(f"wrote {p}")
    print(f"\neval took {time.monotonic() - began:.0f} s")
    if failed:
        print(f"earwitness eval: {len(failed)} file(s) could not be read to the end (what was read counts): "
              + ", ".join(failed), file=sys.stderr)
    return {"ours": result, "yamnet": public(base, "yamnet") if base else None, "failed": failed}
