"""Remote commands from a hub (`<prefix>/<device>/.../set`): each acts once, and is cleared from the broker.

`<prefix>/<device>/<source>/sensor/set` switches a source's sensor (only with `allow_remote_control`);
an unknown or unrouted source, or a payload other than ON/OFF, is logged and ignored. The car guard
takes its own commands (`guard_link`).
"""

from __future__ import annotations

from collections.abc import Collection

import paho.mqtt.client as paho
from structlog.typing import FilteringBoundLogger

from earwitness.integrations.mqtt.topics import Topics


def take_once(client: paho.Client, topic: str, payload: str, retained: bool, log: FilteringBoundLogger) -> bool:
    """Clear a command from the broker; True when it is to be applied. A command published with retain while
    the hub was connected arrives without the flag (MQTT 3.1.1 forwards it so) and would otherwise be
    replayed at the next connection; one found retained there (`retained`) is cleared, not applied."""
    if not payload:
        return False  # a cleared command, our own clearing among them
    # QoS 0: it takes no in-flight slot, which a burst of commands would otherwise fill (paho then sends a
    # later state before an earlier one still queued). A clearing lost with the connection is done at the next.
    client.publish(topic, b"", qos=0, retain=True)
    if retained:
        log.warning("mqtt command cleared, not applied: it was retained on the broker", topic=topic, payload=payload[:64])
        return False
    return True


def sensor_command(
    topics: Topics, topic: str, payload: str, sources: Collection[str], log: FilteringBoundLogger
) -> tuple[str, bool] | None:
    """(source, enabled) when `topic` and `payload` make a valid sensor command; None otherwise
    (a topic that is not a sensor command, or a command that is logged and ignored)."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[-2:] != ["sensor", "set"] or topic != topics.sensor_set(parts[-3]):
        return None
    source, shown = parts[-3], payload[:64]
    if source not in sources:
        log.warning("mqtt sensor command ignored: unknown or unrouted source", source=source, payload=shown)
    elif payload.upper() not in ("ON", "OFF"):
        log.warning("mqtt sensor command ignored: payload must be ON or OFF", source=source, payload=shown)
    else:
        enabled = payload.upper() == "ON"
        log.info("mqtt sensor command", source=source, enabled=enabled)
        return source, enabled
    return None
