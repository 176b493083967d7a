"""Events and the changes (start, update, end) that sinks receive."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Literal

ChangeType = Literal["start", "update", "end"]


@dataclass(frozen=True)
class SourceInfo:
    """Where audio comes from: the source's name and the place it listens to."""

    name: str
    location: str


@dataclass(frozen=True)
class Event:
    """One detected sound event, from its start to its end.

    `start_s`/`end_s` are stream offsets; `started_at`/`ended_at` wall-clock UTC.
    `score` is the peak score so far. `details` carries optional context
    (for example the top known labels of an anomaly, or a clip path).
    """

    label: str
    source: SourceInfo
    device: str
    model: str
    score: float
    start_s: float
    started_at: datetime
    end_s: float | None = None
    ended_at: datetime | None = None
    caption: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    details: dict[str, Any] = field(default_factory=dict)

    def evolve(self, **changes: Any) -> Event:
        return replace(self, **changes)

    def message(self, change: ChangeType) -> dict[str, Any]:
        """The event message of the public schema (MQTT `events` topic, JSON-lines sink).

        With clip files on (`clips.enabled`), it also carries `clip`: the FLAC path, null until written.
        Where the detector names what else it hears (the classifier's AudioSet classes, the anomaly's
        nearest known labels), it carries `top_labels`: [{"name", "score"}], best first.
        Where false-alarm feedback was weighed for it, it carries `feedback`: {"suppressed", "reason", "similarity"}.
        """
        message = {
            "id": self.id,
            "type": change,
            "device": self.device,
            "source": self.source.name,
            "location": self.source.location,
            "label": self.label,
            "score": round(self.score, 4),
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at) if self.ended_at else None,
            "caption": self.caption,
            "model": self.model,
        }
        if "clip_path" in self.details:
            message["clip"] = self.details["clip_path"]
        if "guard" in self.details:  # a watched label at a vehicle source: the car guard's state as it began
            message["guard"] = self.details["guard"]
        top = self.details.get("top_labels")
        if top:
            pairs = top.items() if isinstance(top, dict) else top
            message["top_labels"] = [{"name": str(name), "score": score} for name, score in pairs]
        if "feedback" in self.details:
            message["feedback"] = self.details["feedback"]
        return message


@dataclass(frozen=True)
class EventChange:
    """A start, update or end of an event, as handed to sinks."""

    type: ChangeType
    event: Event

    def message(self) -> dict[str, Any]:
        return self.event.message(self.type)


@dataclass(frozen=True)
class SensorState:
    """The privacy switch of one source: whether its sensor is on."""

    source: SourceInfo
    enabled: bool
    reason: str


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
