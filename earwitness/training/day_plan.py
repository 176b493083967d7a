"""The long day's plan and its audio: a seeded synthetic day at home (see `long_day`).

The day is stitched from the validation background recordings (30-180 s stretches at their
recorded level) and from stretches of a quiet floor (white noise at -70...-50 dBFS: the house at
night), with a validation household sound (a clip positive for no label) every 20-60 s: at
0-20 dB SNR over a recording, or at -50...-20 dBFS (active RMS) over a quiet floor. Incidents:
every validation positive of a label (glass breaks; for scratch the real scratches, class
`scratch`) placed twice in the gaps between household sounds: once over a recording at 0-20 dB SNR
(`snr`), once over a quiet floor at -45...-30 dBFS peak (`quiet`; never under 0 dB SNR), each at
least -45 dBFS peak (when the day runs out of one kind of stretch, the other takes its incidents;
over a floor an `snr` incident plays at -50...-20 dBFS). It is rendered chunk by chunk: no more
than the stretch being played and its sounds is in memory. Only the manifest is read to plan it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from earwitness import SAMPLE_RATE
from earwitness.training.augment import HOP, active_rms, activity, frame_energy_db
from earwitness.training.data import SCRATCH_LIKE, Item, label_of, load_audio

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
LOUD_ONSET_DB = 10.0
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
    onset_s: float  # first active sample
    loud_onset_s: float  # first frame within LOUD_ONSET_DB of the loudest: where a break begins
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


def loud_onset(clip: np.ndarray) -> int:
    """The sample where the clip's loud part begins: its first 25 ms frame (10 ms hop) within
    `LOUD_ONSET_DB` of its loudest frame."""
    energy = frame_energy_db(clip)
    return int(np.argmax(energy >= energy.max() - LOUD_ONSET_DB)) * HOP


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
        loud = loud_onset(clip) if sound.label is not None else first
        self.placed.append(Placed(sound, (sound.start + first) / SAMPLE_RATE, (sound.start + loud) / SAMPLE_RATE,
                                  (sound.start + len(clip)) / SAMPLE_RATE,
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
