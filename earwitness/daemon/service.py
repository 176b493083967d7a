"""The daemon: one runner per enabled source, sinks, config reload and the privacy switch.

A source whose sensor is switched off has no runner at all: its stream is closed and
its buffered audio dropped. The config is reloaded on SIGHUP and when the file changes.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from earwitness.config import Config, ConfigError, SourceConfig, load_config
from earwitness.core.events import EventChange, SensorState, SourceInfo
from earwitness.core.health import Health
from earwitness.core.observers import DaemonObserver
from earwitness.core.supervision import supervise_task
from earwitness.daemon.commands import Call, Command, Reload, RunnerEnded, SetSensor, Stop, run_call
from earwitness.daemon.config_watch import ConfigWatcher
from earwitness.daemon.dispatch import Dispatcher
from earwitness.daemon.feedback import Feedback
from earwitness.daemon.guard import Guard
from earwitness.daemon.parts import Parts
from earwitness.daemon.resources import check_files, check_resources, load_detectors
from earwitness.daemon.runner import RUNNER_TASK_PREFIX, SourceRunner
from earwitness.guard.machine import GuardCommand, GuardInput, GuardState, VehicleLink, VehicleMessage
from earwitness.integrations.sinks import Sink, SinkContext
from earwitness.logs import configure_logging

log = structlog.get_logger(__name__)

PIPELINE_KEYS = ("device_id", "windows", "gate", "detectors", "events", "clips")
"""Config sections that every pipeline is built from; a change rebuilds them all."""
SOURCE_KEYS = ("sources", "sensors_enabled", "log_level")


class Daemon:
    """Owns the runners and sinks; applies config changes without restarting the process."""

    def __init__(
        self,
        config: Config,
        parts: Parts,
        config_path: Path | None = None,
        realtime: bool = True,
        source_override: Sequence[SourceConfig] | None = None,
        observers: Sequence[DaemonObserver] = (),
    ) -> None:
        self.health = Health()
        self._parts = parts
        self._observers = list(observers)
        self._config_path = config_path
        self._realtime = realtime
        self._source_override = list(source_override) if source_override else None
        self._config = self._with_override(config)
        self._labels = check_resources(self._config, str(config_path or "<config>"), build=False)
        """The labels the detectors report; ConfigError if a model, TLS or password file is missing."""
        self.feedback = Feedback(self._config, self.health)
        self._runners: dict[str, SourceRunner] = {}
        self._remote_sensor: dict[str, bool] = {}
        self._sensor_states: dict[str, bool] = {}
        """What the sinks were last told of each source's sensor."""
        self._dispatcher: Dispatcher | None = None
        self._guard: Guard | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._control: asyncio.Queue[Command] = asyncio.Queue()
        """The one ordered control path: file edits, SIGHUP, remote sensor and guard commands, vehicle state,
        runner ends and stops."""
        self._stopping = False
        self._config_watch = ConfigWatcher(config_path, self.request_reload)

    @property
    def config(self) -> Config:
        return self._config

    @property
    def device_id(self) -> str:
        return self._config.device_id

    @property
    def config_path(self) -> Path | None:
        return self._config_path

    @staticmethod
    def live_runners() -> int:
        """Source runner tasks alive, those the daemon no longer tracks included (there must never be any)."""
        return sum(1 for task in asyncio.all_tasks() if task.get_name().startswith(RUNNER_TASK_PREFIX) and not task.done())

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT, or until every source has ended; returns the exit code."""
        self._loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, self.request_stop)
        self._loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self._open_sinks(self._build_sinks(self._config, self._labels))
        self._start_guard()
        await self._sync_sources(previous=None)
        log.info("daemon started", sources=[s.name for s in self._config.sources], config=str(self._config_path))
        for observer in self._observers:
            await self._observe(observer.start, self)
        watcher = supervise_task(self.health, "config-watch", self._config_watch.run)
        try:
            while not self._stopping and not self._all_finished():
                await self._apply(await self._next_commands())
        finally:
            for observer in self._observers:
                await self._observe(observer.stop)
            watcher.cancel()
            await asyncio.gather(*(runner.stop() for runner in self._runners.values()), return_exceptions=True)
            self._stop_guard()
            self._close_sinks()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                self._loop.remove_signal_handler(signum)
        failed = [name for name, stats in self.health.sources.items() if stats.state == "failed"]
        log.info("daemon stopped", failed_sources=failed, requested=self._stopping)
        # A stop that was asked for is a clean exit; a run that ended by itself failed if a source did.
        return 1 if failed and not self._stopping else 0

    def request_stop(self) -> None:
        log.info("stopping")
        self._stopping = True  # ahead of anything still queued
        self._control.put_nowait(Stop())

    def request_reload(self, reason: str = "SIGHUP") -> None:
        self._control.put_nowait(Reload(reason))

    def set_sensor(self, source: str, enabled: bool) -> None:
        """Switch one source's sensor at run time (remote control); safe from any thread."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._control.put_nowait, SetSensor(source, enabled))

    def guard_input(self, command: GuardInput) -> None:
        """Vehicle state or ARM/DISARM for the guard, in order with the other commands; safe from any thread."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._control.put_nowait, command)

    async def call(self, action: Callable[[], Any], timeout_s: float = 10.0) -> Any:
        """Run `action` on the control path, in order with every other command; its result or its exception."""
        assert self._loop is not None
        reply: asyncio.Future[Any] = self._loop.create_future()
        self._control.put_nowait(Call(action, reply))
        return await asyncio.wait_for(reply, timeout_s)

    def call_threadsafe(self, action: Callable[[], Any]) -> None:
        """Queue `action` on the control path from any thread (an MQTT hub's); it logs its own outcome."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._control.put_nowait, Call(action))

    async def feedback_request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """A status socket `feedback` request, run on the control path (FeedbackError for a bad one)."""
        return await self.call(lambda: self.feedback.handle(request))

    def _switch_label(self, source: str, label: str, on: bool) -> None:
        if self.feedback.switch(source, label, on, self._config, self._labels) and self._dispatcher is not None:
            self._dispatcher.label_switch(source, label, on)  # told even when unchanged: a hub's view is corrected

    # --- the control path -----------------------------------------------------------

    async def _next_commands(self) -> list[Command]:
        """The next command and every one queued behind it, in order: a burst is applied as one change."""
        commands = [await self._control.get()]
        while not self._control.empty():
            commands.append(self._control.get_nowait())
        return commands

    async def _apply(self, commands: list[Command]) -> None:
        """Apply commands in their order, one batch at a time, so the last one wins and no two
        changes ever interleave (which once left orphan runners that no OFF could stop)."""
        sensors_changed = False
        for command in commands:
            if self._stopping:
                return
            if isinstance(command, Reload):
                if sensors_changed:  # a sensor command before the reload is applied before it
                    await self._sync_sources(previous=self._config, reason="remote command")
                    sensors_changed = False
                await self._reload(command.reason)
            elif isinstance(command, RunnerEnded):
                self._publish_ended()
            elif isinstance(command, (VehicleMessage, VehicleLink, GuardCommand)):
                if self._guard is not None:
                    self._guard.take(command)
            elif isinstance(command, Call):
                run_call(command)
            elif isinstance(command, SetSensor):
                if command.source not in {s.name for s in self._config.sources}:
                    log.warning("sensor command for an unknown source ignored", source=command.source)
                    continue
                self._remote_sensor[command.source] = command.enabled
                runner = self._runners.get(command.source)
                if command.enabled and runner is not None and runner.finished:  # switching it on restarts it
                    await self._runners.pop(command.source).stop()
                sensors_changed = True
        if sensors_changed:
            await self._sync_sources(previous=self._config, reason="remote command")

    def emit(self, change: EventChange) -> None:
        self.feedback.record(change)
        if self._guard is not None:
            change = self._guard.event(change)
        if self._dispatcher is not None:
            self._dispatcher.event(change)

    # --- the car guard ---------------------------------------------------------------

    def _start_guard(self) -> None:
        """The guard of the current config (its state restored from the state directory), told to the sinks."""
        self._guard = self._parts.guard(self._config, self._publish_guard)
        if self._guard is not None:
            self._guard.start()
            self._publish_guard(self._guard.state, alarm=False)

    def _stop_guard(self) -> None:
        if self._guard is not None:
            self._guard.close()
            self._guard = None

    def _publish_guard(self, state: GuardState, alarm: bool) -> None:
        if self._dispatcher is not None:
            self._dispatcher.guard(state, alarm)

    # --- sources -----------------------------------------------------------------

    def _sensor_on(self, config: Config, source: SourceConfig) -> bool:
        if not config.sensors_enabled:
            return False
        return self._remote_sensor.get(source.name, source.enabled)

    async def _sync_sources(self, previous: Config | None, reason: str = "startup") -> None:
        """Start, stop or restart runners so that they match the config and the privacy switches."""
        config = self._config
        rebuild = previous is not None and any(getattr(previous, k) != getattr(config, k) for k in PIPELINE_KEYS)
        new_sources = {s.name: s for s in config.sources}
        for name in list(self._runners):
            runner = self._runners[name]
            source = new_sources.get(name)
            if source is None or not self._sensor_on(config, source) or rebuild or source != runner.source:
                await runner.stop()
                del self._runners[name]
                if source is None:
                    self.health.sources.pop(name, None)
        for name, source in new_sources.items():
            enabled = self._sensor_on(config, source)
            stats = self.health.source(name, source.location)
            if enabled and name not in self._runners:
                runner = SourceRunner(self._parts, config, source, self.emit, self.health, self._realtime,
                                      self._window_done, self.feedback)
                self._runners[name] = runner
                runner.start(lambda: self._control.put_nowait(RunnerEnded()))
            if not enabled:
                stats.state, stats.error = "disabled", None
            listening, why = self._sensor_report(config, source, reason)
            if self._sensor_states.get(name) != listening:
                self._dispatch_sensor(source, listening, why)
        self._sensor_states = {name: self._sensor_report(config, s, reason)[0] for name, s in new_sources.items()}

    def _sensor_report(self, config: Config, source: SourceConfig, reason: str) -> tuple[bool, str]:
        """What the sinks are told of a source's sensor: on while its runner runs; an ended or failed runner's state."""
        runner = self._runners.get(source.name)
        if runner is not None and runner.finished:
            return False, runner.stats.state
        return self._sensor_on(config, source), reason

    def _publish_ended(self) -> None:
        """A source that ended (end of file, EOF on stdin) or failed for good no longer listens: sinks are told."""
        for name, runner in self._runners.items():
            if runner.finished and self._sensor_states.get(name):
                self._sensor_states[name] = False
                self._dispatch_sensor(runner.source, False, runner.stats.state)

    def _dispatch_sensor(self, source: SourceConfig, enabled: bool, reason: str) -> None:
        if self._dispatcher is not None:
            self._dispatcher.sensor(SensorState(SourceInfo(source.name, source.location), enabled, reason))

    def _all_finished(self) -> bool:
        sources = self._config.sources
        return all(name in self._runners and self._runners[name].finished for name in (s.name for s in sources))

    # --- sinks -------------------------------------------------------------------

    def _open_sinks(self, sinks: list[Sink]) -> None:
        self._dispatcher = Dispatcher(sinks, self.health)
        self._dispatcher.start()

    def _build_sinks(self, config: Config, labels: list[str]) -> list[Sink]:
        context = SinkContext(config=config, health=self.health, dispatch=self._emit_threadsafe,
                              set_sensor=self.set_sensor, labels=labels, guard_input=self.guard_input,
                              feedback=lambda command: self.call_threadsafe(lambda: self.feedback.remote(command)),
                              set_label=lambda s, label, on: self.call_threadsafe(lambda: self._switch_label(s, label, on)),
                              label_on=self.feedback.switches.is_on)
        return self._parts.sinks(context)

    def _emit_threadsafe(self, change: EventChange) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.emit, change)

    def _close_sinks(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.close()
            self._dispatcher = None

    # --- config reload -------------------------------------------------------------

    def _with_override(self, config: Config) -> Config:
        if self._source_override is None:
            return config
        return config.model_copy(update={"sources": self._source_override})

    async def _reload(self, reason: str) -> None:
        for observer in self._observers:
            await self._observe(observer.reloading, reason)
        try:
            await self._apply_reload(reason)
        except Exception:  # a reload must never end the daemon, nor the watcher or signal handling that asked for it
            log.exception("config reload failed, the running config stays", reason=reason)
        finally:
            for observer in self._observers:
                await self._observe(observer.reloaded, reason)

    async def _apply_reload(self, reason: str) -> None:
        if self._config_path is None:
            log.info("reload requested but no config file is in use", reason=reason)
            return
        previous = self._config
        origin = str(self._config_path)
        # Everything the new config needs is loaded before anything is swapped: a failure keeps the running config whole.
        try:
            new = self._with_override(load_config(self._config_path))
            if new == previous:
                log.info("config reloaded, nothing changed", reason=reason)
                return
            labels = self._labels if new.detectors == previous.detectors else load_detectors(new.detectors, origin)
            check_files(new, origin)
            sinks_changed = any(
                getattr(previous, k) != getattr(new, k) for k in type(new).model_fields if k not in SOURCE_KEYS
            ) or _source_names(previous) != _source_names(new)  # the hubs announce each source
            sinks = self._build_sinks(new, labels) if sinks_changed else None
        except ConfigError as error:
            log.error("config reload rejected, the running config stays", reason=reason, error=str(error))
            return
        self._config, self._labels = new, labels
        self._forget_overridden_commands(previous, new)
        self.feedback.reconfigure(new)
        configure_logging(new.log_level)
        if sinks is not None:
            self._stop_guard()
            self._close_sinks()
            self._open_sinks(sinks)
            self._start_guard()
        await self._sync_sources(previous, reason=reason)
        if sinks is not None:
            for source in new.sources:
                self._dispatch_sensor(source, *self._sensor_report(new, source, reason))
        log.info("config reloaded", reason=reason, sinks_restarted=sinks is not None)

    def _forget_overridden_commands(self, previous: Config, new: Config) -> None:
        """The local config and the remote commands decide in the order they happened: a remote command
        stands until the config's own say on that sensor changes."""
        old_sources = {s.name: s for s in previous.sources}
        for name in list(self._remote_sensor):
            before, after = old_sources.get(name), next((s for s in new.sources if s.name == name), None)
            if (after is None or before is None or before.enabled != after.enabled
                    or previous.sensors_enabled != new.sensors_enabled):
                del self._remote_sensor[name]

    # --- observers (systemd, status socket, metrics) -----------------------------------------

    def _window_done(self, source: str) -> None:
        """Called from a source's processing loop after it has processed windows."""
        for observer in self._observers:
            try:
                observer.window(source)
            except Exception:
                log.exception("observer failed", observer=type(observer).__name__, action="window")

    @staticmethod
    async def _observe(hook: Callable[..., object], *args: object) -> None:
        try:
            result = hook(*args)
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            log.exception("observer failed", hook=getattr(hook, "__qualname__", str(hook)))


def _source_names(config: Config) -> list[tuple[str, str]]:
    return [(source.name, source.location) for source in config.sources]
