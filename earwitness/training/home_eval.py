"""What `earwitness eval` measures of a lived-in home (issue 12), beside the clip figures.

- Onsets: every validation clip is streamed again after 0.5-1 s of digital silence
  (`after_silence`) and over a white-noise floor at -70...-50 dBFS that starts 0.5-1 s before it
  and goes on under it (`quiet_floor`), seeded per clip: a daemon at night hears exactly this.
  Events of a label on the clips that are negative for it are its onset false alarms
  (`onset_false_alarms_per_hour`, over the hours of both variants).
- The long day (see `long_day`).
- What still fires: every false event, grouped by source file and condition (plain, after
  silence, quiet floor, long day), with its count and peak score (`false_alarm_sources`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from earwitness import SAMPLE_RATE
from earwitness.training.data import Item, load_audio

ONSET_CONDITIONS = ("after_silence", "quiet_floor")
LEAD_S = (0.5, 1.0)
FLOOR_DBFS = (-70.0, -50.0)


def onset_variant(clip: np.ndarray, condition: str, rng: np.random.Generator) -> tuple[np.ndarray, float | None]:
    """(the clip after 0.5-1 s of silence or over a quiet floor, the floor's level in dBFS or None)."""
    lead = np.zeros(int(rng.uniform(*LEAD_S) * SAMPLE_RATE), np.float32)
    audio = np.concatenate([lead, clip]).astype(np.float32)
    if condition == "after_silence":
        return audio, None
    if condition != "quiet_floor":
        raise ValueError(f"unknown onset condition {condition!r}")
    floor_dbfs = float(rng.uniform(*FLOOR_DBFS))
    return audio + floor_noise(len(audio), floor_dbfs, rng), floor_dbfs


def floor_noise(n: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """White noise at an RMS of `dbfs`."""
    return rng.standard_normal(n, dtype=np.float32) * np.float32(10 ** (dbfs / 20))


def onset_results(config, detector, data_dir: Path, items: Sequence[Item], seed: int = 0,
                  progress: bool = True) -> dict[str, list]:
    """Each clip of `items` in each onset condition, streamed through the pipeline (RecordingResults)."""
    from earwitness.training.streaming import run_blocks

    clips = [it for it in items if it.kind == "clips"]
    out: dict[str, list] = {c: [] for c in ONSET_CONDITIONS}
    for it in tqdm(clips, desc="eval onsets", disable=not progress):
        clip = load_audio(data_dir / it.path)
        for condition in ONSET_CONDITIONS:
            rng = np.random.default_rng(zlib.crc32(f"{seed}:{condition}:{it.path}".encode()))
            audio, floor_dbfs = onset_variant(clip, condition, rng)
            pad = None if floor_dbfs is None else (lambda n, db=floor_dbfs, r=rng: floor_noise(n, db, r))
            out[condition].append(run_blocks(config, detector, it, [audio], pad=pad))
    return out


def _group(entries: list[dict]) -> list[dict]:
    """False events grouped by (source file, condition): count and peak, loudest first."""
    groups: dict[tuple[str, str], dict] = {}
    for e in entries:
        g = groups.setdefault((e["path"], e["condition"]), {"path": e["path"], "class": e.get("class"),
                                                              "condition": e["condition"], "events": 0, "peak": 0.0})
        g["events"] += 1
        g["peak"] = round(max(g["peak"], float(e["peak"])), 4)
    return sorted(groups.values(), key=lambda g: (-g["peak"], g["path"], g["condition"]))


def home_figures(config, detector, data_dir: Path, items: Sequence[Item], results: list, is_negative,
                 long_day_hours: float = 24.0, seed: int = 0, progress: bool = True) -> dict:
    """Per label: `onset_false_alarms_per_hour` and `false_alarm_sources`; and the `long_day` figures."""
    from earwitness.training.long_day import long_day

    labels = list(detector.labels)
    onsets = onset_results(config, detector, data_dir, items, seed, progress)
    sources: dict[str, list[dict]] = {lb: [] for lb in labels}
    per_label: dict[str, dict] = {}
    for lb in labels:
        for condition, rs in [("plain", results)] + list(onsets.items()):
            for r in rs:
                if is_negative(r.item, lb):
                    sources[lb] += [{"path": r.item.path, "class": r.item.cls, "condition": condition, "peak": e[3]}
                                    for e in r.events if e[0] == lb]
        negs = [r for rs in onsets.values() for r in rs if is_negative(r.item, lb)]
        hours = sum(r.duration_s for r in negs) / 3600
        n = sum(1 for s in sources[lb] if s["condition"] in ONSET_CONDITIONS)
        per_label[lb] = {"onset_false_alarms_per_hour": n / hours if hours > 0 else None,
                         "_onset_false_events": n, "_onset_hours": hours}
    day = None
    if long_day_hours > 0:
        day, day_sources = long_day(config, detector, data_dir, items, long_day_hours, seed, progress)
        for lb in labels:
            sources[lb] += day_sources[lb]
        # The anomaly detector runs only in the long day: what still fires for it is listed there.
        day["false_alarm_sources"] = {lb: _group(entries) for lb, entries in day_sources.items() if lb not in labels}
    for lb in labels:
        per_label[lb]["false_alarm_sources"] = _group(sources[lb])
    return {"labels": per_label, "long_day": day}


def print_home(home: dict) -> None:
    """The onset and long-day figures, and what still fires."""
    print("\nonsets (after 0.5-1 s of silence / over a -70...-50 dBFS floor), negatives of each label:")
    for lb, d in home["labels"].items():
        rate = d["onset_false_alarms_per_hour"]
        print(f"  {lb:12s} {d['_onset_false_events']:4d} false events in {d['_onset_hours']:.2f} h"
              + ("" if rate is None else f" = {rate:.2f}/h"))
    day = home["long_day"]
    if day:
        print(f"\nlong day: {day['hours']:g} h, {day['household_sounds']} household sounds, "
              f"{day['quiet_floor_hours']:.2f} h of quiet floor")
        for lb, rate in day["false_alarms_per_24h"].items():
            recall = day["incident_recall"].get(lb)
            n = day.get("incidents", {}).get(lb, 0)
            print(f"  {lb:12s} false events/24 h " + ("     —" if rate is None else f"{rate:8.2f}") + "   incident recall "
                  + ("—" if recall is None else f"{recall:.3f} of {n}"))
        tta = day["time_to_alarm_ms"]
        if tta["p50"] is not None:
            first = day["time_to_alarm_from_first_sound_ms"]
            print(f"  time to alarm (from the break's loud onset): p50 {tta['p50']:.0f} ms, p95 {tta['p95']:.0f} ms; "
                  f"from its first sound: p50 {first['p50']:.0f} ms, p95 {first['p95']:.0f} ms")
        gate = day.get("gate")
        if gate:
            print(f"  with the energy gate: the model ran on {gate['model_windows_share']:.1%} of the windows; "
                  + ", ".join(f"{lb} incident recall {r:.3f} (without {gate['incident_recall_without'][lb]:.3f})"
                              for lb, r in gate["incident_recall"].items()))
    fired = {lb: d["false_alarm_sources"] for lb, d in home["labels"].items()} | (day or {}).get("false_alarm_sources", {})
    for lb, groups in fired.items():
        if groups:
            print(f"\nstill fires {lb}:")
            for s in groups:
                print(f"  {s['events']:4d} x peak {s['peak']:.3f}  {s['condition']:13s} {s['class'] or '':16s} {s['path']}")
