"""The JSON-lines sink: one JSON object per line on stdout or in a file, for scripts and logs."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from earwitness.config.outputs import JsonLinesConfig
from earwitness.core.events import EventChange, SensorState
from earwitness.guard.machine import GuardState


class JsonLinesSink:
    """Writes one JSON object per line: event messages (with stream offsets) and sensor states."""

    name = "jsonl"

    def __init__(self, config: JsonLinesConfig) -> None:
        self._path = config.path
        self._lock = threading.Lock()
        self._stream: TextIO | None = None

    def start(self) -> None:
        if self._path == "-":
            self._stream = sys.stdout
        else:
            path = Path(self._path).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = path.open("a", encoding="utf-8")

    def handle_event(self, change: EventChange) -> None:
        message = change.message()
        message["start_s"] = round(change.event.start_s, 3)
        message["end_s"] = None if change.event.end_s is None else round(change.event.end_s, 3)
        self._write(message)

    def handle_sensor(self, state: SensorState) -> None:
        self._write({"type": "sensor", "source": state.source.name, "location": state.source.location,
                     "enabled": state.enabled, "reason": state.reason})

    def handle_guard(self, state: GuardState, alarm: bool) -> None:
        """The guard's state goes to the hubs; its effect on events is in their messages (`guard`)."""

    def _write(self, message: dict[str, Any]) -> None:
        with self._lock:
            if self._stream is None:
                return
            self._stream.write(json.dumps(message) + "\n")
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._stream is not None and self._stream is not sys.stdout:
                self._stream.close()
            self._stream = None
