"""The long day of `earwitness eval`: a seeded synthetic day at home, streamed through the daemon.

The day (`day_plan`) is streamed twice through the daemon's own pipeline (windows, the detector,
the event tracker with the model's event settings), as `earwitness detect` streams a file:
- as it is: it holds no positive, so every event is a false alarm (`false_alarms_per_24h`); the
  anomaly detector runs behind the classifier in this pass (`anomaly_day`);
- with incidents (every validation positive of a label, placed twice: `day_plan`). An incident is
  found when an event of its label starts between `COLLAR_S` before its onset (its first active
  sample) and its end. Its time to alarm is the later of the event's `start` and the time the
  tracker emitted the start (the end of the window it observed then, `Pipeline.observed_until_s`),
  less the moment the break begins: the first 25 ms frame within `day_plan.LOUD_ONSET_DB` of the clip's
  loudest. Many clips hold their recording's own room sound before the break (1 s chunks cut from
  a 5 s recording: up to 0.9 s of it, 20 dB under the shatter, yet "active" by the 25 dB activity
  rule), so the first active sample is often not the break. The time from the first active sample
  is reported beside it (`time_to_alarm_from_first_sound_ms`). The incidents behind the figures are
  named by source file: those missed, and those found later than `LATE_S` after the break began.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from earwitness import SAMPLE_RATE
from earwitness.core.events import EventChange
from earwitness.core.windows import Detection, Window
from earwitness.training.data import Item
from earwitness.training.day_plan import DayPlan, DayRenderer, Placed, plan_day
from earwitness.training.streaming import DetectorView

COLLAR_S = 0.5
LATE_S = 0.5
"""An alarm later than this after the break begins is listed by source file (`late_incidents`): the issue's bar."""


@dataclass
class DayEvent:
    label: str
    start_s: float
    end_s: float
    peak: float
    emitted_s: float  # stream time at which the start was emitted


class DayEvents:
    """The events a tracker raised, as it ends them, each with the stream time its start was emitted at:
    `observed_until()`, the end of the newest window the tracker had seen then."""

    def __init__(self, observed_until: Callable[[], float]) -> None:
        self.observed_until = observed_until
        self.events: list[DayEvent] = []
        self._emitted: dict[str, float] = {}

    def __call__(self, change: EventChange) -> None:
        if change.type == "start":
            self._emitted[change.event.id] = self.observed_until()
        elif change.type == "end":
            e = change.event
            self.events.append(DayEvent(e.label, e.start_s, e.end_s or e.start_s, e.score, self._emitted[e.id]))


class ScoreLog(DetectorView):
    """The detector, keeping every window's scores by window start (hop index)."""

    def __init__(self, detector, hop_s: float) -> None:
        super().__init__(detector)
        self.hop = int(round(hop_s * SAMPLE_RATE))
        self.blocks: list[np.ndarray] = []
        self.table = np.zeros((0, len(self.labels)), np.float32)

    def detect(self, windows: Sequence[Window], found: Sequence[Detection]) -> list[Detection]:
        detections = self.detector.detect(windows, found)
        self.blocks.append(np.array([[d.scores[lb] for lb in self.labels] for d in detections], np.float32))
        return detections

    def freeze(self) -> np.ndarray:
        self.table = np.concatenate(self.blocks) if self.blocks else self.table
        self.blocks = []
        return self.table


class Replay(DetectorView):
    """The detector on the day with incidents. A window that holds no sample of an incident is the
    very window of the day without them: its logged scores are replayed. The others are scored."""

    def __init__(self, log: ScoreLog, spans: list[tuple[int, int]]) -> None:
        super().__init__(log.detector)
        self.log = log
        self.starts = np.array([a for a, _ in spans], np.int64)
        self.ends = np.array([b for _, b in spans], np.int64)
        self.scored = 0

    def _touches_incident(self, a: int, b: int) -> bool:
        i = int(np.searchsorted(self.starts, b, side="left")) - 1  # last span starting before b
        return i >= 0 and self.ends[i] > a

    def detect(self, windows: Sequence[Window], found: Sequence[Detection]) -> list[Detection]:
        out: list[Detection | None] = []
        fresh, fresh_found = [], []
        for w, before in zip(windows, found):
            a = int(round(w.start_s * SAMPLE_RATE))
            row = a // self.log.hop
            if row < len(self.log.table) and not self._touches_incident(a, a + len(w.audio)):
                out.append(Detection(dict(zip(self.labels, self.log.table[row].tolist()))))
            else:
                out.append(None)
                fresh.append(w)
                fresh_found.append(before)
        if fresh:
            self.scored += len(fresh)
            it = iter(self.detector.detect(fresh, fresh_found))
            return [d if d is not None else next(it) for d in out]
        return [d for d in out if d is not None]


