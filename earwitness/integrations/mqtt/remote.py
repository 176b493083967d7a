"""Feedback and label switches on one MQTT hub (with `allow_remote_control`), and the optional `hearing` telemetry.

`<prefix>/<device>/feedback` takes `{"id": "<event id>", "verdict": "false_alarm" | "confirmed"}` (a verdict on
one event) or `{"source": "<source>", "label": "<label>", "verdict": "false_alarm"}` (Home Assistant's
"Not <label>" button: that source's most recent event of the label). `<prefix>/<device>/<source>/<label>/switch/set`
(ON/OFF) switches a label at a source; its state is retained on `.../<label>/switch`. Commands are cleared from
the broker first (`commands.take_once`) and go to the daemon's ordered control path. Called from the hub's threads.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from structlog.typing import FilteringBoundLogger

from earwitness.config import HubConfig
from earwitness.core.feedback import VERDICTS, FeedbackError
from earwitness.integrations.mqtt.commands import sensor_command
from earwitness.integrations.mqtt.topics import Topics
from earwitness.integrations.sinks import SinkContext

MAX_PAYLOAD = 4096
HEARING_INTERVAL_S = 1.0


def parse_feedback(payload: bytes) -> dict[str, Any]:
    """The command as the daemon's `Feedback.handle` takes it; FeedbackError says what is wrong with it."""
    if len(payload) > MAX_PAYLOAD:
        raise FeedbackError(f"feedback payload longer than {MAX_PAYLOAD} bytes")
    try:
        message = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise FeedbackError(f"feedback payload is not JSON: {error}") from None
    if not isinstance(message, dict):
        raise FeedbackError('feedback payload must be a JSON object: {"id": "<event id>", "verdict": "false_alarm"}')
    verdict = message.get("verdict")
    if verdict not in VERDICTS:
        raise FeedbackError(f"feedback verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    if isinstance(message.get("id"), str) and message["id"]:
        return {"action": "verdict", "id": message["id"], "verdict": verdict}
    if isinstance(message.get("source"), str) and isinstance(message.get("label"), str):
        return {"action": "latest", "source": message["source"], "label": message["label"], "verdict": verdict}
    raise FeedbackError('feedback payload needs "id" (the event\'s id), or "source" and "label"')


class HubRemote:
    """What the hub's thread publishes and takes for remote control (sensor and label switches, feedback) and hearing."""

    def __init__(self, hub: HubConfig, topics: Topics, context: SinkContext, sources: set[str], labels: list[str],
                 log: FilteringBoundLogger, wake: threading.Event) -> None:
        self._hub = hub
        self._topics = topics
        self._context = context
        self._sources = sources
        self._labels = labels
        self._log = log
        self._wake = wake
        """The hub thread's: set when a switch state is due."""
        self._lock = threading.Lock()
        self._dirty: set[tuple[str, str]] = set()
        self._last_hearing = 0.0

    # --- from the dispatcher (any thread) ------------------------------------------------

    def switched(self, source: str, label: str) -> None:
        """A label was switched at a source: its state is due if this hub shows that switch."""
        if (source, label) in self.switches():
            with self._lock:
                self._dirty.add((source, label))
            self._wake.set()

    # --- the hub's thread -----------------------------------------------------------------

    def switches(self) -> set[tuple[str, str]]:
        """The label switches this hub shows (their entities exist only with remote control)."""
        if not self._hub.allow_remote_control or self._context.label_on is None:
            return set()
        return {(source, label) for source in self._sources for label in self._labels}

    def connected(self, client: paho.Client) -> None:
        if not self._hub.allow_remote_control:
            return
        client.subscribe(self._topics.sensor_set_filter, qos=1)
        if self._context.feedback is not None:
            client.subscribe(self._topics.feedback, qos=1)
        if self._context.set_label is not None:
            client.subscribe(self._topics.label_switch_set_filter, qos=1)

    def announce(self) -> set[str]:
        """Every switch's state is due again; the retained topics it keeps."""
        shown = self.switches()
        with self._lock:
            self._dirty = set(shown)
        return {self._topics.label_switch(source, label) for source, label in shown}

    def send(self, client: paho.Client, retain: Callable[[paho.Client, str, str], None]) -> None:
        """The switch states that are due (retained), and the hearing telemetry at most once a second."""
        with self._lock:
            due, self._dirty = self._dirty, set()
        label_on = self._context.label_on
        if label_on is not None:
            for source, label in sorted(due):
                retain(client, self._topics.label_switch(source, label), "ON" if label_on(source, label) else "OFF")
        now = time.monotonic()
        if not self._hub.hearing or now - self._last_hearing < HEARING_INTERVAL_S:
            return
        self._last_hearing = now
        for name, stats in list(self._context.health.sources.items()):
            heard = stats.hearing
            if name in self._sources and stats.state == "listening" and heard is not None:
                payload = {key: heard[key] for key in ("at", "level_dbfs", "top_labels")}
                client.publish(self._topics.hearing(name), json.dumps(payload, separators=(",", ":")), qos=0, retain=False)

    def is_command(self, topic: str) -> bool:
        return topic == self._topics.feedback

    def take(self, topic: str, payload: str) -> None:
        """Apply a sensor, label switch or feedback command (already cleared from the broker) if it is one."""
        if not self._hub.allow_remote_control:
            return
        sensor = sensor_command(self._topics, topic, payload, self._sources, self._log)
        if sensor is not None:
            self._context.set_sensor(*sensor)
        elif topic == self._topics.feedback:
            if self._context.feedback is not None:
                self._feedback(payload)
        else:
            parts = topic.split("/")
            if len(parts) >= 4 and topic == self._topics.label_switch_set(parts[-4], parts[-3]) \
                    and self._context.set_label is not None:
                self._label_command(parts[-4], parts[-3], payload)

    def _label_command(self, source: str, label: str, payload: str) -> None:
        shown = payload[:64]
        if source not in self._sources or label not in self._labels:
            self._log.warning("mqtt label switch command ignored: unknown or unrouted source or label", source=source,
                              label=label, payload=shown)
        elif payload.upper() not in ("ON", "OFF"):
            self._log.warning("mqtt label switch command ignored: payload must be ON or OFF", source=source,
                              label=label, payload=shown)
        else:
            assert self._context.set_label is not None
            self._context.set_label(source, label, payload.upper() == "ON")

    def _feedback(self, payload: str) -> None:
        """A verdict on an event, for the daemon's control path (a retained one was cleared, not applied)."""
        try:
            command = parse_feedback(payload.encode())
        except FeedbackError as error:
            self._log.warning("mqtt feedback ignored", error=str(error), payload=payload[:64])
            return
        if command.get("source") is not None and command["source"] not in self._sources:
            self._log.warning("mqtt feedback ignored: unknown or unrouted source", source=command["source"])
            return
        assert self._context.feedback is not None
        self._context.feedback(command)
