"""What goes through the daemon's one ordered control queue: file edits and SIGHUP (Reload), remote
sensor switches, runner ends, stops, the car guard's inputs, and calls (feedback, label switches).
Applied in order, one batch at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from earwitness.guard.machine import GuardCommand, VehicleLink, VehicleMessage

log = structlog.get_logger(__name__)


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


@dataclass(frozen=True)
class Call:
    """Feedback and other remote commands: run in order with the others; the result or error goes to `reply`."""

    action: Callable[[], Any]
    reply: asyncio.Future[Any] | None = None


def run_call(command: Call) -> None:
    """Run a call; its failure is answered or logged, never the end of the control path."""
    try:
        result = command.action()
    except Exception as error:
        if command.reply is None:
            log.exception("remote command failed")
        elif not command.reply.done():
            command.reply.set_exception(error)
        return
    if command.reply is not None and not command.reply.done():
        command.reply.set_result(result)


Command = Reload | SetSensor | RunnerEnded | Stop | VehicleMessage | VehicleLink | GuardCommand | Call
