"""What goes through the daemon's one ordered control queue: file edits and SIGHUP (Reload), remote
sensor switches, runner ends, stops, and the car guard's inputs. Applied in order, one batch at a time."""

from __future__ import annotations

from dataclasses import dataclass

from earwitness.guard.machine import GuardCommand, VehicleLink, VehicleMessage


@dataclass(frozen=True)
class Reload:
    reason: str


@dataclass(frozen=True)
class SetSensor:
    source: str
    enabled: bool


@dataclass(frozen=True)
class RunnerEnded:
    """A source's runner has finished: the daemon may be done."""


@dataclass(frozen=True)
class Stop:
    """SIGTERM/SIGINT: it also sets the daemon's flag at once, so nothing queued before it is applied."""


Command = Reload | SetSensor | RunnerEnded | Stop | VehicleMessage | VehicleLink | GuardCommand
