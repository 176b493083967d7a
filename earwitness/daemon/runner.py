"""One source's runner: opens its audio, feeds its pipeline, and survives what a live source does.

A failure or a stall reopens the source with backoff; an unexpected exception is logged with its
traceback and counted as a restart (`earwitness status`), never a silent end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
import structlog

from earwitness.config import Config, SourceConfig
from earwitness.core.events import EventChange
from earwitness.core.health import Health
from earwitness.core.supervision import Backoff, TaskRecord
from earwitness.daemon.feedback import Feedback
from earwitness.daemon.parts import Parts
from earwitness.daemon.pipeline import Pipeline
from earwitness.daemon.sources import AudioSource, SourceUnavailable

log = structlog.get_logger(__name__)

RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0
RUNNER_TASK_PREFIX = "source-"


class SourceRunner:
    """Runs one source's pipeline until the source ends or is stopped; retries live sources that fail."""

    def __init__(self, parts: Parts, config: Config, source: SourceConfig, emit: Callable[[EventChange], None],
                 health: Health, realtime: bool, on_window: Callable[[str], None] | None = None,
                 feedback: Feedback | None = None) -> None:
        self._parts = parts
        self._feedback = feedback
        self.config = config
        self._health = health
        self.source = source
        self._emit = emit
        self._on_window = on_window
        self.stats = health.source(source.name, source.location)
        self._realtime = realtime
        self.task: asyncio.Task[None] | None = None

    def start(self, on_done: Callable[[], None]) -> None:
        self.stats.state = "starting"
        self.task = asyncio.create_task(self._run(), name=f"{RUNNER_TASK_PREFIX}{self.source.name}")
        self.task.add_done_callback(lambda _task: on_done())

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    @property
    def finished(self) -> bool:
        """Ended for good: end of file, or a file that cannot be read."""
        return self.task is not None and self.task.done() and self.stats.state in ("ended", "failed")

    async def _run(self) -> None:
        """Open, process, and on a failure or a stall reopen with backoff; an unexpected exception is logged
        with its traceback and counted as a restart (`earwitness status`), never a silent end."""
        name = self.source.name
        record, backoff = TaskRecord(self._health, f"{RUNNER_TASK_PREFIX}{name}"), Backoff(RETRY_MIN_S, RETRY_MAX_S)
        live = not self.source.input.startswith("file:")
        while True:
            record.running()
            began = time.monotonic()
            pipeline, unexpected = None, None
            try:
                audio = self._parts.audio(self.source, self._realtime, self.config.windows.hop_s)
                pipeline = self._parts.pipeline(self.config, self.source, self._emit, self.stats, self._feedback)
                async with contextlib.aclosing(audio.chunks()) as chunks:
                    await self._process(chunks, audio, pipeline)
                self.stats.state, self.stats.error = "ended", None
                log.info("source ended: its open events are ended", source=name)
                return
            except SourceUnavailable as error:
                self._fail(str(error))
            except Exception as error:  # a bug, not a device fault: its traceback is logged below
                self._fail(f"{type(error).__name__}: {error}")
                unexpected = error
            finally:
                if pipeline is not None:
                    try:
                        pipeline.finish()
                    except Exception:
                        log.exception("source pipeline did not finish cleanly", source=name)
            retry_s = backoff.after_run(time.monotonic() - began) if live else None
            if unexpected is not None:
                record.failed(unexpected, retry_s)
            if retry_s is None:
                return
            log.info("source will retry", source=name, in_s=retry_s)
            await asyncio.sleep(retry_s)

    async def _process(self, chunks: AsyncIterator[np.ndarray], audio: AudioSource, pipeline: Pipeline) -> None:
        """Feed the pipeline until the source ends; a source silent for `stall_s` is reported stalled, and a
        microphone is reopened (raises SourceUnavailable); a pipe is waited for, it cannot be reopened."""
        name = self.source.name
        reopen = self.source.input == "mic"
        watch = _StallWatch(self.source.stall_s, self._stalled if not reopen else self._stalled_reopen)
        try:
            async for chunk in chunks:
                watch.fed()
                if self.stats.state != "listening":
                    self.stats.state, self.stats.error = "listening", None
                    log.info("source listening", source=name, input=self.source.input)
                windows = self.stats.windows
                pipeline.process(chunk, audio.captured_at)
                if self._on_window is not None and self.stats.windows != windows:
                    self._on_window(name)
                self.stats.dropped_frames = audio.dropped_frames
        except asyncio.CancelledError:
            if not watch.fired or not reopen or not _uncancel():
                raise
            raise SourceUnavailable(f"no audio for {self.source.stall_s:g} s: reopening the microphone") from None
        finally:
            watch.close()

    def _stalled(self) -> None:
        self.stats.state, self.stats.error = "stalled", f"no audio for {self.source.stall_s:g} s"
        log.warning("source stalled: no audio", source=self.source.name, input=self.source.input,
                    silent_s=self.source.stall_s, reopening=self.source.input == "mic")

    def _stalled_reopen(self) -> None:
        """A stalled microphone: wake the runner out of its wait for audio, to reopen the device."""
        self._stalled()
        if self.task is not None:
            self.task.cancel()

    def _fail(self, message: str) -> None:
        self.stats.state, self.stats.error = "failed", message
        log.error("source unavailable", source=self.source.name, error=message)


class _StallWatch:
    """Calls `on_stall` once no audio has come for `stall_s`, and again after audio has come back.

    A block only stamps the time; the timer wakes once per `stall_s` at most, not once per block (each
    wake-up of the event loop costs CPU on a small board, four times a second for months)."""

    def __init__(self, stall_s: float, on_stall: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stall_s = stall_s
        self._on_stall = on_stall
        self._last = self._loop.time()
        self.fired = False
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(stall_s, self._check)

    def fed(self) -> None:
        self._last = self._loop.time()
        if self.fired:
            self.fired = False
            self._timer = self._loop.call_later(self._stall_s, self._check)

    def _check(self) -> None:
        due = self._last + self._stall_s
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check)
            return
        self._timer, self.fired = None, True
        self._on_stall()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _uncancel() -> bool:
    """Take back the cancellation the stall watch asked for; False when someone else also cancelled the task
    (the daemon stopping it), which must go on."""
    task = asyncio.current_task()
    if task is None or not hasattr(task, "uncancel"):  # Python 3.10 counts no cancellations
        return True
    return task.uncancel() == 0
