"""Remote commands from a hub: `<prefix>/<device>/<source>/sensor/set` switches a source's sensor.

Only with `allow_remote_control`; a retained command (stale by the time it is read), an unknown or
unrouted source, or a payload other than ON/OFF is logged and ignored.
"""

from __future__ import annotations

from collections.abc import Collection

from structlog.typing import FilteringBoundLogger

from earwitness.integrations.mqtt.topics import Topics


def sensor_command(
    topics: Topics, topic: str, payload: str, retained: bool, sources: Collection[str], log: FilteringBoundLogger
) -> tuple[str, bool] | None:
    """(source, enabled) when `topic` and `payload` make a valid sensor command; None otherwise
    (a topic that is not a sensor command, or a command that is logged and ignored)."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[-2:] != ["sensor", "set"] or topic != topics.sensor_set(parts[-3]):
        return None
    source, shown = parts[-3], payload[:64]
    if retained:
        log.warning("mqtt sensor command ignored: retained commands are stale", source=source, payload=shown)
    elif source not in sources:
        log.warning("mqtt sensor command ignored: unknown or unrouted source", source=source, payload=shown)
    elif payload.upper() not in ("ON", "OFF"):
        log.warning("mqtt sensor command ignored: payload must be ON or OFF", source=source, payload=shown)
    else:
        enabled = payload.upper() == "ON"
        log.info("mqtt sensor command", source=source, enabled=enabled)
        return source, enabled
    return None
