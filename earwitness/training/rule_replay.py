"""Start rules for one label, tried over the eval's long day without running the model again.

Every window's scores of the day (as it is, and with incidents) are logged once through the daemon's
path, then replayed through the real `EventTracker` under each rule: false events per 24 h, incident
recall and time to alarm, counted as `long_day` counts them. A rule chosen on one seeded day is only
believed when it holds on a day of another seed, so the days of several seeds are logged side by side.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from earwitness.core.windows import Detection, Window
from earwitness.training.commands import corpus_problems, model_problems, refused
from earwitness.training.data import Item
from earwitness.training.day_plan import DayPlan, DayRenderer, Placed, plan_day
from earwitness.training.long_day import (
    DayEvent,
    DayEvents,
    Replay,
    ScoreLog,
    incident_spans,
    match_incidents,
    percentiles_ms,
    source_of,
    stream_day,
)
from earwitness.training.streaming import DetectorView


@dataclass(frozen=True)
class Rule:
    """How an event of the label starts: one window at `threshold`, or two in a row at
    `threshold * sustain_ratio` (the tracker's `sustain_ratio`; None: one window only)."""

    threshold: float
    sustain_ratio: float | None = None

    @classmethod
    def parse(cls, text: str) -> Rule:
        """`THRESHOLD` or `THRESHOLD:SUSTAIN_RATIO`, e.g. `0.993:0.955`."""
        threshold, _, sustain = text.partition(":")
        return cls(float(threshold), float(sustain) if sustain else None)

    def __str__(self) -> str:
        return f"{self.threshold:g}" + (f":{self.sustain_ratio:g}" if self.sustain_ratio is not None else "")


class _Observed(DetectorView):
    """What the tracker is given for each window: where an event would start, the window's end, the scores."""

    def __init__(self, inner: ScoreLog | Replay) -> None:
        super().__init__(inner.detector)
        self.inner = inner
        self.at_s: list[float] = []
        self.end_s: list[float] = []
        self.rows: list[list[float]] = []

    def detect(self, windows: Sequence[Window], found: Sequence[Detection]) -> list[Detection]:
        detections = self.inner.detect(windows, found)
        for window, detection in zip(windows, detections):
            self.at_s.append(window.start_s + window.duration_s / 2)  # as the pipeline places an event
            self.end_s.append(window.end_s)
            self.rows.append([detection.scores[lb] for lb in self.labels])
        return detections

    def scores(self, label: str) -> np.ndarray:
        return np.array([row[self.labels.index(label)] for row in self.rows], np.float32)


@dataclass
class LoggedDay:
    """One seeded day's window scores, as it is and with incidents, and what was placed in each."""

    seed: int
    plan: DayPlan
    without: _Observed
    with_incidents: _Observed
    household: list[Placed]
    incidents: list[Placed]


def log_day(config, detector, data_dir: str | Path, items: Sequence[Item], labels: Sequence[str], hours: float,
            seed: int, progress: bool = True) -> LoggedDay:
    """Stream the eval's long day of this seed once each way, keeping what the tracker saw."""
    plan = plan_day(items, list(labels), hours, seed)
    clean = DayRenderer(data_dir, plan, incidents=False, seed=seed)
    log = ScoreLog(detector, config.windows.hop_s)
    without = _Observed(log)
    stream_day(config, without, clean, progress=progress, desc=f"day {seed}")
    log.freeze()
    day = DayRenderer(data_dir, plan, incidents=True, seed=seed)
    with_incidents = _Observed(Replay(log, incident_spans(plan, items)))
    stream_day(config, with_incidents, day, progress=progress, desc=f"day {seed} with incidents")
    return LoggedDay(seed, plan, without, with_incidents, clean.placed, day.placed)


def replay(observed: _Observed, label: str, rule: Rule, settings: dict[str, float]) -> list[DayEvent]:
    """The label's events over the logged windows, by the real tracker under `rule` (other event
    settings: `settings`, the model's for the label)."""
    from earwitness.config import EventsConfig
    from earwitness.core.events import SourceInfo
    from earwitness.detectors.tracker import EventTracker

    observed_until = 0.0
    collected = DayEvents(lambda: observed_until)
    recommended = {k: v for k, v in settings.items() if k != "sustain_ratio"}
    if rule.sustain_ratio is not None:
        recommended["sustain_ratio"] = rule.sustain_ratio
    tracker = EventTracker(SourceInfo("replay", "long day"), "replay", EventsConfig(), {label: rule.threshold},
                           {label: "replay"}, {label: recommended}, datetime(2026, 1, 1), collected)
    for at_s, end_s, score in zip(observed.at_s, observed.end_s, observed.scores(label).tolist()):
        observed_until = end_s
        tracker.observe({label: score}, at_s, end_s)
    tracker.finish()
    return collected.events


def rule_figures(day: LoggedDay, label: str, rule: Rule, settings: dict[str, float]) -> dict:
    """The long day's figures for the label under `rule`, as `long_day` counts them."""
    false_events = replay(day.without, label, rule, settings)
    results = [r for r in match_incidents(day.incidents, replay(day.with_incidents, label, rule, settings))
               if r.label == label]
    found = [r for r in results if r.event is not None]
    return {
        "false_alarms_per_24h": round(len(false_events) * 24 / day.plan.hours, 3),
        "false_alarm_sources": [source_of(day.plan, day.household, e) for e in false_events],
        "incident_recall": round(len(found) / len(results), 4) if results else None,
        "time_to_alarm_ms": percentiles_ms([r.time_to_alarm_s for r in found]),
    }


def main(argv: list[str] | None = None) -> int:
    from earwitness.config import load_config
    from earwitness.detectors.classifier import ClassifierDetector
    from earwitness.logs import configure_logging
    from earwitness.training.data import read_manifest

    p = argparse.ArgumentParser(prog="python -m earwitness.training.rule_replay", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, type=Path, help="corpus dir (manifest.csv)")
    p.add_argument("--model", type=Path, default=None, help="model .json (default: the shipped model)")
    p.add_argument("--config", type=Path, default=None, help="daemon config (windows); default: built-in defaults")
    p.add_argument("--labels", nargs="+", default=None,
                   help="labels whose incidents the day holds, as eval's --labels (default: the model's shipped labels)")
    p.add_argument("--label", default="glass_break", help="the label whose start rule is tried")
    p.add_argument("--rule", action="append", type=Rule.parse, default=[], metavar="THRESHOLD[:SUSTAIN_RATIO]",
                   help="a start rule to try (repeatable); the model's own rule is always tried first")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="seeds of the days (eval's --seed)")
    p.add_argument("--hours", type=float, default=24.0, help="length of each day")
    args = p.parse_args(argv)
    if refused(p.prog, corpus_problems(args.data) + model_problems(args.model, args.labels, args.config)):
        return 2

    configure_logging("warning")
    config = load_config(args.config)
    detector = ClassifierDetector(args.model, labels=args.labels)
    if args.label not in detector.labels:
        p.error(f"--label {args.label} is not among the day's labels {list(detector.labels)}")
    train_groups = set(detector.meta.get("train_groups", []))
    items = [it for it in read_manifest(args.data) if it.group_id not in train_groups]
    settings = dict(detector.event_settings.get(args.label, {}))
    own = Rule(detector.thresholds[args.label], settings.get("sustain_ratio"))
    rules = [own, *(r for r in args.rule if r != own)]
    days = [log_day(config, detector, args.data, items, detector.labels, args.hours, seed) for seed in args.seeds]
    print(f"{args.label} over {args.hours:g} h days (false events / 24 h, incident recall, time to alarm p50 / p95 ms):")
    for rule in rules:
        figures = [(day.seed, rule_figures(day, args.label, rule, settings)) for day in days]
        cells = [f"seed {seed}: {f['false_alarms_per_24h']:g}, {f['incident_recall']}, "
                 f"{f['time_to_alarm_ms']['p50']} / {f['time_to_alarm_ms']['p95']}" for seed, f in figures]
        print(f"  {str(rule):>14}{' (the model)' if rule == own else ''}  " + "  |  ".join(cells))
        for seed, f in figures:
            for source in f["false_alarm_sources"]:
                print(f"      seed {seed} false: {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
