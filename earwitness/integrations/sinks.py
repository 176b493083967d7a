"""What a sink is, and what it may use of the running daemon (given to it by the composition root)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from earwitness.config import Config
from earwitness.core.events import EventChange, SensorState
from earwitness.core.health import Health
from earwitness.guard.machine import GuardInput, GuardState


class Sink(Protocol):
    """Receives event changes, sensor states and the car guard's state. Handlers must return quickly and be
    thread-safe."""

    name: str

    def start(self) -> None: ...

    def handle_event(self, change: EventChange) -> None: ...

    def handle_sensor(self, state: SensorState) -> None: ...

    def handle_guard(self, state: GuardState, alarm: bool) -> None:
        """The car guard's new state (`alarm`: it has just raised the alarm); a sink that does not publish it ignores it."""
        ...

    def close(self) -> None:
        """Flush what is pending and release resources."""
        ...


@dataclass
class SinkContext:
    """What sinks may need from the daemon besides the config."""

    config: Config
    health: Health
    dispatch: Callable[[EventChange], None]
    """Hand a new change (for example a caption update) to every sink."""
    set_sensor: Callable[[str, bool], None]
    """Switch a source's sensor on or off at run time (remote control)."""
    labels: list[str]
    """The labels the detectors can report (every source has the same detectors)."""
    guard_input: Callable[[GuardInput], None] | None = None
    """Hand vehicle state and ARM/DISARM to the guard (through the daemon's control queue); None: no guard."""
    feedback: Callable[[dict[str, Any]], None] | None = None
    """Hand a feedback command (a verdict on an event) to the daemon's control path; it logs the outcome."""
    set_label: Callable[[str, str, bool], None] | None = None
    """Switch a label on or off at a source (remote control), through the daemon's control path."""
    label_on: Callable[[str, str], bool] | None = None
    """Whether a label is switched on at a source (the hubs publish the switches' states); None: no switches."""


