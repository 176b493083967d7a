"""The long day of `earwitness eval`: a seeded synthetic day at home, streamed through the daemon.

The day is stitched from the validation background recordings (30-180 s stretches at their
recorded level) and from stretches of a quiet floor (white noise at -70...-50 dBFS: the house at
night), with a validation household sound (a clip positive for no label) every 20-60 s: at
0-20 dB SNR over a recording, or at -50...-20 dBFS (active RMS) over a quiet floor. It is
rendered chunk by chunk: no more than the stretch being played and its sounds is in memory.

It is streamed twice through the daemon's own pipeline (windows, the detector, the event tracker
with the model's event settings), as `earwitness detect` streams a file:
- as it is: it holds no positive, so every event is a false alarm (`false_alarms_per_24h`);
- with incidents: every validation positive of a label (glass breaks; for scratch the real
  scratches, class `scratch`) placed twice in the gaps between household sounds: once over a
  recording at 0-20 dB SNR (`snr`), once over a quiet floor at -45...-30 dBFS peak (`quiet`; never
  under 0 dB SNR), each at least -45 dBFS peak (when the day runs out of one kind of stretch, the
  other takes its incidents; over a floor an `snr` incident plays at -50...-20 dBFS). An incident is found when an
  event of its label starts between `COLLAR_S` before its onset (its first active sample) and its
  end. Its time to alarm is the later of the event's `start` and the time the tracker emitted the
  start (the end of the window it observed then, `Pipeline.observed_until_s`), less the onset.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import soundfile as sf

from earwitness import SAMPLE_RATE
from earwitness.core.windows import Detection, Window
from earwitness.training.augment import active_rms, activity
from earwitness.training.data import SCRATCH_LIKE, Item, label_of, load_audio
from earwitness.training.evaluate import DetectorView

COLLAR_S = 0.5
STRETCH_S = (30.0, 180.0)
FLOOR_SHARE = 0.25  # share of the stretches that are a quiet floor
FLOOR_DBFS = (-70.0, -50.0)
HOUSEHOLD_GAP_S = (20.0, 60.0)  # from one household sound's start to the next
HOUSEHOLD_SNR_DB = (0.0, 20.0)
HOUSEHOLD_ON_FLOOR_DBFS = (-50.0, -20.0)
MAX_SOUND_S = 15.0
MAX_INCIDENT_S = 10.0
INCIDENT_SNR_DB = (0.0, 20.0)
INCIDENT_QUIET_PEAK_DBFS = (-45.0, -30.0)
MIN_PEAK_DBFS = -45.0
MIN_INCIDENT_SPACING_S = 30.0
FADE_S = 0.02
MIN_BACKGROUND_S = 5.0


def is_household(item: Item) -> bool:
    """A clip that is no label's positive (nor scratch-like): dishes, keys, doors, typing, speech..."""
    return item.kind == "clips" and label_of(item.cls) is None and item.cls not in SCRATCH_LIKE


def is_incident_positive(item: Item, label: str) -> bool:
    """A clip inserted as an incident of `label`; for scratch only real scratches (class `scratch`)."""
    if item.kind != "clips":
        return False
    return item.cls == "scratch" if label == "scratch" else label_of(item.cls) == label


@dataclass(frozen=True)
class Stretch:
    """A stretch of background: part of a recording, or a quiet floor (`path` None)."""

    start: int  # stream sample
    length: int
    path: str | None
    offset_s: float = 0.0
    floor_dbfs: float = 0.0


@dataclass(frozen=True)
class Sound:
    """A clip played into the day: a household sound (`label` None) or an incident of `label`."""

    start: int  # stream sample
    path: str
    max_s: float
    level: str  # "snr": dB over the stretch's level; "rms": active RMS dBFS; "peak": peak dBFS
    db: float
    label: str | None = None
    condition: str = "household"  # incidents: "snr" or "quiet"


@dataclass
class DayPlan:
    samples: int
    stretches: list[Stretch]
    household: list[Sound]
    incidents: list[Sound]
    classes: dict[str, str] = field(default_factory=dict)  # path -> class

    @property
    def hours(self) -> float:
        return self.samples / SAMPLE_RATE / 3600


