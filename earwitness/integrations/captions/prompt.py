"""What a captioner is given: the event's facts as a prompt, and the template caption."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from earwitness.core.clips import CLIP_KEY, EventClip
from earwitness.core.events import Event

LABEL_PHRASES = {
    "loud": "Loud sound",
    "glass_break": "Glass breaking",
    "glass-break": "Glass breaking",
    "scratch": "Scratching",
    "anomaly": "Unusual sound",
    "unusual": "Unusual sound",
}


# --- what a captioner is given -------------------------------------------------------


@dataclass(frozen=True)
class CaptionRequest:
    """An event to caption, with its audio clip (pre-roll included) when the pipeline kept one."""

    event: Event
    clip: EventClip | None = None

    @classmethod
    def of(cls, event: Event) -> CaptionRequest:
        clip = event.details.get(CLIP_KEY)
        return cls(event, clip if isinstance(clip, EventClip) else None)


def top_labels(event: Event) -> list[tuple[str, float | None]]:
    """The other likely labels from `event.details["top_labels"]`, best first, the event's own label left out.

    Accepted shapes: {label: score}, [[label, score], ...], [{"label": ..., "score": ...}, ...], [label, ...].
    """
    raw = event.details.get("top_labels")
    pairs: list[tuple[str, float | None]] = []
    if isinstance(raw, dict):
        pairs = [(str(k), _number(v)) for k, v in raw.items()]
    elif isinstance(raw, (list, tuple)):
        for item in raw:
            if isinstance(item, str):
                pairs.append((item, None))
            elif isinstance(item, dict) and "label" in item:
                pairs.append((str(item["label"]), _number(item.get("score"))))
            elif isinstance(item, (list, tuple)) and item:
                pairs.append((str(item[0]), _number(item[1]) if len(item) > 1 else None))
    if any(score is not None for _, score in pairs):
        pairs.sort(key=lambda pair: -(pair[1] or 0.0))
    return [(label, score) for label, score in pairs if label != event.label][:5]


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _words(name: str) -> str:
    return re.sub(r"[_-]+", " ", name).strip()


def label_phrase(label: str) -> str:
    phrase = LABEL_PHRASES.get(label.lower())
    if phrase:
        return phrase
    words = _words(label) or label
    return words[0].upper() + words[1:]


def duration_text(request: CaptionRequest) -> str | None:
    known = known_duration(request)
    if known is not None:
        return f"{known} ({'it has ended' if request.event.end_s is not None else 'still going on'})"
    if request.clip is not None:
        return f"{request.clip.event_duration_s:.1f} s so far (still going on)"
    return None


def loudness_text(clip: EventClip | None) -> str | None:
    if clip is None:
        return None
    levels = clip.levels()
    peak, rms, background = levels["peak_dbfs"], levels["rms_dbfs"], levels["background_dbfs"]
    if peak is None or rms is None:
        return None
    text = f"peak {peak:.1f} dBFS, RMS {rms:.1f} dBFS"
    if background is not None:
        text += ", " + relative_level_text(rms - background)
    return text


def relative_level_text(difference_db: float) -> str:
    """The event's level against the background before it, in words that are right for quiet events too."""
    rounded = round(difference_db)
    if rounded == 0:
        return "about as loud as the background before it"
    return f"{abs(rounded)} dB {'above' if rounded > 0 else 'below'} the background before it"


def event_context(request: CaptionRequest) -> str:
    """The event's context, as the text the model is given."""
    event = request.event
    local = event.started_at.astimezone()
    lines = [
        "A sound event was detected.",
        f"Detected label: {event.label} (score {event.score:.2f})",
    ]
    others = top_labels(event)
    if others:
        lines.append("Other likely labels: " + ", ".join(
            label if score is None else f"{label} ({score:.2f})" for label, score in others))
    lines.append(f"Source: {event.source.name}; location: {_words(event.source.location)}")
    lines.append(f"Local time: {local:%Y-%m-%d %H:%M:%S %Z}, {local:%A}".replace("  ", " "))
    duration = duration_text(request)
    if duration:
        lines.append(f"Duration: {duration}")
    loudness = loudness_text(request.clip)
    if loudness:
        lines.append(f"Loudness: {loudness}")
    return "\n".join(lines)


def known_duration(request: CaptionRequest) -> str | None:
    """How long the event lasted, once that is known: `1.5 s` when it has ended, `at least 10.0 s` when its
    clip reached its maximum length while it went on (a `complete` caption is made then)."""
    event, clip = request.event, request.clip
    if event.end_s is not None:
        return f"{max(0.0, event.end_s - event.start_s):.1f} s"
    if clip is not None and clip.capped:
        return f"at least {clip.event_duration_s:.1f} s"
    return None


_GIVES_DURATION = re.compile(r"\d\s*(?:s|secs?|seconds?)\b", re.IGNORECASE)
_FINAL_STOP = re.compile(r"[.!?…]+$")


def with_duration(caption: str, request: CaptionRequest) -> str:
    """The caption stating the event's duration when it is known: a model's caption seldom says it."""
    duration = known_duration(request)
    if duration is None or not caption or _GIVES_DURATION.search(caption):
        return caption
    stop = _FINAL_STOP.search(caption)
    return f"{caption[: stop.start()] if stop else caption} ({duration}){stop.group() if stop else '.'}"


def template_caption(request: CaptionRequest) -> str:
    """A deterministic caption from the detector's findings; always available."""
    event = request.event
    local = event.started_at.astimezone()
    caption = f"{label_phrase(event.label)} at {_words(event.source.location)} ({event.source.name}), {local:%H:%M:%S}"
    duration = known_duration(request)
    if duration is not None:
        caption += f", {duration}"
    others = top_labels(event)
    if others:
        caption += "; possibly also " + ", ".join(_words(label) for label, _ in others[:3])
    return caption + "."

