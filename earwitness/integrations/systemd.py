"""systemd integration: sd_notify(3) over $NOTIFY_SOCKET, without libsystemd.

Outside systemd ($NOTIFY_SOCKET unset) every call is a no-op.

What the daemon tells systemd (Type=notify, WatchdogSec=):

* ``READY=1`` once startup has settled: every enabled source has processed its first
  window, or has failed to open (the daemon is up and retries it; the failure is in
  ``STATUS=``), or has ended. When every source is switched off by the privacy switch
  there is nothing to wait for and ``READY=1`` is sent at once.
* ``STATUS=...`` whenever the summary changes, e.g. "listening on cabin, exterior; 2/2 hubs connected".
* ``WATCHDOG=1`` from the processing loop itself: a pipeline that has just processed a
  window pings, at most once every WatchdogSec/2, and only when *every* listening source
  has processed a window since the previous ping. A source that is listening but delivers
  no windows (a hung sound driver, a dead audio pipe, a blocked event loop) therefore
  stops the pings, and systemd restarts the service. While no source is listening
  (all switched off, or failed and being retried) there is no processing to vouch for,
  and the daemon's main loop pings instead.
* ``RELOADING=1`` with ``MONOTONIC_USEC=`` when a reload begins (SIGHUP, or the config
  file changed) and ``READY=1`` when it is over.
* ``STOPPING=1`` when it stops.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping

import structlog

from earwitness.core.health import Health
from earwitness.core.observers import DaemonObserver, RunningDaemon

log = structlog.get_logger(__name__)

TICK_MAX_S = 1.0
"""The main loop's check (status line, readiness, idle watchdog) runs at least this often."""


class Notifier:
    """Sends sd_notify messages to $NOTIFY_SOCKET (a path, or `@name` in the abstract namespace)."""

    def __init__(self, address: str | None) -> None:
        self._address: str | bytes | None = None
        self._socket: socket.socket | None = None
        self._warned = False
        if not address:
            return
        if address.startswith("@"):
            self._address = b"\0" + address[1:].encode()
        elif address.startswith("/"):
            self._address = address
        else:
            log.warning("NOTIFY_SOCKET ignored: neither a path nor an abstract name", notify_socket=address)
            return
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._socket.setblocking(False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Notifier:
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *fields: str) -> bool:
        """Send one message (`KEY=value` lines). True when sent, or when there is no systemd to tell."""
        if self._socket is None or self._address is None:
            return True
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
            return True
        except OSError as error:
            # Non-blocking: a full queue must never stall the processing loop; the next ping will do.
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd", error=str(error))
            return False

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval_s(env: Mapping[str, str] = os.environ) -> float | None:
    """How often to ping: half of systemd's WatchdogSec, or None when the watchdog is off (or not ours)."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2 / 1_000_000 if value > 0 else None


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def status_line(health: Health) -> str:
    """A one-line summary for `systemctl status`: sources by state, then hubs."""
    by_state: dict[str, list[str]] = {}
    for name, stats in health.sources.items():
        by_state.setdefault(stats.state, []).append(name)
    parts = []
    if by_state.get("listening"):
        parts.append("listening on " + ", ".join(by_state["listening"]))
    if by_state.get("starting"):
        parts.append("starting " + ", ".join(by_state["starting"]))
    if by_state.get("stalled"):
        parts.append("stalled: " + ", ".join(by_state["stalled"]))
    if by_state.get("failed"):
        parts.append("failed: " + ", ".join(by_state["failed"]))
    if by_state.get("disabled"):
        everything_off = len(by_state["disabled"]) == len(health.sources)
        parts.append("all sensors off (privacy switch)" if everything_off else "off: " + ", ".join(by_state["disabled"]))
    if by_state.get("ended"):
        parts.append("ended: " + ", ".join(by_state["ended"]))
    sinks = list(health.sinks.values())  # one atomic copy: hubs update their figures from their own threads
    hubs = [figures for figures in sinks if isinstance(figures, dict) and "connected" in figures]
    if hubs:
        connected = sum(1 for figures in hubs if figures.get("connected"))
        parts.append(f"{connected}/{len(hubs)} hub{'s' if len(hubs) != 1 else ''} connected")
    return "; ".join(parts) or "no sources"


class SystemdObserver(DaemonObserver):
    """Tells systemd about readiness, status, reloads, and that the processing loop is alive."""

    def __init__(self, notifier: Notifier, watchdog_s: float | None) -> None:
        self._notifier = notifier
        self._watchdog_s = watchdog_s
        self._health: Health | None = None
        self._ready = False
        self._reloading = False
        self._last_ping = float("-inf")
        self._progress: dict[str, float] = {}
        self._status = ""
        self._ticker: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> SystemdObserver | None:
        """The observer when running under systemd ($NOTIFY_SOCKET set), else None."""
        notifier = Notifier.from_env(env)
        if not notifier.enabled:
            return None
        return cls(notifier, watchdog_interval_s(env))

    async def start(self, daemon: RunningDaemon) -> None:
        self._health = daemon.health
        log.info("notifying systemd", watchdog_ping_s=self._watchdog_s)
        self._update_status()
        self._check_ready()
        self._ticker = asyncio.create_task(self._tick(), name="systemd-notify")

    def window(self, source: str) -> None:
        now = time.monotonic()
        self._progress[source] = now
        if not self._ready:
            self._check_ready()
        if self._watchdog_s is None or now - self._last_ping < self._watchdog_s or self._health is None:
            return
        listening = [name for name, stats in self._health.sources.items() if stats.state == "listening"]
        if all(self._progress.get(name, float("-inf")) > self._last_ping for name in listening):
            self._ping(now)

    def reloading(self, reason: str) -> None:
        if not self._ready:
            return  # still starting up: READY=1 comes once startup has settled
        self._reloading = True
        self._notifier.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", f"STATUS=reloading the config ({reason})")

    def reloaded(self, reason: str) -> None:
        if not self._reloading:
            return
        self._reloading = False
        self._status = status_line(self._health) if self._health else ""
        self._notifier.send("READY=1", f"STATUS={self._status}")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        self._notifier.send("STOPPING=1", "STATUS=stopping")
        self._notifier.close()

    # --- internals ---------------------------------------------------------------------

    def _check_ready(self) -> None:
        if self._ready or self._health is None:
            return
        pending = [
            name for name, stats in self._health.sources.items()
            if stats.state == "starting" or (stats.state == "listening" and name not in self._progress)
        ]
        if pending:
            return
        self._status = status_line(self._health)
        if self._notifier.send("READY=1", f"STATUS={self._status}"):
            self._ready = True
            log.info("ready", status=self._status)

    def _ping(self, now: float) -> None:
        if self._notifier.send("WATCHDOG=1"):
            self._last_ping = now

    def _update_status(self) -> None:
        if self._health is None or self._reloading:
            return
        line = status_line(self._health)
        if line != self._status:
            self._status = line
            self._notifier.send(f"STATUS={line}")

    async def _tick(self) -> None:
        """The main loop's share: the status line, settling readiness, and the watchdog while nothing listens."""
        period = min(TICK_MAX_S, self._watchdog_s / 2) if self._watchdog_s else TICK_MAX_S
        while True:
            await asyncio.sleep(period)
            try:
                self._check_ready()
                self._update_status()
                if self._watchdog_s is not None and self._health is not None:
                    now = time.monotonic()
                    idle = not any(stats.state == "listening" for stats in self._health.sources.values())
                    if idle and now - self._last_ping >= self._watchdog_s:
                        self._ping(now)
            except Exception:
                log.exception("systemd notification failed")
