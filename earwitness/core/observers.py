"""Observers: things that watch the daemon's life cycle without being part of it.

The daemon tells each observer when it has started, when a pipeline has processed
windows, around a config reload, and when it stops. systemd notification, the status
socket and the Prometheus endpoint are observers. A failing observer is logged and
never stops the daemon.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from earwitness.core.health import Health


class RunningDaemon(Protocol):
    """What an observer may read of the daemon it watches."""

    @property
    def health(self) -> Health: ...

    @property
    def device_id(self) -> str: ...

    @property
    def config_path(self) -> Path | None: ...

    def live_runners(self) -> int:
        """Source runner tasks alive (there must never be more than one per enabled source)."""
        ...

    async def feedback_request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """A `feedback` request of the status socket, run on the daemon's control path (FeedbackError for a bad one)."""
        ...


class DaemonObserver:
    """Base class with no-op hooks; override what you need. Every hook runs on the daemon's event loop."""

    async def start(self, daemon: RunningDaemon) -> None:
        """The sinks are started and a runner exists for every enabled source."""

    def window(self, source: str) -> None:
        """A source's pipeline has just processed one or more windows (called from the processing loop)."""

    def reloading(self, reason: str) -> None:
        """A config reload begins (SIGHUP or the file changed)."""

    def reloaded(self, reason: str) -> None:
        """The reload is over: applied, unchanged, or rejected (the running config stays)."""

    async def stop(self) -> None:
        """The daemon is stopping."""
