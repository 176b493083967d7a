"""The guard's state machine: `disarmed`, `arming`, `armed`, `triggered`.

Pure: every input carries no I/O and the clock is given (epoch seconds, so that a saved state
means the same after a restart). The vehicle's rule arms on its edges only: it arms (after
`arming_delay_s`) when it starts to hold and disarms at once when it stops, so a hand-made
ARM or DISARM stands until the vehicle's state next changes. Stale or missing vehicle state
never changes the state: it only shows in `vehicle`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any, Literal

State = Literal["disarmed", "arming", "armed", "triggered"]
Vehicle = Literal["unknown", "current", "silent", "disconnected"]
STATES: tuple[State, ...] = ("disarmed", "arming", "armed", "triggered")


@dataclass(frozen=True)
class GuardState:
    """What the guard publishes (retained, on `<prefix>/<device>/guard`) and saves."""

    state: State
    since: float
    """Epoch seconds of the last change of `state`."""
    why: str
    vehicle: Vehicle = "unknown"
    """How fresh the vehicle state is: `silent` (no message for `stale_after_s`) and `disconnected`
    (its broker is gone) say the guard keeps its state without knowing the vehicle's."""

    def message(self) -> dict[str, Any]:
        since = datetime.fromtimestamp(self.since, timezone.utc).isoformat(timespec="milliseconds")
        return {"state": self.state, "since": since.replace("+00:00", "Z"), "why": self.why, "vehicle": self.vehicle}


@dataclass(frozen=True)
class Saved:
    """Everything the machine needs to go on after a restart."""

    state: GuardState
    holds: bool | None
    armed_at: float | None
    incident_until: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: Any) -> Saved:
        """ValueError/TypeError/KeyError when `data` is not a saved state."""
        state = data["state"]
        if state["state"] not in STATES:
            raise ValueError(f"unknown guard state {state['state']!r}")
        return Saved(
            GuardState(state["state"], float(state["since"]), str(state["why"])),
            None if data["holds"] is None else bool(data["holds"]),
            None if data["armed_at"] is None else float(data["armed_at"]),
            None if data["incident_until"] is None else float(data["incident_until"]),
        )


class GuardMachine:
    """Each input returns True when the published state changed (state, why or vehicle)."""

    def __init__(self, arming_delay_s: float, cooldown_s: float, stale_after_s: float | None,
                 clock: Callable[[], float], saved: Saved | None = None) -> None:
        self._arming_delay_s = arming_delay_s
        self._cooldown_s = cooldown_s
        self._stale_after_s = stale_after_s
        self._clock = clock
        now = clock()
        self._holds: bool | None = None
        self._armed_at: float | None = None
        self._incident_until: float | None = None
        self._heard_at: float | None = None
        self._connected = True
        if saved is None:
            self.state = GuardState("disarmed", now, "started")
        else:
            self.state = replace(saved.state, vehicle="unknown")
            self._holds, self._armed_at, self._incident_until = saved.holds, saved.armed_at, saved.incident_until
        self.tick()

    def saved(self) -> Saved:
        return Saved(replace(self.state, vehicle="unknown"), self._holds, self._armed_at, self._incident_until)

    # --- inputs ---------------------------------------------------------------------------

    def vehicle(self, holds: bool | None, what: str) -> bool:
        """A vehicle-state message: `holds` is the rule's value after it, `what` what the vehicle says."""
        before = self.state
        self._heard_at = self._clock()
        previous, self._holds = self._holds, holds
        if holds is True and previous is not True and self.state.state == "disarmed":
            self._arm(f"vehicle: {what}")
        elif holds is False and previous is not False and self.state.state != "disarmed":
            self._set("disarmed", f"vehicle: {what}")
        self._refresh_vehicle()
        return self.state != before

    def link(self, connected: bool) -> bool:
        """The vehicle hub's connection came up or went down."""
        before = self.state
        self._connected = connected
        self._refresh_vehicle()
        return self.state != before

    def command(self, arm: bool, origin: str) -> bool:
        """ARM (with the arming delay) or DISARM (at once) by hand."""
        before = self.state
        if not arm and self.state.state != "disarmed":
            self._set("disarmed", f"DISARM from {origin}")
        elif arm and self.state.state == "disarmed":
            self._arm(f"ARM from {origin}")
        return self.state != before

    def watched_event(self, what: str) -> tuple[bool, bool]:
        """A watched label's event began at a vehicle source: (state changed, a new incident: send the alarm)."""
        if self.state.state not in ("armed", "triggered"):
            return False, False
        now = self._clock()
        new_incident = self.state.state == "armed"
        self._incident_until = now + self._cooldown_s
        if new_incident:
            self._set("triggered", what)
        return new_incident, new_incident

    def tick(self) -> bool:
        """Let time pass: arming completes, an incident ends after its cool-down, vehicle state goes silent."""
        before = self.state
        now = self._clock()
        if self.state.state == "arming" and self._armed_at is not None and now >= self._armed_at:
            self._set("armed", self.state.why)
        if self.state.state == "triggered" and self._incident_until is not None and now >= self._incident_until:
            self._incident_until = None
            self._set("armed", f"incident over: no watched sound for {self._cooldown_s:g} s")
        self._refresh_vehicle()
        return self.state != before

    def next_deadline(self) -> float | None:
        """When `tick` may next change something (epoch seconds); None: only an input will."""
        deadlines = []
        if self.state.state == "arming" and self._armed_at is not None:
            deadlines.append(self._armed_at)
        if self.state.state == "triggered" and self._incident_until is not None:
            deadlines.append(self._incident_until)
        if self._stale_after_s is not None and self._heard_at is not None and self.state.vehicle == "current":
            deadlines.append(self._heard_at + self._stale_after_s)
        return min(deadlines, default=None)

    # --- transitions ------------------------------------------------------------------------

    def _arm(self, why: str) -> None:
        self._armed_at = self._clock() + self._arming_delay_s
        self._set("arming", why)
        if self._arming_delay_s == 0:
            self._set("armed", why)

    def _set(self, state: State, why: str) -> None:
        since = self.state.since if state == self.state.state else self._clock()
        if state == "disarmed":
            self._armed_at = self._incident_until = None
        self.state = replace(self.state, state=state, since=since, why=why)

    def _refresh_vehicle(self) -> None:
        vehicle: Vehicle
        if not self._connected:
            vehicle = "disconnected"
        elif self._heard_at is None:
            vehicle = "unknown"
        elif self._stale_after_s is not None and self._clock() - self._heard_at >= self._stale_after_s:
            vehicle = "silent"
        else:
            vehicle = "current"
        if vehicle != self.state.vehicle:
            self.state = replace(self.state, vehicle=vehicle)


@dataclass(frozen=True)
class VehicleMessage:
    """A message on one of the arming rule's topics (retained ones too: they are state, not commands)."""

    topic: str
    payload: str


@dataclass(frozen=True)
class VehicleLink:
    """The connection to the broker that carries the vehicle state came up or went down."""

    connected: bool


@dataclass(frozen=True)
class GuardCommand:
    """ARM or DISARM by hand (`<prefix>/<device>/guard/set`)."""

    arm: bool
    origin: str


GuardInput = VehicleMessage | VehicleLink | GuardCommand
"""What hubs hand to the daemon's control queue for the guard."""
