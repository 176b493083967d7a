"""MQTT hubs: one sink per configured broker, each with its own threads; nothing runs on the event loop.

`handle_event` queues the event message and returns at once. The hub's outbox writer thread
stores it in the durable outbox (the SQLite commit and fsync happen there, in order) and
wakes the hub's thread, which publishes the outbox in order and deletes each message on its
PUBACK. The hub's thread also connects (with exponential backoff), keeps the retained status
and sensor topics, announces Home Assistant discovery and takes remote commands. The network
I/O runs in paho's own thread (`loop_start`), which waits on the socket; the hub's thread
sleeps until there is something to do (a new message, an acknowledgement, a command) and
wakes once a second for the health figures: no polling. A broker that is down or refuses the
credentials only delays that hub's messages.

Retained topics: at each connection, and when Home Assistant comes online (its birth
message), the hub publishes discovery and every current state (privacy switch, source
availability, each label's ON/OFF; a quiet label reads OFF), then clears the retained topics
it published before that the config no longer has (see `retained`). Commands act once: each
one taken is cleared from the broker, and one found retained there is cleared, not applied.
"""

from __future__ import annotations

import json
import os
import queue
import random
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from earwitness.config import HubConfig
from earwitness.daemon.events import EventChange, SensorState
from earwitness.daemon.supervisor import supervised_thread
from earwitness.guard.machine import GuardState
from earwitness.integrations.discovery import Topics, discovery_messages
from earwitness.integrations.guard_link import HubGuard
from earwitness.integrations.outbox import Outbox, outbox_path
from earwitness.integrations.retained import RetainedRecord, retained_path, stale_topics
from earwitness.integrations.sinks import SinkContext

log = structlog.get_logger(__name__)

MAX_INFLIGHT = 20
CONNACK_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
HEALTH_INTERVAL_S = 1.0
CLOSE_FLUSH_S = 0.3
"""On close: how long pending alerts may still be sent, then as long again for `offline`."""
CLOSE_JOIN_S = 0.9
ENDED_STATES = ("ended", "failed")
"""Sensor reasons of a source whose input is gone: its entities are unavailable until it is restarted."""
_CREDENTIAL_REASONS = {134, 135}
"""MQTT 5 `Bad user name or password` and `Not authorized` (paho maps 3.1.1's 4 and 5 to them)."""


class PasswordUnavailable(Exception):
    """The configured password file or environment variable cannot be read."""


