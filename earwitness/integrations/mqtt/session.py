"""One hub's thread: connects (with exponential backoff), publishes the outbox in order (each message
deleted on its PUBACK), keeps the retained topics and takes remote commands (`commands`).

The network I/O runs in paho's own thread (`loop_start`), which waits on the socket; this thread
sleeps until there is something to do (a new message, an acknowledgement, a command) and wakes
once a second for the health figures: no polling. At each connection, and when Home Assistant
comes online (its birth message), it publishes discovery and every current state (privacy switch,
source availability, each label's ON/OFF; a quiet label reads OFF), then clears the retained
topics it published before that the config no longer has (`retained`).
"""

from __future__ import annotations

import contextlib
import queue
import random
import threading
import time
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from earwitness.config import SourceConfig
from earwitness.config.mqtt import HubConfig
from earwitness.guard.machine import GuardState
from earwitness.integrations.mqtt.commands import take_once
from earwitness.integrations.mqtt.connection import (
    CREDENTIAL_REASONS,
    MAX_INFLIGHT,
    Callbacks,
    ConnectFailed,
    close_socket,
    open_client,
)
from earwitness.integrations.mqtt.discovery import discovery_messages
from earwitness.integrations.mqtt.guard_link import HubGuard
from earwitness.integrations.mqtt.outbox import Outbox
from earwitness.integrations.mqtt.remote import HubRemote
from earwitness.integrations.mqtt.retained import RetainedTopics
from earwitness.integrations.mqtt.topics import Topics
from earwitness.integrations.sinks import SinkContext

CONNACK_TIMEOUT_S = 10.0
HEALTH_INTERVAL_S = 1.0
CLOSE_FLUSH_S = 0.3
"""On close: how long pending alerts may still be sent, then as long again for `offline`."""


