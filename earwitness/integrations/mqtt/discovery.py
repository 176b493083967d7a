"""Home Assistant MQTT discovery messages for one hub.

Per routed source: an `event` entity fed by the events topic (event types `start`,
`update`, `end`; the message's other keys become attributes), a `binary_sensor` per
routed label fed by the (retained) ON/OFF topic, and the sensor (privacy switch) state: a
`binary_sensor`, or a `switch` when the hub allows remote control. With remote control, also
per routed label a `button` "Not <label>" (a false-alarm verdict on that source's most recent
event of the label) and a `switch` that turns the label on or off there. Every config is
retained and carries a device block. The switch is available while the daemon is
(`status`); a source's event and label entities also need the source's own availability
topic, `offline` once its input has ended or failed for good.
"""

from __future__ import annotations

import json
import re

from earwitness import __version__
from earwitness.config.mqtt import HubConfig
from earwitness.integrations.mqtt.topics import Topics

EVENT_TYPES = ["start", "update", "end"]
EVENT_ATTRIBUTES = ("id", "label", "score", "location", "started_at", "ended_at", "caption", "model")

_DEVICE_CLASSES = (
    (re.compile(r"glass|window|break_?in|burglar"), "safety"),
    (re.compile(r"scratch|tamper|key(ing)?$"), "tamper"),
    (re.compile(r"smoke|fire"), "smoke"),
    (re.compile(r"carbon_monoxide|co_alarm"), "carbon_monoxide"),
    (re.compile(r"water|leak"), "moisture"),
)


def device_class(label: str) -> str:
    """A Home Assistant binary_sensor device class for a label; `sound` unless it names a known hazard."""
    lowered = label.lower()
    for pattern, device_class_name in _DEVICE_CLASSES:
        if pattern.search(lowered):
            return device_class_name
    return "sound"


