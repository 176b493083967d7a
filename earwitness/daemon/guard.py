"""The car guard at run time: the state machine fed from the control queue, its timer, its saved
state (`<state_dir>/guard.json`) and the `guard` verdict on the vehicle's watched events."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import structlog

from earwitness.config import GuardConfig
from earwitness.core.events import EventChange
from earwitness.guard.machine import GuardInput, GuardMachine, GuardState, Saved, VehicleLink, VehicleMessage
from earwitness.guard.rules import VehicleRule

log = structlog.get_logger(__name__)

RECENT_EVENTS = 1024


class Guard:
    """Runs on the event loop; `publish(state, alarm)` hands every change to the sinks (alarm: a new incident)."""

    def __init__(self, config: GuardConfig, state_dir: Path, publish: Callable[[GuardState, bool], None],
                 clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._path = state_dir / "guard.json"
        self._publish = publish
        self._clock = clock
        self._rule = VehicleRule(config.arm_when)
        self._machine = GuardMachine(config.arming_delay_s, config.alarm.cooldown_s, config.stale_after_s,
                                     clock, self._load())
        self._verdicts: OrderedDict[str, str] = OrderedDict()
        """The guard state each recent watched event began in: every change of the event carries it."""
        self._timer: asyncio.TimerHandle | None = None
        self._saved = self._machine.saved()

    @property
    def state(self) -> GuardState:
        return self._machine.state

    def start(self) -> None:
        log.info("guard", **self.state.message())
        self._save()
        self._schedule()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def take(self, command: GuardInput) -> None:
        """One input from the control queue."""
        if isinstance(command, VehicleMessage):
            if not self._rule.update(command.topic, command.payload):
                return
            changed = self._machine.vehicle(self._rule.holds, self._rule.describe())
        elif isinstance(command, VehicleLink):
            changed = self._machine.link(command.connected)
        else:  # GuardCommand
            changed = self._machine.command(command.arm, command.origin)
        self._changed(changed, alarm=False)

    def event(self, change: EventChange) -> EventChange:
        """A watched label's event at a vehicle source carries `guard` (the state it began in); one that
        begins while armed triggers the guard (and, once per incident, the alarm) before it is sent."""
        event = change.event
        sources = self._config.sources
        if event.label not in self._config.labels or (sources is not None and event.source.name not in sources):
            return change
        verdict = self._verdicts.get(event.id)
        if verdict is None:
            changed, alarm = self._machine.watched_event(f"{event.label} at {event.source.name}")
            verdict = self._machine.state.state
            self._verdicts[event.id] = verdict
            while len(self._verdicts) > RECENT_EVENTS:
                self._verdicts.popitem(last=False)
            if alarm:
                log.warning("guard triggered", label=event.label, source=event.source.name, id=event.id)
            self._changed(changed, alarm)
        return EventChange(change.type, event.evolve(details={**event.details, "guard": verdict}))

    def _changed(self, changed: bool, alarm: bool) -> None:
        if changed:
            log.info("guard", **self.state.message())
            self._publish(self.state, alarm)
        self._save()
        self._schedule()

    def _tick(self) -> None:
        self._timer = None
        self._changed(self._machine.tick(), alarm=False)

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._machine.next_deadline()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_later(max(0.0, deadline - self._clock()), self._tick)

    def _load(self) -> Saved | None:
        try:
            return Saved.from_json(json.loads(self._path.read_text()))
        except FileNotFoundError:
            return None
        except Exception as error:  # a damaged file must not stop the daemon: the guard starts disarmed and says so
            log.error("guard state cannot be restored, starting disarmed", path=str(self._path), error=str(error))
            return None

    def _save(self) -> None:
        """Written (atomically, synced) whenever what a restart needs has changed."""
        saved = self._machine.saved()
        if saved == self._saved and self._path.exists():
            return
        temporary = self._path.with_suffix(".tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("w") as file:
                json.dump(saved.to_json(), file)
                file.flush()
                os.fsync(file.fileno())
            temporary.replace(self._path)
            self._saved = saved
        except OSError as error:
            log.error("guard state cannot be saved; a restart would not restore it", path=str(self._path), error=str(error))
