"""Supervision of the daemon's long-lived tasks and threads (config watcher, source runners, hub threads).

An unexpected exception is logged with its traceback and the task is restarted with backoff, so
that no bug in one of them silently stops alerts; each one's state, restarts and last error are
in `health.tasks`, which `earwitness status` shows.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

import structlog

from earwitness.core.health import Health

log = structlog.get_logger(__name__)

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0
STEADY_S = 60.0
"""A task that ran this long before failing starts again from the shortest backoff."""


class Backoff:
    """Doubling waits between restarts, back to the shortest after a steady run."""

    def __init__(self, min_s: float = BACKOFF_MIN_S, max_s: float = BACKOFF_MAX_S) -> None:
        self.min_s, self.max_s = min_s, max_s
        self._next = min_s

    def after_run(self, ran_s: float) -> float:
        """The wait before the next start, given how long the last run lasted."""
        if ran_s >= STEADY_S:
            self._next = self.min_s
        wait, self._next = self._next, min(self._next * 2, self.max_s)
        return wait

    def reset(self) -> None:
        self._next = self.min_s


class TaskRecord:
    """One supervised task's figures, as `earwitness status` shows them."""

    def __init__(self, health: Health, name: str) -> None:
        self._figures = health.tasks.setdefault(name, {"state": "running", "restarts": 0, "last_error": None})
        self.name = name

    def running(self) -> None:
        self._figures["state"] = "running"

    def failed(self, error: BaseException, retry_in_s: float | None) -> None:
        log.error("task failed", task=self.name, error=f"{type(error).__name__}: {error}", retry_in_s=retry_in_s,
                  exc_info=error)
        self._figures["last_error"] = f"{type(error).__name__}: {error}"
        self._figures["state"] = "restarting" if retry_in_s is not None else "failed"
        if retry_in_s is not None:
            self._figures["restarts"] += 1

    def stopped(self) -> None:
        self._figures["state"] = "stopped"


def supervise_task(health: Health, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    """An asyncio task running `run()` again after an unexpected exception (cancellation ends it)."""

    async def supervised() -> None:
        record, backoff = TaskRecord(health, name), Backoff()
        try:
            while True:
                record.running()
                began = time.monotonic()
                try:
                    await run()
                    return
                except Exception as error:
                    wait = backoff.after_run(time.monotonic() - began)
                    record.failed(error, wait)
                await asyncio.sleep(wait)
        finally:
            record.stopped()

    return asyncio.create_task(supervised(), name=name)


def supervised_thread(health: Health, name: str, run: Callable[[], None], stop: threading.Event) -> threading.Thread:
    """A daemon thread running `run()` again after an unexpected exception, until `stop` is set."""

    def supervised() -> None:
        record, backoff = TaskRecord(health, name), Backoff()
        try:
            while not stop.is_set():
                record.running()
                began = time.monotonic()
                try:
                    run()
                    return
                except Exception as error:
                    wait = backoff.after_run(time.monotonic() - began)
                    record.failed(error, wait)
                stop.wait(wait)
        finally:
            record.stopped()

    return threading.Thread(target=supervised, name=name, daemon=True)
