"""The guard's side of one MQTT hub: its retained state, ARM/DISARM commands, and on the guard's
own hub the vehicle-state subscriptions and the alarm command. Called from the hub's threads."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from earwitness.config import GuardConfig, HubConfig
from earwitness.guard.machine import GuardCommand, GuardInput, GuardState, VehicleLink, VehicleMessage
from earwitness.guard.rules import VehicleRule
from earwitness.integrations.mqtt.topics import Topics

COMMANDS = {"ARM": True, "DISARM": False}


class HubGuard:
    """Holds what the hub's thread must publish for the guard and hands what it hears to `take`."""

    def __init__(self, hub: HubConfig, guard: GuardConfig, topics: Topics, take: Callable[[GuardInput], None],
                 log: Any) -> None:
        self._hub = hub
        self._guard = guard
        self._topics = topics
        self._take = take
        self._log = log
        self.vehicle_hub = guard.hub == hub.name
        self._vehicle_topics = set(VehicleRule(guard.arm_when).topics) if self.vehicle_hub else set()
        self._lock = threading.Lock()
        self._state: GuardState | None = None
        self._dirty = False
        self._alarm_at: float | None = None
        """When the pending alarm command was asked for (monotonic); sent while it is younger than the cool-down."""
        self._linked = False

    # --- from the dispatcher (any thread) ------------------------------------------------

    def update(self, state: GuardState, alarm: bool) -> None:
        with self._lock:
            self._state, self._dirty = state, True
            if alarm and self.vehicle_hub and self._guard.alarm.topic is not None:
                self._alarm_at = time.monotonic()

    # --- the hub's thread -----------------------------------------------------------------

    def connected(self, client: paho.Client) -> None:
        for topic in sorted(self._vehicle_topics):
            client.subscribe(topic, qos=1)
        if self._hub.allow_remote_control:
            client.subscribe(self._topics.guard_set, qos=1)
        with self._lock:
            self._dirty = self._state is not None
        if self.vehicle_hub:
            self._linked = True
            self._take(VehicleLink(True))

    def disconnected(self) -> None:
        if self._linked:
            self._linked = False
            self._take(VehicleLink(False))

    def send(self, client: paho.Client) -> None:
        """Publish the guard state (retained) and the alarm command, if due."""
        with self._lock:
            state, self._dirty = (self._state if self._dirty else None), False
            alarm_at, self._alarm_at = self._alarm_at, None
        if alarm_at is not None:
            alarm = self._guard.alarm
            assert alarm.topic is not None
            if time.monotonic() - alarm_at <= alarm.cooldown_s:
                client.publish(alarm.topic, alarm.payload, qos=1, retain=alarm.retain)
                self._log.warning("guard alarm command sent", topic=alarm.topic)
            else:
                self._log.warning("guard alarm command dropped: the hub was away longer than the cool-down",
                                  topic=alarm.topic)
        if state is not None:
            payload = json.dumps(state.message(), separators=(",", ":"))
            client.publish(self._topics.guard, payload, qos=1, retain=True)

    # --- paho's thread ----------------------------------------------------------------------

    def on_message(self, topic: str, payload: str) -> bool:
        """Take a message meant for the guard; False if it is not. A `guard/set` command arrives here
        only once the hub's command path has taken it once (a retained one is cleared, never passed on)."""
        if topic in self._vehicle_topics:
            self._take(VehicleMessage(topic, payload))
            return True
        if topic != self._topics.guard_set or not self._hub.allow_remote_control:
            return False
        shown = payload[:64]
        if payload.upper() not in COMMANDS:
            self._log.warning("mqtt guard command ignored: payload must be ARM or DISARM", payload=shown)
        else:
            self._log.info("mqtt guard command", command=payload.upper())
            self._take(GuardCommand(COMMANDS[payload.upper()], f"mqtt hub {self._hub.name}"))
        return True