def plan_day(items: Sequence[Item], labels: Sequence[str], hours: float, seed: int = 0) -> DayPlan:
    """Where every stretch and sound of the day goes (seeded; only the manifest is read)."""
    rng = np.random.default_rng(seed)
    total = int(round(hours * 3600 * SAMPLE_RATE))
    backgrounds = [it for it in items if it.kind == "background" and it.duration_s >= MIN_BACKGROUND_S]
    household = [it for it in items if is_household(it) and it.duration_s > 0]
    stretches: list[Stretch] = []
    t = 0
    while t < total:
        length = int(rng.uniform(*STRETCH_S) * SAMPLE_RATE)
        if not backgrounds or rng.random() < FLOOR_SHARE:
            stretches.append(Stretch(t, min(length, total - t), None, floor_dbfs=float(rng.uniform(*FLOOR_DBFS))))
        else:
            bg = backgrounds[int(rng.integers(len(backgrounds)))]
            length = min(length, int(bg.duration_s * SAMPLE_RATE) - 1, total - t)
            offset = float(rng.uniform(0.0, bg.duration_s - length / SAMPLE_RATE))
            stretches.append(Stretch(t, length, bg.path, offset_s=max(offset, 0.0)))
        t += stretches[-1].length
    starts = np.array([s.start for s in stretches])

    def on_floor(sample: int) -> bool:
        return stretches[int(np.searchsorted(starts, sample, side="right")) - 1].path is None

    sounds: list[Sound] = []
    t = int(rng.uniform(2.0, HOUSEHOLD_GAP_S[0]) * SAMPLE_RATE)
    while household and t < total:
        it = household[int(rng.integers(len(household)))]
        dur = min(it.duration_s, MAX_SOUND_S)
        if t + int(dur * SAMPLE_RATE) >= total:
            break
        if on_floor(t):
            sounds.append(Sound(t, it.path, MAX_SOUND_S, "rms", float(rng.uniform(*HOUSEHOLD_ON_FLOOR_DBFS))))
        else:
            sounds.append(Sound(t, it.path, MAX_SOUND_S, "snr", float(rng.uniform(*HOUSEHOLD_SNR_DB))))
        t += int(max(rng.uniform(*HOUSEHOLD_GAP_S), dur + 2.0) * SAMPLE_RATE)

    positives = [(it, lb) for lb in labels for it in items if is_incident_positive(it, lb)]
    # Quiet incidents go where the house is quiet (a floor), the others over a recording; each
    # queue spills over to the other kind of stretch when that one runs out.
    queues = {cond: [positives[i] for i in rng.permutation(len(positives))] for cond in ("snr", "quiet")}
    incidents: list[Sound] = []
    if positives:
        # 80 % of an even share of the day: gaps between household sounds seldom fall where wanted.
        spacing = max(MIN_INCIDENT_SPACING_S, 0.8 * total / SAMPLE_RATE / (2 * len(positives))) * SAMPLE_RATE
        durations = {it.path: it.duration_s for it in items}
        ends = [s.start + int(min(durations[s.path], MAX_SOUND_S) * SAMPLE_RATE) for s in sounds]
        next_ok = spacing / 2
        for g0, g1 in zip([0] + ends, [s.start for s in sounds] + [total]):
            if not (queues["snr"] or queues["quiet"]):
                break
            floor = on_floor((g0 + g1) // 2)
            cond = "quiet" if floor else "snr"
            cond = cond if queues[cond] else ("snr" if cond == "quiet" else "quiet")
            it, lb = queues[cond][0]
            n = int(min(it.duration_s, MAX_INCIDENT_S) * SAMPLE_RATE)
            if g0 < next_ok or g1 - g0 < n + 6 * SAMPLE_RATE:
                continue
            queues[cond].pop(0)
            at = g0 + (g1 - g0 - n) // 2
            if cond == "quiet":
                level, db = "peak", float(rng.uniform(*INCIDENT_QUIET_PEAK_DBFS))
            elif on_floor(at):
                level, db = "rms", float(rng.uniform(*HOUSEHOLD_ON_FLOOR_DBFS))
            else:
                level, db = "snr", float(rng.uniform(*INCIDENT_SNR_DB))
            incidents.append(Sound(at, it.path, MAX_INCIDENT_S, level, db, lb, cond))
            next_ok = at + spacing
    classes = {it.path: it.cls for it in items}
    return DayPlan(total, stretches, sounds, incidents, classes)


@dataclass
class Placed:
    """A sound as it was rendered: where its active part begins, its level."""

    sound: Sound
    onset_s: float
    end_s: float
    peak_dbfs: float


def read_stretch(path: Path, offset_s: float, n: int) -> np.ndarray:
    """`n` samples of a recording from `offset_s`, 16 kHz mono (read without decoding the rest)."""
    info = sf.info(str(path))
    if info.samplerate != SAMPLE_RATE:
        audio = load_audio(path)
        start = int(offset_s * SAMPLE_RATE)
        out = audio[start: start + n]
    else:
        start = int(offset_s * SAMPLE_RATE)
        out = sf.read(str(path), start=start, stop=start + n, dtype="float32", always_2d=True)[0].mean(axis=1)
    return np.pad(out, (0, n - len(out))).astype(np.float32)


def _fade(x: np.ndarray) -> np.ndarray:
    n = min(int(FADE_S * SAMPLE_RATE), len(x) // 2)
    if n:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def reference_level(x: np.ndarray, frame: int = 400) -> float:
    """A stretch's level: RMS of its 25 ms frames within 50 dB of its loudest (silences left out)."""
    n = len(x) // frame
    if n == 0:
        return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))
    energy = np.mean(np.square(x[: n * frame].reshape(n, frame), dtype=np.float64), axis=1)
    loud = energy[energy >= energy.max() * 1e-5]
    return float(np.sqrt(np.mean(loud) + 1e-20))