class MqttHubSink:
    """Sends events to one MQTT broker; see the module docstring."""

    def __init__(self, hub: HubConfig, context: SinkContext) -> None:
        self.hub = hub
        self.name = f"mqtt:{hub.name}"
        self._context = context
        config = context.config
        self._device = config.device_id
        self._topics = Topics(hub.prefix, config.device_id)
        self._client_id = hub.client_id or f"earwitness-{config.device_id}-{hub.name}"
        self._sources = [s for s in config.sources if hub.route.sources is None or s.name in hub.route.sources]
        self._source_names = {s.name for s in self._sources}
        self._labels = list(context.labels) if hub.route.labels is None else [l for l in hub.route.labels if l in context.labels]
        self._log = log.bind(hub=hub.name)
        self._guard: HubGuard | None = None
        if config.guard.enabled and context.guard_input is not None:
            self._guard = HubGuard(hub, config.guard, self._topics, context.guard_input, self._log)
        self._outbox: Outbox | None = None
        self._incoming: queue.SimpleQueue[tuple[bytes, tuple[str, str]] | None] = queue.SimpleQueue()
        """Event messages (and their live ON/OFF state) for the outbox writer thread, in order."""
        self._live: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._acks: queue.SimpleQueue[tuple[int, ReasonCode | None]] = queue.SimpleQueue()
        """PUBACKs from paho's network thread, for the hub's thread."""
        self._wake = threading.Event()
        """Set when the hub's thread has something to do."""
        self._sensors: dict[str, bool] = {}
        self._available: dict[str, bool] = {s.name: True for s in self._sources}
        self._sensors_dirty: set[str] = set()
        self._labels_on: dict[tuple[str, str], bool] = {}
        """Each routed (source, label)'s current ON/OFF, re-published at every announce."""
        self._record: RetainedRecord | None = None
        self._recorded: set[str] = set()
        """The retained topics this hub has published (what the record holds)."""
        self._record_dirty = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None
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
        self._newest = self._outbox.newest()
        self._record = RetainedRecord(retained_path(self._context.config.resolved_state_dir(), self.hub.name))
        self._recorded = self._record.load()
        pending = self._outbox.depth()
        if pending:
            self._log.info("mqtt outbox has pending alerts from before", pending=pending)
        self._set_state("disconnected")
        health = self._context.health
        self._writer = supervised_thread(health, f"mqtt-outbox-{self.hub.name}", self._write, self._stop)
        self._writer.start()
        self._thread = supervised_thread(health, f"mqtt-{self.hub.name}", self._run, self._stop)
        self._thread.start()

    def handle_event(self, change: EventChange) -> None:
        event = change.event
        if not self._routed(event.source.name, event.label) or self._outbox is None:
            return
        payload = json.dumps(change.message(), separators=(",", ":")).encode()
        on = change.type != "end" and event.ended_at is None
        with self._lock:
            self._labels_on[(event.source.name, event.label)] = on
        self._incoming.put((payload, (self._topics.state(event.source.name, event.label), "ON" if on else "OFF")))

    def handle_guard(self, state: GuardState, alarm: bool) -> None:
        if self._guard is not None:
            self._guard.update(state, alarm)
            self._wake.set()

    def handle_sensor(self, state: SensorState) -> None:
        if state.source.name not in self._source_names:
            return
        with self._lock:
            self._sensors[state.source.name] = state.enabled
            self._available[state.source.name] = state.enabled or state.reason not in ENDED_STATES
            self._sensors_dirty.add(state.source.name)
        self._wake.set()

    def close(self) -> None:
        """Store what is queued, send what can be sent quickly, publish `offline`, disconnect;
        unacked alerts stay in the outbox."""
        if self._writer is not None:
            self._incoming.put(None)
            self._writer.join(CLOSE_JOIN_S)
        self._stop.set()
        self._wake.set()
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
                self._newest = self._outbox.add(self._topics.events, payload)
            except Exception:
                self._log.exception("mqtt outbox cannot store an alert")
                continue
            self._live.put(live)
            self._wake.set()

    # --- the hub's thread ------------------------------------------------------------

    def _routed(self, source: str, label: str) -> bool:
        route = self.hub.route
        return (route.sources is None or source in route.sources) and (route.labels is None or label in route.labels)

    def _run(self) -> None:
        delay = self.hub.reconnect_min_s
        while not self._stop.is_set():
            try:
                connected = self._session()
            except Exception as error:
                self._log.exception("mqtt hub failed, will reconnect")
                self._error, connected = f"{type(error).__name__}: {error}", False
            if self._guard is not None:
                self._guard.disconnected()
            if self._stop.is_set():
                break
            delay = self.hub.reconnect_min_s if connected else delay
            wait = delay * random.uniform(0.8, 1.0)
            self._set_state(self._state if self._state == "refused" else "disconnected")
            self._log.info("mqtt reconnecting", in_s=round(wait, 2))
            self._stop.wait(wait)
            delay = min(delay * 2, self.hub.reconnect_max_s)
        self._set_state("stopped")

    def _session(self) -> bool:
        """One connection, from connect to its end; True if the broker accepted it."""
        hub = self.hub
        self._set_state("connecting")
        self._log.info("mqtt connecting", host=hub.host, port=hub.effective_port, tls=hub.tls is not None,
                       protocol=hub.protocol, client_id=self._client_id)
        try:
            client = self._new_client()
        except PasswordUnavailable as error:
            self._fail("mqtt password unavailable", str(error))
            return False
        except (OSError, ssl.SSLError, ValueError) as error:
            self._fail("mqtt TLS setup failed", f"{type(error).__name__}: {error}")
            return False
        self._connack, self._lost = None, False
        try:
            if hub.protocol == "5":
                client.connect(hub.host, hub.effective_port, hub.keepalive, clean_start=True)
            else:
                client.connect(hub.host, hub.effective_port, hub.keepalive)
        except ssl.SSLError as error:
            self._fail("mqtt TLS handshake failed", f"{type(error).__name__}: {error}")
            return False
        except (OSError, ValueError) as error:
            self._fail("mqtt connect failed", f"{type(error).__name__}: {error}")
            return False
        client.loop_start()
        try:
            return self._converse(client)
        finally:
            with _suppress():
                client.disconnect()  # wakes paho's thread, which then ends (a no-op when the connection is gone)
            client.loop_stop()
            _close_socket(client)

    def _converse(self, client: paho.Client) -> bool:
        deadline = time.monotonic() + CONNACK_TIMEOUT_S
        while True:
            self._wake.clear()
            if self._connack is not None:
                break
            if self._stop.is_set():
                return False
            if self._lost:
                self._fail("mqtt connect failed", "connection closed before the broker answered (no CONNACK)")
                return False
            if time.monotonic() > deadline:
                self._fail("mqtt broker did not answer the connect", "CONNACK timeout")
                return False
            self._wake.wait(deadline - time.monotonic())
        if self._connack.is_failure:
            if self._connack.value in _CREDENTIAL_REASONS:
                self._set_state("refused")
                self._error = f"credentials refused: {self._connack}"
                self._log.error("mqtt broker refused the credentials: check username and password",
                                host=self.hub.host, username=self.hub.username, reason=str(self._connack))
            else:
                self._fail("mqtt broker refused the connection", str(self._connack))
            return False
        self._on_connected(client)
        while not self._stop.is_set():
            self._wake.clear()
            self._take_acks()
            self._send(client)
            if self._lost or not client.is_connected():
                self._fail("mqtt connection lost", self._error or "socket closed")
                return True
            self._update_health()
            self._wake.wait(HEALTH_INTERVAL_S)
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
        assert self._outbox is not None
        self._log.info("mqtt connected", host=self.hub.host, pending=self._outbox.depth())
        client.publish(self._topics.status, "online", qos=1, retain=True)
        if self.hub.discovery.enabled:
            client.subscribe(f"{self.hub.discovery.prefix}/status", qos=1)
        if self.hub.allow_remote_control:
            client.subscribe(self._topics.sensor_set_filter, qos=1)
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
        while not self._live.empty():
            topic, payload = self._live.get_nowait()
            self._retain(client, topic, payload, hub.qos)
        self._save_record()
        assert self._outbox is not None
        room = MAX_INFLIGHT - len(self._inflight)
        if room <= 0 or self._newest <= self._cursor:
            return
        for message in self._outbox.after(self._cursor, room):
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
        if self._guard is not None:  # its state is published (retained) by the guard's side of the hub
            published.add(self._topics.guard)
            self._record_dirty |= self._topics.guard not in self._recorded
            self._recorded.add(self._topics.guard)
        stale = stale_topics(self._recorded, published, hub.discovery.prefix)
        for topic in stale:
            client.publish(topic, b"", qos=1, retain=True)
        if stale:
            self._recorded -= set(stale)
            self._record_dirty = True
            self._log.info("mqtt cleared retained topics the config no longer has", count=len(stale), topics=stale[:20])

    def _retain(self, client: paho.Client, topic: str, payload: str, qos: int = 1) -> None:
        """Publish a retained message, and remember its topic (in the state directory) until it is cleared."""
        client.publish(topic, payload, qos=qos, retain=True)
        if payload and topic not in self._recorded:
            self._recorded.add(topic)
            self._record_dirty = True

    def _save_record(self) -> None:
        if self._record_dirty and self._record is not None:
            self._record_dirty = False
            self._record.save(self._recorded)

    def _take_acks(self) -> None:
        """Forget the outbox messages the broker has acknowledged (PUBACKs queued by paho's thread)."""
        assert self._outbox is not None
        while not self._acks.empty():
            mid, reason = self._acks.get_nowait()
            seq = self._inflight.pop(mid, None)
            if seq is None:
                continue
            if reason is not None and reason.is_failure:
                self._log.warning("mqtt broker rejected an alert; it stays in the outbox", reason=str(reason), seq=seq)
                continue
            self._outbox.ack(seq)
            self._published += 1

    def _goodbye(self, client: paho.Client) -> None:
        """Stopping: a short flush of the outbox, then `offline`, then a clean disconnect."""
        deadline = time.monotonic() + CLOSE_FLUSH_S
        while time.monotonic() < deadline and not self._lost:
            self._wake.clear()
            self._take_acks()
            self._send(client)
            if not self._inflight:
                break
            self._wake.wait(max(0.0, deadline - time.monotonic()))
        info = client.publish(self._topics.status, "offline", qos=1, retain=True)
        with _suppress():
            info.wait_for_publish(CLOSE_FLUSH_S)
        client.disconnect()
        assert self._outbox is not None
        self._log.info("mqtt disconnected", pending=self._outbox.depth())

    def _new_client(self) -> paho.Client:
        hub = self.hub
        v5 = hub.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else True,
            reconnect_on_failure=False,
        )
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(0)
        client.will_set(self._topics.status, "offline", qos=1, retain=True)
        if hub.username is not None:
            client.username_pw_set(hub.username, self._password())
        if hub.tls is not None:
            tls = hub.tls
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(not tls.check_hostname)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _password(self) -> str | None:
        hub = self.hub
        if hub.password_file is not None:
            try:
                return hub.password_file.expanduser().read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as error:
                raise PasswordUnavailable(f"cannot read password_file {hub.password_file}: {error.strerror or error}") from None
        if hub.password_env is not None:
            value = os.environ.get(hub.password_env)
            if value is None:
                raise PasswordUnavailable(f"environment variable {hub.password_env} (password_env) is not set")
            return value
        return None

    # --- paho callbacks (run in paho's network thread): hand over to the hub's thread -----

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        self._connack = reason
        self._wake.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        self._lost = True
        if reason is not None and reason.is_failure:
            self._error = str(reason)
        self._wake.set()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any) -> None:
        self._acks.put((mid, reason))
        self._wake.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        topic = message.topic
        payload = message.payload.decode("utf-8", errors="replace").strip()
        if self.hub.discovery.enabled and topic == f"{self.hub.discovery.prefix}/status":
            if payload == "online":
                self._log.info("home assistant came online, announcing discovery again")
                self._announce = True
                self._wake.set()
            return
        if topic.startswith(f"{self._topics.base}/") and topic.endswith("/set"):
            self._take_command(client, topic, payload, message.retain)
        elif self._guard is not None:
            self._guard.on_message(topic, payload, message.retain)  # the vehicle's state

    def _take_command(self, client: paho.Client, topic: str, payload: str, retained: bool) -> None:
        """A command acts once, so every command taken is cleared from the broker: one published with retain
        while the hub was connected arrives without the flag (MQTT 3.1.1 forwards it so) and would
        otherwise be replayed at the next connection. A command found retained there is not applied."""
        if not payload:
            return  # a cleared command, our own clearing among them
        # QoS 0: it takes no in-flight slot, which a burst of commands would otherwise fill (paho then sends a
        # later state before an earlier one still queued). A clearing lost with the connection is done at the next.
        client.publish(topic, b"", qos=0, retain=True)
        if retained:
            self._log.warning("mqtt command cleared, not applied: it was retained on the broker", topic=topic,
                              payload=payload[:64])
            return
        if self._guard is not None and self._guard.on_message(topic, payload, retained=False):
            return
        parts = topic.split("/")
        if self.hub.allow_remote_control and len(parts) >= 3 and topic == self._topics.sensor_set(parts[-3]):
            self._command(parts[-3], payload)

    def _command(self, source: str, payload: str) -> None:
        shown = payload[:64]
        if source not in self._source_names:
            self._log.warning("mqtt sensor command ignored: unknown or unrouted source", source=source, payload=shown)
        elif payload.upper() not in ("ON", "OFF"):
            self._log.warning("mqtt sensor command ignored: payload must be ON or OFF", source=source, payload=shown)
        else:
            enabled = payload.upper() == "ON"
            self._log.info("mqtt sensor command", source=source, enabled=enabled)
            self._context.set_sensor(source, enabled)

    # --- state and health -------------------------------------------------------------

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
        outbox = self._outbox
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


def _close_socket(client: paho.Client) -> None:
    """Release a finished connection's socket now rather than at garbage collection."""
    with _suppress():
        sock = client.socket()
        if sock is not None:
            sock.close()


class _suppress:
    """Swallow any error of best-effort cleanup."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def build_mqtt_sinks(context: SinkContext) -> list[MqttHubSink]:
    """One sink per configured hub; the car guard's hub first, so that it hears of an alarm first."""
    guard = context.config.guard
    hubs = sorted(context.config.hubs, key=lambda hub: not (guard.enabled and hub.name == guard.hub))
    return [MqttHubSink(hub, context) for hub in hubs]