class HubSession:
    """The hub's thread (`run`) and what the sink hands it: stored alerts (`stored`) and sensor states (`sensor`)."""

    def __init__(self, hub: HubConfig, name: str, context: SinkContext, topics: Topics, sources: list[SourceConfig],
                 labels: list[str], log: structlog.typing.FilteringBoundLogger) -> None:
        self.hub = hub
        self.name = name
        self._context = context
        self._device = context.config.device_id
        self._topics = topics
        self._client_id = hub.client_id or f"earwitness-{self._device}-{hub.name}"
        self._sources = sources
        self._source_names = {s.name for s in sources}
        self._labels = labels
        self._log = log
        self._guard: HubGuard | None = None
        """The car guard's topics, on the hub the guard uses."""
        if context.config.guard.enabled and context.guard_input is not None:
            self._guard = HubGuard(hub, context.config.guard, topics, context.guard_input, log)
        self.outbox: Outbox | None = None
        self._live: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._acks: queue.SimpleQueue[tuple[int, ReasonCode | None]] = queue.SimpleQueue()
        """PUBACKs from paho's network thread, for the hub's thread."""
        self.wake = threading.Event()
        """Set when the hub's thread has something to do."""
        self.remote = HubRemote(hub, topics, context, self._source_names, labels, log, self.wake)
        self.stop = threading.Event()
        self._sensors: dict[str, bool] = {}
        self._available: dict[str, bool] = {s.name: True for s in sources}
        self._sensors_dirty: set[str] = set()
        self._labels_on: dict[tuple[str, str], bool] = {}
        """Each routed (source, label)'s current ON/OFF, re-published at every announce."""
        self._retained: RetainedTopics | None = None
        self._lock = threading.Lock()
        # Owned by the hub's thread:
        self._state = "stopped"
        self._error: str | None = None
        self._connack: ReasonCode | None = None
        self._lost = False
        self._inflight: dict[int, int] = {}
        self._cursor = 0
        """The newest outbox message sent on this connection."""
        self._newest = 0
        """The newest outbox message written: nothing to read from the outbox while it equals the cursor."""
        self._announce = False
        self._published = 0
        self._last_health = 0.0

    def open(self, outbox: Outbox, retained: RetainedTopics) -> None:
        """Publish from this outbox, and remember retained topics with `retained` (before the thread starts)."""
        self.outbox = outbox
        self._newest = outbox.newest()
        self._retained = retained
        self._set_state("disconnected")

    def stored(self, seq: int, live: tuple[str, str]) -> None:
        """An alert is in the outbox as `seq`; `live` is its ON/OFF state message (called by the writer thread)."""
        self._newest = seq
        self._live.put(live)
        self.wake.set()

    def guard(self, state: GuardState, alarm: bool) -> None:
        if self._guard is not None:
            self._guard.update(state, alarm)
            self.wake.set()

    def label(self, source: str, label: str, on: bool) -> None:
        """A routed label's current state, re-published (retained) at every announce."""
        with self._lock:
            self._labels_on[(source, label)] = on

    def sensor(self, source: str, enabled: bool, available: bool) -> None:
        """A source's privacy switch, and whether its input is there at all (not ended or failed for good)."""
        with self._lock:
            self._sensors[source] = enabled
            self._available[source] = available
            self._sensors_dirty.add(source)
        self.wake.set()

    def run(self) -> None:
        """The hub's thread: one connection after another until `stop` is set."""
        delay = self.hub.reconnect_min_s
        while not self.stop.is_set():
            try:
                connected = self._session()
            except Exception as error:
                self._log.exception("mqtt hub failed, will reconnect")
                self._error, connected = f"{type(error).__name__}: {error}", False
            if self._guard is not None:
                self._guard.disconnected()
            if self.stop.is_set():
                break
            delay = self.hub.reconnect_min_s if connected else delay
            wait = delay * random.uniform(0.8, 1.0)
            self._set_state(self._state if self._state == "refused" else "disconnected")
            self._log.info("mqtt reconnecting", in_s=round(wait, 2))
            self.stop.wait(wait)
            delay = min(delay * 2, self.hub.reconnect_max_s)
        self._set_state("stopped")

    def _session(self) -> bool:
        """One connection, from connect to its end; True if the broker accepted it."""
        hub = self.hub
        self._set_state("connecting")
        self._log.info("mqtt connecting", host=hub.host, port=hub.effective_port, tls=hub.tls is not None,
                       protocol=hub.protocol, client_id=self._client_id)
        self._connack, self._lost = None, False
        try:
            callbacks = Callbacks(self._on_connect, self._on_disconnect, self._on_publish, self._on_message)
            client = open_client(hub, self._client_id, self._topics.status, callbacks)
        except ConnectFailed as failure:
            self._fail(failure.what, failure.detail)
            return False
        client.loop_start()
        try:
            return self._converse(client)
        finally:
            with contextlib.suppress(Exception):
                client.disconnect()  # wakes paho's thread, which then ends (a no-op when the connection is gone)
            client.loop_stop()
            close_socket(client)

    def _converse(self, client: paho.Client) -> bool:
        deadline = time.monotonic() + CONNACK_TIMEOUT_S
        while True:
            self.wake.clear()
            if self._connack is not None:
                break
            if self.stop.is_set():
                return False
            if self._lost:
                self._fail("mqtt connect failed", "connection closed before the broker answered (no CONNACK)")
                return False
            if time.monotonic() > deadline:
                self._fail("mqtt broker did not answer the connect", "CONNACK timeout")
                return False
            self.wake.wait(deadline - time.monotonic())
        if self._connack.is_failure:
            if self._connack.value in CREDENTIAL_REASONS:
                self._set_state("refused")
                self._error = f"credentials refused: {self._connack}"
                self._log.error("mqtt broker refused the credentials: check username and password",
                                host=self.hub.host, username=self.hub.username, reason=str(self._connack))
            else:
                self._fail("mqtt broker refused the connection", str(self._connack))
            return False
        self._on_connected(client)
        while not self.stop.is_set():
            self.wake.clear()
            self._take_acks()
            self._send(client)
            if self._lost or not client.is_connected():
                self._fail("mqtt connection lost", self._error or "socket closed")
                return True
            self._update_health()
            self.wake.wait(HEALTH_INTERVAL_S)
        self._goodbye(client)
        return True

    def _on_connected(self, client: paho.Client) -> None:
        self._inflight.clear()
        while not self._acks.empty():  # of the previous connection's messages: they are sent again
            self._acks.get_nowait()
        self._cursor = 0
        self._error = None
        while not self._live.empty():  # ON/OFF from while it was down are stale; the outbox has the events
            self._live.get_nowait()
        self._set_state("connected")
        assert self.outbox is not None
        self._log.info("mqtt connected", host=self.hub.host, pending=self.outbox.depth())
        client.publish(self._topics.status, "online", qos=1, retain=True)
        if self.hub.discovery.enabled:
            client.subscribe(f"{self.hub.discovery.prefix}/status", qos=1)
        self.remote.connected(client)
        if self._guard is not None:
            self._guard.connected(client)
        self._announce = True

    def _send(self, client: paho.Client) -> None:
        """Publish what is due: discovery, sensor states, live ON/OFF, then the outbox in order."""
        hub = self.hub
        if self._announce:
            self._announce = False
            self._announce_all(client)
        with self._lock:
            dirty = {name: (self._sensors[name], self._available[name]) for name in self._sensors_dirty if name in self._sensors}
            self._sensors_dirty.clear()
        for source, (enabled, available) in dirty.items():
            self._retain(client, self._topics.sensor(source), "enabled" if enabled else "disabled")
            self._retain(client, self._topics.availability(source), "online" if available else "offline")
        if self._guard is not None:
            self._guard.send(client)
        self.remote.send(client, self._retain)
        while not self._live.empty():
            topic, payload = self._live.get_nowait()
            self._retain(client, topic, payload, hub.qos)
        assert self._retained is not None and self.outbox is not None
        self._retained.save()
        room = MAX_INFLIGHT - len(self._inflight)
        if room <= 0 or self._newest <= self._cursor:
            return
        for message in self.outbox.after(self._cursor, room):
            properties = None
            if hub.protocol == "5":
                properties = Properties(PacketTypes.PUBLISH)
                remaining = hub.outbox.max_age_s - message.age_s
                properties.MessageExpiryInterval = max(1, int(remaining))
            info = client.publish(message.topic, message.payload, qos=hub.qos, retain=False, properties=properties)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._log.warning("mqtt publish failed, will retry", rc=str(info.rc))
                return
            self._cursor = message.seq
            self._inflight[info.mid] = message.seq

    def _announce_all(self, client: paho.Client) -> None:
        """Discovery, then every current state, then the clearing of retained topics the config no longer has."""
        hub = self.hub
        published: set[str] = set()
        if hub.discovery.enabled:
            messages = discovery_messages(hub, self._device, [(s.name, s.location) for s in self._sources], self._labels,
                                          guard=self._guard is not None)
            for topic, payload in messages:
                self._retain(client, topic, payload)
                if payload:
                    published.add(topic)
            self._log.info("mqtt discovery announced", prefix=hub.discovery.prefix, configs=len(messages))
        with self._lock:
            self._sensors_dirty = set(self._sensors)
            labels_on = dict(self._labels_on)
        for source in self._sources:
            for label in self._labels:
                topic = self._topics.state(source.name, label)
                self._retain(client, topic, "ON" if labels_on.get((source.name, label)) else "OFF", hub.qos)
                published.add(topic)
            published |= {self._topics.sensor(source.name), self._topics.availability(source.name)}
        published |= self.remote.announce()
        assert self._retained is not None
        if self._guard is not None:  # its state is published (retained) by the guard's side of the hub
            published.add(self._topics.guard)
            self._retained.keep(self._topics.guard)
        stale = self._retained.clear_stale(client, published, hub.discovery.prefix)
        if stale:
            self._log.info("mqtt cleared retained topics the config no longer has", count=len(stale), topics=stale[:20])

    def _retain(self, client: paho.Client, topic: str, payload: str, qos: int = 1) -> None:
        assert self._retained is not None
        self._retained.publish(client, topic, payload, qos)

    def _take_acks(self) -> None:
        """Forget the outbox messages the broker has acknowledged (PUBACKs queued by paho's thread)."""
        assert self.outbox is not None
        while not self._acks.empty():
            mid, reason = self._acks.get_nowait()
            seq = self._inflight.pop(mid, None)
            if seq is None:
                continue
            if reason is not None and reason.is_failure:
                self._log.warning("mqtt broker rejected an alert; it stays in the outbox", reason=str(reason), seq=seq)
                continue
            self.outbox.ack(seq)
            self._published += 1

    def _goodbye(self, client: paho.Client) -> None:
        """Stopping: a short flush of the outbox, then `offline`, then a clean disconnect."""
        deadline = time.monotonic() + CLOSE_FLUSH_S
        while time.monotonic() < deadline and not self._lost:
            self.wake.clear()
            self._take_acks()
            self._send(client)
            if not self._inflight:
                break
            self.wake.wait(max(0.0, deadline - time.monotonic()))
        info = client.publish(self._topics.status, "offline", qos=1, retain=True)
        with contextlib.suppress(Exception):
            info.wait_for_publish(CLOSE_FLUSH_S)
        client.disconnect()
        assert self.outbox is not None
        self._log.info("mqtt disconnected", pending=self.outbox.depth())

    # --- paho callbacks (run in paho's network thread): hand over to the hub's thread -----

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        self._connack = reason
        self.wake.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        self._lost = True
        if reason is not None and reason.is_failure:
            self._error = str(reason)
        self.wake.set()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any) -> None:
        self._acks.put((mid, reason))
        self.wake.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        topic = message.topic
        payload = message.payload.decode("utf-8", errors="replace").strip()
        if self.hub.discovery.enabled and topic == f"{self.hub.discovery.prefix}/status":
            if payload == "online":
                self._log.info("home assistant came online, announcing discovery again")
                self._announce = True
                self.wake.set()
            return
        if self.remote.is_command(topic) or (topic.startswith(f"{self._topics.base}/") and topic.endswith("/set")):
            self._take_command(client, topic, payload, message.retain)
        elif self._guard is not None:
            self._guard.on_message(topic, payload)  # the vehicle's state

    def _take_command(self, client: paho.Client, topic: str, payload: str, retained: bool) -> None:
        if not take_once(client, topic, payload, retained, self._log):
            return
        if self._guard is not None and self._guard.on_message(topic, payload):
            return
        self.remote.take(topic, payload)

    def _fail(self, what: str, error: str) -> None:
        self._error = error
        self._log.warning(what, host=self.hub.host, port=self.hub.effective_port, error=error)

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
        self._update_health(force=True)

    def _update_health(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_health < HEALTH_INTERVAL_S:
            return
        self._last_health = now
        outbox = self.outbox
        try:
            depth = outbox.depth() if outbox is not None else 0
        except Exception:
            depth = None
        self._context.health.sinks[self.name] = {
            "connected": self._state == "connected",
            "state": self._state,
            "host": f"{self.hub.host}:{self.hub.effective_port}",
            "outbox": depth,
            "inflight": len(self._inflight),
            "published": self._published,
            "dropped": outbox.dropped if outbox is not None else 0,
            "outbox_in_memory": outbox.in_memory if outbox is not None else 0,
            "outbox_write_failures": outbox.write_failures if outbox is not None else 0,
            "error": self._error,
        }