class DayRenderer:
    """Renders a planned day chunk by chunk; `placed` lists the sounds as they were played."""

    def __init__(self, data_dir: str | Path, plan: DayPlan, incidents: bool, seed: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.plan = plan
        self.seed = seed
        self.sounds = sorted(plan.household + (plan.incidents if incidents else []), key=lambda s: s.start)
        self.placed: list[Placed] = []

    def _stretch_audio(self, index: int) -> tuple[np.ndarray, float]:
        s = self.plan.stretches[index]
        if s.path is None:
            rng = np.random.default_rng(zlib.crc32(f"{self.seed}:floor:{index}".encode()))
            audio = rng.standard_normal(s.length, dtype=np.float32) * np.float32(10 ** (s.floor_dbfs / 20))
            return _fade(audio), 10 ** (s.floor_dbfs / 20)
        audio = read_stretch(self.data_dir / s.path, s.offset_s, s.length)
        return _fade(audio), reference_level(audio)

    def _sound_audio(self, sound: Sound, stretch_level: float) -> np.ndarray:
        clip = load_audio(self.data_dir / sound.path)[: int(sound.max_s * SAMPLE_RATE)]
        mask = activity(clip)
        peak = float(np.max(np.abs(clip))) if len(clip) else 0.0
        if peak <= 0:
            return clip
        if sound.level == "snr":
            gain = stretch_level * 10 ** (sound.db / 20) / active_rms(clip, mask)
        elif sound.level == "rms":
            gain = 10 ** (sound.db / 20) / active_rms(clip, mask)
        else:
            gain = 10 ** (sound.db / 20) / peak
        if sound.condition == "quiet":  # quiet, but never under the stretch's level
            gain = max(gain, stretch_level / active_rms(clip, mask))
        if sound.label is not None:
            gain = max(gain, 10 ** (MIN_PEAK_DBFS / 20) / peak)
        gain = min(gain, 0.99 / peak)
        first = int(np.argmax(mask)) if mask.any() else 0
        self.placed.append(Placed(sound, (sound.start + first) / SAMPLE_RATE, (sound.start + len(clip)) / SAMPLE_RATE,
                                  float(20 * np.log10(gain * peak))))
        return (clip * gain).astype(np.float32)

    def chunks(self, chunk_s: float = 10.0) -> Iterator[np.ndarray]:
        """The day's audio in chunks of `chunk_s` (the last may be shorter)."""
        step = int(chunk_s * SAMPLE_RATE)
        stretches = self.plan.stretches
        starts = np.array([s.start for s in stretches])
        loaded: dict[int, tuple[np.ndarray, float]] = {}
        playing: list[tuple[int, np.ndarray]] = []
        next_stretch = next_sound = 0
        for c0 in range(0, self.plan.samples, step):
            c1 = min(c0 + step, self.plan.samples)
            out = np.zeros(c1 - c0, np.float32)
            while next_stretch < len(stretches) and stretches[next_stretch].start < c1:
                loaded[next_stretch] = self._stretch_audio(next_stretch)
                next_stretch += 1
            while next_sound < len(self.sounds) and self.sounds[next_sound].start < c1:
                sound = self.sounds[next_sound]
                home = int(np.searchsorted(starts, sound.start, side="right")) - 1
                playing.append((sound.start, self._sound_audio(sound, loaded[home][1])))
                next_sound += 1
            for i, (audio, _) in list(loaded.items()):
                s = stretches[i]
                a, b = max(c0, s.start), min(c1, s.start + s.length)
                out[a - c0: b - c0] += audio[a - s.start: b - s.start]
                if s.start + s.length <= c1:
                    del loaded[i]
            still = []
            for start, audio in playing:
                a, b = max(c0, start), min(c1, start + len(audio))
                if a < b:
                    out[a - c0: b - c0] += audio[a - start: b - start]
                if start + len(audio) > c1:
                    still.append((start, audio))
            playing = still
            yield np.clip(out, -1.0, 1.0, out=out)


@dataclass
class DayEvent:
    label: str
    start_s: float
    end_s: float
    peak: float
    emitted_s: float  # stream time at which the start was emitted


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
               desc: str = "long day", shares: list[float] | None = None) -> list[DayEvent]:
    """Stream the rendered day through a fresh pipeline; the events it raised. `shares` gets the share
    of the windows the detector ran on (below 1 with the energy gate)."""
    from tqdm import tqdm

    from earwitness.core.events import EventChange, SourceInfo
    from earwitness.daemon.pipeline import Pipeline

    emitted: dict[str, float] = {}
    events: list[DayEvent] = []

    def on_change(change: EventChange) -> None:
        if change.type == "start":
            emitted[change.event.id] = pipeline.observed_until_s
        elif change.type == "end":
            e = change.event
            events.append(DayEvent(e.label, e.start_s, e.end_s or e.start_s, e.score, emitted[e.id]))

    pipeline = Pipeline(SourceInfo("long-day", "eval"), config, [detector], on_change)
    with tqdm(total=renderer.plan.samples // SAMPLE_RATE, desc=f"{desc} (s of audio)", unit="s",
              disable=not progress) as bar:
        for chunk in renderer.chunks(chunk_s):
            pipeline.process(chunk)
            bar.update(len(chunk) // SAMPLE_RATE)
    pipeline.finish()
    if shares is not None:
        shares.append(pipeline.windows_scored / max(1, pipeline.windows_seen))
    return events


@dataclass
class IncidentResult:
    placed: Placed
    event: DayEvent | None

    @property
    def time_to_alarm_s(self) -> float | None:
        if self.event is None:
            return None
        return max(self.event.start_s, self.event.emitted_s) - self.placed.onset_s


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
    labels = sorted({r.placed.sound.label for r in results})

    def recall(rs: list[IncidentResult], label: str) -> float:
        mine = [r for r in rs if r.placed.sound.label == label]
        return round(sum(r.event is not None for r in mine) / len(mine), 4)

    return {
        "settings": gated.gate.model_dump(exclude={"enabled"}),
        "incident_recall": {lb: recall(results, lb) for lb in labels},
        "incident_recall_without": {lb: recall(without, lb) for lb in labels},
        "time_to_alarm_ms": _percentiles_ms([r.time_to_alarm_s for r in results if r.event is not None]),
        "model_windows_share": round(shares[0], 4),
        "missed_only_with_gate": [
            {"path": r.placed.sound.path, "label": r.placed.sound.label, "condition": r.placed.sound.condition,
             "onset_s": round(r.placed.onset_s, 2)}
            for r, w in zip(results, without) if r.event is None and w.event is not None],
    }


def _percentiles_ms(values: list[float]) -> dict[str, float | None]:
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
    """The `long_day` figures of `earwitness eval`, and the false events per label with their source."""
    labels = list(detector.labels)
    plan = plan_day(items, labels, hours, seed)
    clean = DayRenderer(data_dir, plan, incidents=False, seed=seed)
    log = ScoreLog(detector, config.windows.hop_s)
    false_events = stream_day(config, log, clean, progress=progress, desc="long day")
    log.freeze()
    sources: dict[str, list[dict]] = {lb: [] for lb in labels}
    for e in false_events:
        path = source_of(plan, clean.placed, e)
        sources[e.label].append({"path": path, "class": plan.classes.get(path), "condition": "long_day",
                                 "peak": round(e.peak, 4), "start_s": round(e.start_s, 2)})
    figures: dict = {
        "hours": round(plan.hours, 4),
        "false_alarms_per_24h": {lb: round(len(sources[lb]) * 24 / plan.hours, 3) for lb in labels},
        "incident_recall": {},
        "time_to_alarm_ms": {"p50": None, "p95": None},
        "household_sounds": len(plan.household),
        "quiet_floor_hours": round(sum(s.length for s in plan.stretches if s.path is None) / SAMPLE_RATE / 3600, 4),
    }
    if plan.incidents:
        with_incidents = DayRenderer(data_dir, plan, incidents=True, seed=seed)
        durations = {it.path: it.duration_s for it in items}
        spans = [(s.start, s.start + int((min(durations[s.path], s.max_s) + 1.0) * SAMPLE_RATE)) for s in plan.incidents]
        events = stream_day(config, Replay(log, spans), with_incidents, progress=progress, desc="long day with incidents")
        results = match_incidents(with_incidents.placed, events)
        found = [r for r in results if r.event is not None]
        by_label: dict[str, list[IncidentResult]] = {}
        for r in results:
            by_label.setdefault(r.placed.sound.label, []).append(r)
        figures["incident_recall"] = {lb: round(sum(r.event is not None for r in rs) / len(rs), 4) for lb, rs in by_label.items()}
        figures["time_to_alarm_ms"] = _percentiles_ms([r.time_to_alarm_s for r in found])
        figures["incidents"] = {lb: len(rs) for lb, rs in by_label.items()}
        figures["incident_recall_by_condition"] = {
            lb: {cond: round(float(np.mean([r.event is not None for r in rs if r.placed.sound.condition == cond])), 4)
                 for cond in ("snr", "quiet") if any(r.placed.sound.condition == cond for r in rs)}
            for lb, rs in by_label.items()}
        figures["time_to_alarm_parts_ms"] = {
            "start": _percentiles_ms([r.event.start_s - r.placed.onset_s for r in found]),
            "emitted": _percentiles_ms([r.event.emitted_s - r.placed.onset_s for r in found])}
        figures["time_to_alarm_ms_by_label"] = {
            lb: _percentiles_ms([r.time_to_alarm_s for r in rs if r.event is not None]) for lb, rs in by_label.items()}
        figures["gate"] = _gate_figures(config, log, spans, DayRenderer(data_dir, plan, incidents=True, seed=seed),
                                        results, progress)
        figures["missed_incidents"] = [
            {"path": r.placed.sound.path, "label": r.placed.sound.label, "condition": r.placed.sound.condition,
             "peak_dbfs": round(r.placed.peak_dbfs, 1), "onset_s": round(r.placed.onset_s, 2)}
            for r in results if r.event is None]
    return figures, sources