def safe_id(text: str) -> str:
    """Home Assistant ids allow only [a-zA-Z0-9_-]."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text)


def discovery_messages(
    hub: HubConfig, device_id: str, sources: list[tuple[str, str]], labels: list[str], guard: bool = False
) -> list[tuple[str, str]]:
    """(topic, payload) of every config message; an empty payload removes a stale entity.

    `sources` are (name, location) of the routed sources, `labels` the routed labels; `guard`: the car
    guard is on (an `alarm_control_panel` with remote control, else a read-only `sensor`).
    """
    topics = Topics(hub.prefix, device_id)
    node = safe_id(device_id)
    base_id = f"earwitness_{node}"
    prefix = hub.discovery.prefix
    daemon_available = {"availability_topic": topics.status, "payload_available": "online", "payload_not_available": "offline"}
    common = {
        "device": {
            "identifiers": [base_id],
            "name": f"earwitness {device_id}",
            "manufacturer": "earwitness",
            "model": "acoustic event detector",
            "sw_version": __version__,
        },
        "origin": {"name": "earwitness", "sw_version": __version__},
        "qos": hub.qos,
    }
    messages: list[tuple[str, str]] = []

    def add(component: str, object_id: str, payload: dict | None) -> None:
        """An entity available while the daemon is, unless it names its own `availability`."""
        topic = f"{prefix}/{component}/{node}/{safe_id(object_id)}/config"
        if payload is not None:
            payload = {**({} if "availability" in payload else daemon_available), **payload, **common}
        messages.append((topic, "" if payload is None else json.dumps(payload, sort_keys=True)))

    for source, _location in sources:
        source_available = {
            "availability": [{"topic": topics.status}, {"topic": topics.availability(source)}],
            "availability_mode": "all",  # both say `online` (HA's default payloads)
        }
        attributes = ", ".join(f"'{key}': value_json.{key}" for key in EVENT_ATTRIBUTES)
        add("event", f"{source}_events", {
            "name": f"{source} sound events",
            "unique_id": f"{base_id}_{safe_id(source)}_events",
            "state_topic": topics.events,
            "event_types": EVENT_TYPES,
            # One events topic carries every source: other sources' messages render empty and HA ignores them.
            "value_template": (
                f"{{% if value_json.source == '{source}' %}}"
                f"{{{{ {{'event_type': value_json.type, {attributes}}} | tojson }}}}{{% endif %}}"
            ),
            "icon": "mdi:ear-hearing",
            **source_available,
        })
        for label in labels:
            remote = hub.allow_remote_control
            add("button", f"{source}_{label}_not", None if not remote else {
                "name": f"{source} not {label.replace('_', ' ')}",
                "unique_id": f"{base_id}_{safe_id(source)}_{safe_id(label)}_not",
                "command_topic": topics.feedback,
                "payload_press": json.dumps({"source": source, "label": label, "verdict": "false_alarm"}),
                "icon": "mdi:thumb-down-outline",
            })
            add("switch", f"{source}_{label}_switch", None if not remote else {
                "name": f"{source} {label.replace('_', ' ')} detection",
                "unique_id": f"{base_id}_{safe_id(source)}_{safe_id(label)}_switch",
                "command_topic": topics.label_switch_set(source, label),
                "state_topic": topics.label_switch(source, label),
                "payload_on": "ON",
                "payload_off": "OFF",
                "entity_category": "config",
                "icon": "mdi:ear-hearing",
            })
            add("binary_sensor", f"{source}_{label}", {
                "name": f"{source} {label.replace('_', ' ')}",
                "unique_id": f"{base_id}_{safe_id(source)}_{safe_id(label)}",
                "state_topic": topics.state(source, label),
                "payload_on": "ON",
                "payload_off": "OFF",
                "device_class": device_class(label),
                "off_delay": hub.discovery.off_delay_s,
                **source_available,
            })
        sensor = {
            "name": f"{source} microphone",
            "unique_id": f"{base_id}_{safe_id(source)}_sensor",
            "state_topic": topics.sensor(source),
            "icon": "mdi:microphone",
        }
        if hub.allow_remote_control:
            add("binary_sensor", f"{source}_sensor", None)
            add("switch", f"{source}_sensor", {
                **sensor,
                "command_topic": topics.sensor_set(source),
                "payload_on": "ON",
                "payload_off": "OFF",
                "state_on": "enabled",
                "state_off": "disabled",
            })
        else:
            add("switch", f"{source}_sensor", None)
            add("binary_sensor", f"{source}_sensor", {
                **sensor,
                "payload_on": "enabled",
                "payload_off": "disabled",
                "entity_category": "diagnostic",
            })
    panel = guard and hub.allow_remote_control
    add("alarm_control_panel", "guard", _guard_panel(topics, base_id) if panel else None)
    add("sensor", "guard", _guard_sensor(topics, base_id) if guard and not panel else None)
    return messages


GUARD_HA_STATES = {"disarmed": "disarmed", "arming": "arming", "armed": "armed_away", "triggered": "triggered"}
"""The guard's states as Home Assistant's alarm panel names them."""


def _guard_panel(topics: Topics, base_id: str) -> dict:
    """The guard as an MQTT alarm panel (HA 2024.3 schema): arm (away) and disarm, no code."""
    return {
        "name": "car guard",
        "unique_id": f"{base_id}_guard",
        "state_topic": topics.guard,
        "value_template": f"{{{{ {GUARD_HA_STATES}[value_json.state] }}}}",
        "json_attributes_topic": topics.guard,
        "command_topic": topics.guard_set,
        "payload_arm_away": "ARM",
        "payload_disarm": "DISARM",
        "supported_features": ["arm_away"],
        "code_arm_required": False,
        "code_disarm_required": False,
        "icon": "mdi:car-key",
    }


def _guard_sensor(topics: Topics, base_id: str) -> dict:
    """Without remote control the guard can only be shown."""
    return {
        "name": "car guard",
        "unique_id": f"{base_id}_guard",
        "state_topic": topics.guard,
        "value_template": "{{ value_json.state }}",
        "json_attributes_topic": topics.guard,
        "device_class": "enum",
        "options": list(GUARD_HA_STATES),
        "icon": "mdi:car-key",
    }
