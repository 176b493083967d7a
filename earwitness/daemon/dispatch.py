"""Fans each event change and sensor state out to every sink; a failing sink never stops the others."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog

from earwitness.core.events import EventChange, SensorState
from earwitness.core.health import Health
from earwitness.guard.machine import GuardState
from earwitness.integrations.sinks import Sink

log = structlog.get_logger(__name__)


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
            self._call(sink, "guard", sink.handle_guard, state, alarm)

    def label_switch(self, source: str, label: str, on: bool) -> None:
        """A label was switched at a source: sinks that show switches (the MQTT hubs) are told."""
        log.info("label switch", source=source, label=label, on=on)
        for sink in self.sinks:
            handler = getattr(sink, "handle_label_switch", None)
            if handler is not None:
                self._call(sink, "label switch", handler, source, label, on)

    def close(self) -> None:
        for sink in self.sinks:
            self._call(sink, "close", sink.close)

    @staticmethod
    def _call(sink: Sink, what: str, handler: Callable[..., None], *args: Any) -> None:
        try:
            handler(*args)
        except Exception:
            log.exception("sink failed", sink=sink.name, action=what)
