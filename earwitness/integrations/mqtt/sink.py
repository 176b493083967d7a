"""One MQTT hub's sink, with its own threads; nothing runs on the event loop.

`handle_event` queues the event message and returns at once. The hub's outbox writer thread
stores it in the durable outbox (the SQLite commit and fsync happen there, in order) and
hands it to the hub's thread (`session`), which publishes the outbox in order. A broker that is
down or refuses the credentials only delays that hub's messages.
"""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path

import structlog

from earwitness.config.mqtt import HubConfig
from earwitness.core.events import EventChange, SensorState
from earwitness.core.supervision import supervised_thread
from earwitness.guard.machine import GuardState
from earwitness.integrations.mqtt.outbox import Outbox, outbox_path
from earwitness.integrations.mqtt.retained import RetainedRecord, RetainedTopics, retained_path
from earwitness.integrations.mqtt.session import HubSession
from earwitness.integrations.mqtt.topics import Topics
from earwitness.integrations.sinks import SinkContext

log = structlog.get_logger(__name__)

CLOSE_JOIN_S = 0.9
ENDED_STATES = ("ended", "failed")
"""Sensor reasons of a source whose input is gone: its entities are unavailable until it is restarted."""


class MqttHubSink:
    """Sends events to one MQTT broker; see the module docstring."""

    def __init__(self, hub: HubConfig, context: SinkContext) -> None:
        self.hub = hub
        self.name = f"mqtt:{hub.name}"
        self._context = context
        config = context.config
        self._topics = Topics(hub.prefix, config.device_id)
        sources = [s for s in config.sources if hub.route.sources is None or s.name in hub.route.sources]
        self._source_names = {s.name for s in sources}
        labels = list(context.labels) if hub.route.labels is None else [l for l in hub.route.labels if l in context.labels]
        self._log = log.bind(hub=hub.name)
        self._session = HubSession(hub, self.name, context, self._topics, sources, labels, self._log)
        self._outbox: Outbox | None = None
        self._incoming: queue.SimpleQueue[tuple[bytes, tuple[str, str]] | None] = queue.SimpleQueue()
        """Event messages (and their live ON/OFF state) for the outbox writer thread, in order."""
        self._thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None

    # --- the sink interface (any thread) ---------------------------------------------

    def start(self) -> None:
        unknown = sorted(set(self.hub.route.labels or []) - set(self._context.labels))
        if unknown:
            self._log.warning("mqtt route names labels that no detector reports", labels=unknown)
        path = outbox_path(self._context.config.resolved_state_dir(), self.hub.name)
        limits = self.hub.outbox
        try:
            self._outbox = Outbox(path, self.hub.name, limits.max_messages, limits.max_age_s)
        except Exception as error:  # an unwritable state directory must not lose live alerts
            self._log.error("mqtt outbox cannot be opened, alerts are kept in memory only", path=str(path), error=str(error))
            self._outbox = Outbox(Path(":memory:"), self.hub.name, limits.max_messages, limits.max_age_s)
        pending = self._outbox.depth()
        if pending:
            self._log.info("mqtt outbox has pending alerts from before", pending=pending)
        record = RetainedRecord(retained_path(self._context.config.resolved_state_dir(), self.hub.name))
        self._session.open(self._outbox, RetainedTopics(record))
        health, stop = self._context.health, self._session.stop
        self._writer = supervised_thread(health, f"mqtt-outbox-{self.hub.name}", self._write, stop)
        self._writer.start()
        self._thread = supervised_thread(health, f"mqtt-{self.hub.name}", self._session.run, stop)
        self._thread.start()

    def handle_event(self, change: EventChange) -> None:
        event = change.event
        if not self._routed(event.source.name, event.label) or self._outbox is None:
            return
        payload = json.dumps(change.message(), separators=(",", ":")).encode()
        on = change.type != "end" and event.ended_at is None
        self._session.label(event.source.name, event.label, on)
        self._incoming.put((payload, (self._topics.state(event.source.name, event.label), "ON" if on else "OFF")))

    def handle_guard(self, state: GuardState, alarm: bool) -> None:
        self._session.guard(state, alarm)

    def handle_label_switch(self, source: str, label: str, on: bool) -> None:
        self._session.remote.switched(source, label)

    def handle_sensor(self, state: SensorState) -> None:
        if state.source.name in self._source_names:
            available = state.enabled or state.reason not in ENDED_STATES
            self._session.sensor(state.source.name, state.enabled, available)

    def close(self) -> None:
        """Store what is queued, send what can be sent quickly, publish `offline`, disconnect;
        unacked alerts stay in the outbox."""
        if self._writer is not None:
            self._incoming.put(None)
            self._writer.join(CLOSE_JOIN_S)
        self._session.stop.set()
        self._session.wake.set()
        if self._thread is not None:
            self._thread.join(CLOSE_JOIN_S)
            if self._thread.is_alive():
                self._log.warning("mqtt hub thread did not stop in time, leaving it behind")
                return
        if self._outbox is not None:
            self._outbox.close()

    # --- the outbox writer thread ----------------------------------------------------

    def _write(self) -> None:
        """Store each queued event message in the outbox, in order, then wake the hub's thread."""
        assert self._outbox is not None
        while (item := self._incoming.get()) is not None:
            payload, live = item
            try:
                seq = self._outbox.add(self._topics.events, payload)
            except Exception:
                self._log.exception("mqtt outbox cannot store an alert")
                continue
            self._session.stored(seq, live)

    def _routed(self, source: str, label: str) -> bool:
        route = self.hub.route
        return (route.sources is None or source in route.sources) and (route.labels is None or label in route.labels)

