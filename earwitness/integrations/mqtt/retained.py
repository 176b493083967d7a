"""The retained topics a hub has published, remembered in the state directory.

A retained message outlives the config that made it: a source or label taken out of the
config would leave its discovery configs (its entities in Home Assistant) and its last
states on the broker for good. Each hub writes down every retained topic it keeps; at each
connection the ones the running config no longer publishes are cleared (an empty retained
payload). The record is the union of old and new until the clearing is done, so a crash in
between forgets nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import paho.mqtt.client as paho
import structlog

from earwitness.core.files import write_atomically

log = structlog.get_logger(__name__)


def retained_path(state_dir: Path, hub: str) -> Path:
    """Where a hub's record of its retained topics lives in the state directory."""
    return state_dir / "mqtt" / f"retained-{hub}.json"


class RetainedRecord:
    """The set of retained topics one hub has published, kept in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> set[str]:
        """The recorded topics; none when the file is missing or unreadable (logged)."""
        try:
            topics = json.loads(self.path.read_text(encoding="utf-8"))["topics"]
            return {topic for topic in topics if isinstance(topic, str) and topic}
        except FileNotFoundError:
            return set()
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("mqtt record of retained topics unreadable, stale topics cannot be cleared",
                        path=str(self.path), error=f"{type(error).__name__}: {error}")
            return set()

    def save(self, topics: Iterable[str]) -> None:
        """Write the record atomically; a failure is logged and the hub goes on."""
        data = json.dumps({"topics": sorted(set(topics))}, indent=1).encode()
        try:
            write_atomically(data, self.path)
        except OSError as error:
            log.warning("mqtt record of retained topics cannot be written", path=str(self.path), error=str(error))


def stale_topics(recorded: set[str], wanted: set[str], discovery_prefix: str) -> list[str]:
    """The recorded topics no longer wanted: discovery configs first (the entity goes before its state)."""
    return sorted(recorded - wanted, key=lambda topic: (not topic.startswith(f"{discovery_prefix}/"), topic))


class RetainedTopics:
    """Publishes a hub's retained messages and remembers their topics, so that the stale ones can be cleared."""

    def __init__(self, record: RetainedRecord) -> None:
        self._record = record
        self._recorded = record.load()
        self._dirty = False

    def publish(self, client: paho.Client, topic: str, payload: str, qos: int = 1) -> None:
        """Publish a retained message, and remember its topic (in the state directory) until it is cleared."""
        client.publish(topic, payload, qos=qos, retain=True)
        if payload:
            self.keep(topic)

    def keep(self, topic: str) -> None:
        """Remember a retained topic published elsewhere (the car guard's state)."""
        if topic not in self._recorded:
            self._recorded.add(topic)
            self._dirty = True

    def clear_stale(self, client: paho.Client, published: set[str], discovery_prefix: str) -> list[str]:
        """Clear (empty retained payload) every remembered topic not in `published`; returns them."""
        stale = stale_topics(self._recorded, published, discovery_prefix)
        for topic in stale:
            client.publish(topic, b"", qos=1, retain=True)
        if stale:
            self._recorded -= set(stale)
            self._dirty = True
        return stale

    def save(self) -> None:
        """Write the record if it changed."""
        if self._dirty:
            self._dirty = False
            self._record.save(self._recorded)
