"""The sink interface, the dispatcher that fans events out, and the JSON-lines sink."""

from __future__ import annotations

import json
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, TextIO

import structlog

from earwitness.config import Config, JsonLinesConfig
from earwitness.core.events import EventChange, SensorState
from earwitness.core.health import Health
from earwitness.guard.machine import GuardInput, GuardState

log = structlog.get_logger(__name__)


class Sink(Protocol):
    """Receives event changes and sensor states. Handlers must return quickly and be thread-safe.

    A sink that publishes the car guard's state also has `handle_guard(state, alarm)`."""

    name: str

    def start(self) -> None: ...

    def handle_event(self, change: EventChange) -> None: ...

    def handle_sensor(self, state: SensorState) -> None: ...

    def close(self) -> None:
        """Flush what is pending and release resources."""
        ...


@dataclass
class SinkContext:
    """What sinks may need from the daemon besides the config."""

    config: Config
    health: Health
    dispatch: Callable[[EventChange], None]
    """Hand a new change (for example a caption update) to every sink."""
    set_sensor: Callable[[str, bool], None]
    """Switch a source's sensor on or off at run time (remote control)."""
    labels: list[str]
    """The labels the detectors can report (every source has the same detectors)."""
    guard_input: Callable[[GuardInput], None] | None = None
    """Hand vehicle state and ARM/DISARM to the guard (through the daemon's control queue); None: no guard."""


class Dispatcher:
    """Fans every change out to all sinks; a failing sink is logged and never stops the others.

    It remembers the latest state of recent events, so that a caption, once sent, stays on every
    later change of that event (the tracker's own copy has none), and a caption update that comes
    late carries the event's latest state (for example its end) rather than an older one.
    """

    RECENT_EVENTS = 1024

    def __init__(self, sinks: list[Sink], health: Health) -> None:
        self.sinks = sinks
        self._health = health
        self._recent: OrderedDict[str, EventChange] = OrderedDict()

    def start(self) -> None:
        for sink in self.sinks:
            self._call(sink, "start", sink.start)

    def event(self, change: EventChange) -> None:
        change = self._with_caption(change)
        log.info(
            "event", change=change.type, label=change.event.label, source=change.event.source.name,
            score=round(change.event.score, 3), id=change.event.id,
        )
        self._health.last_event = change.message()
        for sink in self.sinks:
            self._call(sink, "event", sink.handle_event, change)

    def _with_caption(self, change: EventChange) -> EventChange:
        event = change.event
        previous = self._recent.get(event.id)
        if previous is not None:
            if event.caption is not None and change.type == "update":
                event = previous.event.evolve(caption=event.caption)
            elif event.caption is None and previous.event.caption is not None:
                event = event.evolve(caption=previous.event.caption)
            if event is not change.event:
                change = EventChange(change.type, event)
        private = [key for key in event.details if key.startswith("_")]
        kept = event.evolve(details={k: v for k, v in event.details.items() if k not in private}) if private else event
        self._recent[event.id] = EventChange(change.type, kept)  # without in-memory extras such as audio
        self._recent.move_to_end(event.id)
        while len(self._recent) > self.RECENT_EVENTS:
            self._recent.popitem(last=False)
        return change

    def sensor(self, state: SensorState) -> None:
        log.info("sensor", source=state.source.name, enabled=state.enabled, reason=state.reason)
        for sink in self.sinks:
            self._call(sink, "sensor", sink.handle_sensor, state)

    def guard(self, state: GuardState, alarm: bool) -> None:
        """The guard's new state, to the sinks in order (the guard's hub is first among the hubs)."""
        for sink in self.sinks:
            handle = getattr(sink, "handle_guard", None)
            if handle is not None:
                self._call(sink, "guard", handle, state, alarm)

    def close(self) -> None:
        for sink in self.sinks:
            self._call(sink, "close", sink.close)

    @staticmethod
    def _call(sink: Sink, what: str, handler: Callable[..., None], *args: Any) -> None:
        try:
            handler(*args)
        except Exception:
            log.exception("sink failed", sink=sink.name, action=what)


class JsonLinesSink:
    """Writes one JSON object per line: event messages (with stream offsets) and sensor states."""

    name = "jsonl"

    def __init__(self, config: JsonLinesConfig) -> None:
        self._path = config.path
        self._lock = threading.Lock()
        self._stream: TextIO | None = None

    def start(self) -> None:
        if self._path == "-":
            self._stream = sys.stdout
        else:
            path = Path(self._path).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = path.open("a", encoding="utf-8")

    def handle_event(self, change: EventChange) -> None:
        message = change.message()
        message["start_s"] = round(change.event.start_s, 3)
        message["end_s"] = None if change.event.end_s is None else round(change.event.end_s, 3)
        self._write(message)

    def handle_sensor(self, state: SensorState) -> None:
        self._write({"type": "sensor", "source": state.source.name, "location": state.source.location,
                     "enabled": state.enabled, "reason": state.reason})

    def _write(self, message: dict[str, Any]) -> None:
        with self._lock:
            if self._stream is None:
                return
            self._stream.write(json.dumps(message) + "\n")
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._stream is not None and self._stream is not sys.stdout:
                self._stream.close()
            self._stream = None


def build_sinks(context: SinkContext) -> list[Sink]:
    """The sinks the config enables."""
    sinks: list[Sink] = []
    outputs = context.config.outputs
    if outputs.jsonl.enabled:
        sinks.append(JsonLinesSink(outputs.jsonl))
    if context.config.captions.backend != "none":
        from earwitness.integrations.captions import CaptionSink

        sinks.append(CaptionSink(context))
    if context.config.hubs:
        from earwitness.integrations.mqtt import build_mqtt_sinks

        sinks.extend(build_mqtt_sinks(context))
    return sinks