def stream_day(config, detector, renderer: DayRenderer, chunk_s: float = 10.0, progress: bool = True,
               desc: str = "long day", after: Sequence = (), shares: list[float] | None = None) -> list[DayEvent]:
    """Stream the rendered day through a fresh pipeline; the events it raised. `after`: detectors that
    run behind `detector` in the same pipeline (the anomaly detector, which reads its embedding).
    `shares` gets the share of the windows the detector ran on (below 1 with the energy gate)."""
    from tqdm import tqdm

    from earwitness.core.events import SourceInfo
    from earwitness.daemon.pipeline import Pipeline

    collected = DayEvents(lambda: pipeline.observed_until_s)
    pipeline = Pipeline(SourceInfo("long-day", "eval"), config, [detector, *after], collected)
    with tqdm(total=renderer.plan.samples // SAMPLE_RATE, desc=f"{desc} (s of audio)", unit="s",
              disable=not progress) as bar:
        for chunk in renderer.chunks(chunk_s):
            pipeline.process(chunk)
            bar.update(len(chunk) // SAMPLE_RATE)
    pipeline.finish()
    if shares is not None:
        shares.append(pipeline.windows_scored / max(1, pipeline.windows_seen))
    return collected.events


@dataclass
class IncidentResult:
    placed: Placed
    event: DayEvent | None

    @property
    def label(self) -> str:
        """Its label (every incident has one; household sounds have none)."""
        assert self.placed.sound.label is not None
        return self.placed.sound.label

    def named(self) -> dict:
        """Which incident this is, for the JSON's lists of missed and late ones."""
        sound = self.placed.sound
        return {"path": sound.path, "label": self.label, "condition": sound.condition,
                "peak_dbfs": round(self.placed.peak_dbfs, 1), "onset_s": round(self.placed.onset_s, 2)}

    @property
    def alarm_s(self) -> float | None:
        """When the alarm could be sent: the later of the event's start and its emission."""
        return None if self.event is None else max(self.event.start_s, self.event.emitted_s)

    @property
    def time_to_alarm_s(self) -> float | None:
        """From the moment the break begins (its loud onset) to the alarm."""
        return None if self.alarm_s is None else self.alarm_s - self.placed.loud_onset_s


def incident_spans(plan: DayPlan, items: Sequence[Item]) -> list[tuple[int, int]]:
    """The samples each incident can reach (its clip, up to its longest placement, and a window after it):
    windows outside them are the same in the day with and without incidents (`Replay`)."""
    durations = {it.path: it.duration_s for it in items}
    return [(s.start, s.start + int((min(durations[s.path], s.max_s) + 1.0) * SAMPLE_RATE)) for s in plan.incidents]


def match_incidents(placed: list[Placed], events: list[DayEvent]) -> list[IncidentResult]:
    """Each incident with the first unused event of its label that starts within its span."""
    used: set[int] = set()
    out = []
    for p in sorted((p for p in placed if p.sound.label is not None), key=lambda p: p.onset_s):
        match = None
        for j, e in enumerate(events):
            if j not in used and e.label == p.sound.label and p.onset_s - COLLAR_S <= e.start_s <= p.end_s:
                match = j
                break
        if match is not None:
            used.add(match)
        out.append(IncidentResult(p, events[match] if match is not None else None))
    return out


def _gate_figures(config, log: ScoreLog, spans: list[tuple[int, int]], day: DayRenderer,
                  without: list[IncidentResult], progress: bool) -> dict:
    """The day with incidents again (`day`: a fresh renderer of it), with the energy gate of low-power
    listening (the config's `gate` settings, switched on): its incident recall beside the one without,
    and how often the model ran."""
    gated = config.model_copy(update={"gate": config.gate.model_copy(update={"enabled": True})})
    shares: list[float] = []
    events = stream_day(gated, Replay(log, spans), day, progress=progress, desc="long day with incidents, gated",
                        shares=shares)
    results = match_incidents(day.placed, events)
    labels = sorted({r.label for r in results})

    def recall(rs: list[IncidentResult], label: str) -> float:
        mine = [r for r in rs if r.label == label]
        return round(sum(r.event is not None for r in mine) / len(mine), 4)

    return {
        "settings": gated.gate.model_dump(exclude={"enabled"}),
        "incident_recall": {lb: recall(results, lb) for lb in labels},
        "incident_recall_without": {lb: recall(without, lb) for lb in labels},
        "time_to_alarm_ms": percentiles_ms([r.time_to_alarm_s for r in results if r.event is not None]),
        "model_windows_share": round(shares[0], 4),
        "missed_only_with_gate": [
            {"path": r.placed.sound.path, "label": r.placed.sound.label, "condition": r.placed.sound.condition,
             "onset_s": round(r.placed.onset_s, 2)}
            for r, w in zip(results, without) if r.event is None and w.event is not None],
    }


def percentiles_ms(times: list[float | None]) -> dict[str, float | None]:
    """p50 and p95 in ms of the times that are known."""
    values = [t for t in times if t is not None]
    if not values:
        return {"p50": None, "p95": None}
    return {"p50": round(float(np.percentile(values, 50)) * 1000, 1), "p95": round(float(np.percentile(values, 95)) * 1000, 1)}


def source_of(plan: DayPlan, placed: list[Placed], event: DayEvent) -> str:
    """What was playing when a false event started: a household sound, else the background stretch."""
    for p in placed:
        if p.sound.label is None and p.sound.start / SAMPLE_RATE - 1.0 <= event.start_s <= p.end_s + COLLAR_S:
            return p.sound.path
    at = int(event.start_s * SAMPLE_RATE)
    for s in plan.stretches:
        if s.start <= at < s.start + s.length:
            return s.path or "quiet floor"
    return "unknown"


def long_day(config, detector, data_dir: str | Path, items: Sequence[Item], hours: float = 24.0, seed: int = 0,
             progress: bool = True) -> tuple[dict, dict[str, list[dict]]]:
    """The `long_day` figures of `earwitness eval`, and the false events per label with their source
    (the classifier's labels and the anomaly detector's, which runs behind it in the day without incidents)."""
    from earwitness.training.anomaly_day import (
        day_anomaly_detector,
        per_24h_after_learning,
    )

    labels = list(detector.labels)
    plan = plan_day(items, labels, hours, seed)
    clean = DayRenderer(data_dir, plan, incidents=False, seed=seed)
    log = ScoreLog(detector, config.windows.hop_s)
    anomaly = day_anomaly_detector(config, detector)
    false_events = stream_day(config, log, clean, progress=progress, desc="long day", after=[anomaly])
    log.freeze()
    sources: dict[str, list[dict]] = {lb: [] for lb in [*labels, anomaly.label]}
    for e in false_events:
        path = source_of(plan, clean.placed, e)
        sources[e.label].append({"path": path, "class": plan.classes.get(path), "condition": "long_day",
                                 "peak": round(e.peak, 4), "start_s": round(e.start_s, 2)})
    figures: dict = {
        "hours": round(plan.hours, 4),
        "false_alarms_per_24h": {lb: round(len(sources[lb]) * 24 / plan.hours, 3) for lb in labels} | {
            anomaly.label: per_24h_after_learning(len(sources[anomaly.label]), plan.hours, anomaly.config.learn_s)},
        "anomaly_learn_s": anomaly.config.learn_s,
        "incident_recall": {},
        "time_to_alarm_ms": {"p50": None, "p95": None},
        "household_sounds": len(plan.household),
        "quiet_floor_hours": round(sum(s.length for s in plan.stretches if s.path is None) / SAMPLE_RATE / 3600, 4),
    }
    if plan.incidents:
        with_incidents = DayRenderer(data_dir, plan, incidents=True, seed=seed)
        spans = incident_spans(plan, items)
        events = stream_day(config, Replay(log, spans), with_incidents, progress=progress, desc="long day with incidents")
        results = match_incidents(with_incidents.placed, events)
        found = [r for r in results if r.event is not None]
        by_label: dict[str, list[IncidentResult]] = {}
        for r in results:
            by_label.setdefault(r.label, []).append(r)
        figures["incident_recall"] = {lb: round(sum(r.event is not None for r in rs) / len(rs), 4) for lb, rs in by_label.items()}
        figures["time_to_alarm_ms"] = percentiles_ms([r.time_to_alarm_s for r in found])
        figures["time_to_alarm_from_first_sound_ms"] = percentiles_ms(
            [r.alarm_s - r.placed.onset_s for r in found if r.alarm_s is not None])
        figures["incidents"] = {lb: len(rs) for lb, rs in by_label.items()}
        figures["incident_recall_by_condition"] = {
            lb: {cond: round(float(np.mean([r.event is not None for r in rs if r.placed.sound.condition == cond])), 4)
                 for cond in ("snr", "quiet") if any(r.placed.sound.condition == cond for r in rs)}
            for lb, rs in by_label.items()}
        figures["time_to_alarm_parts_ms"] = {
            "start": percentiles_ms([r.event.start_s - r.placed.loud_onset_s for r in found if r.event is not None]),
            "emitted": percentiles_ms([r.event.emitted_s - r.placed.loud_onset_s for r in found if r.event is not None])}
        figures["time_to_alarm_ms_by_label"] = {
            lb: percentiles_ms([r.time_to_alarm_s for r in rs if r.event is not None]) for lb, rs in by_label.items()}
        figures["gate"] = _gate_figures(config, log, spans, DayRenderer(data_dir, plan, incidents=True, seed=seed),
                                        results, progress)
        figures["missed_incidents"] = [{**r.named(), "loud_onset_s": round(r.placed.loud_onset_s, 2)}
                                       for r in results if r.event is None]
        late = sorted(((r.time_to_alarm_s, r) for r in found if r.time_to_alarm_s is not None and r.time_to_alarm_s > LATE_S),
                      key=lambda pair: -pair[0])
        figures["late_incidents"] = [
            {**r.named(), "time_to_alarm_ms": round(seconds * 1000, 1),
             "loud_onset_after_first_sound_ms": round((r.placed.loud_onset_s - r.placed.onset_s) * 1000, 1)}
            for seconds, r in late]
    return figures, sources
