"""The one composition root: a config becomes sources, detectors, pipelines, sinks, hubs and observers here.

The daemon runs what this module gives it, at start and on every reload (through `Parts`), so no
other module chooses an implementation. The command line's `run` builds the daemon with
`build_daemon`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from earwitness.config import Config, SourceConfig
from earwitness.core.events import EventChange, SourceInfo
from earwitness.core.health import SourceStats
from earwitness.core.observers import DaemonObserver
from earwitness.daemon.feedback import Feedback
from earwitness.daemon.guard import Guard
from earwitness.daemon.pipeline import Pipeline
from earwitness.daemon.service import Daemon
from earwitness.daemon.sources import AudioSource, open_source
from earwitness.daemon.status import StatusServer, server_socket_path
from earwitness.detectors import DetectorContext, build_detectors
from earwitness.guard.machine import GuardState
from earwitness.integrations.clips import ClipRecorder, ClipWriter
from earwitness.integrations.sinks import Sink, SinkContext


class App:
    """The daemon's `Parts`: which implementation serves each section of the config."""

    def __init__(self) -> None:
        self.clip_writer = ClipWriter()
        """One for the daemon: every source's clips share its bounded queue."""

    def audio(self, source: SourceConfig, realtime: bool, block_s: float) -> AudioSource:
        return open_source(source, realtime, block_s)

    def pipeline(
        self, config: Config, source: SourceConfig, emit: Callable[[EventChange], None], stats: SourceStats | None,
        feedback: Feedback | None = None,
    ) -> Pipeline:
        return build_pipeline(config, source, emit, stats, self.clip_writer, feedback)

    def sinks(self, context: SinkContext) -> list[Sink]:
        config = context.config
        sinks: list[Sink] = []
        if config.outputs.jsonl.enabled:
            from earwitness.integrations.jsonl import JsonLinesSink

            sinks.append(JsonLinesSink(config.outputs.jsonl))
        if config.captions.backend != "none":
            from earwitness.integrations.captions import CaptionSink

            sinks.append(CaptionSink(context))
        if config.hubs:
            from earwitness.integrations.mqtt import MqttHubSink

            guard = config.guard  # the car guard's hub first, so that it hears of an alarm first
            hubs = sorted(config.hubs, key=lambda hub: not (guard.enabled and hub.name == guard.hub))
            sinks.extend(MqttHubSink(hub, context) for hub in hubs)
        return sinks

    def guard(self, config: Config, publish: Callable[[GuardState, bool], None]) -> Guard | None:
        if not config.guard.enabled:
            return None
        return Guard(config.guard, config.resolved_state_dir(), publish)

    def observers(self, config: Config) -> list[DaemonObserver]:
        """systemd notification (when run by systemd), the status socket, and Prometheus when enabled."""
        from earwitness.integrations.systemd import SystemdObserver

        found: list[DaemonObserver] = [observer for observer in (SystemdObserver.from_env(),) if observer is not None]
        found.append(StatusServer(server_socket_path(config.health.socket), self.clip_writer))
        if config.health.prometheus.enabled:
            from earwitness.integrations.prometheus import PrometheusExporter

            found.append(PrometheusExporter(config.health.prometheus))
        return found


def build_pipeline(
    config: Config,
    source: SourceConfig,
    emit: Callable[[EventChange], None],
    stats: SourceStats | None = None,
    clip_writer: ClipWriter | None = None,
    feedback: Feedback | None = None,
) -> Pipeline:
    """A fresh pipeline (detectors with their own state, a clip recorder, feedback's gate and label switches)
    for one source."""
    info = SourceInfo(source.name, source.location)
    context = DetectorContext(source=source.name, state_dir=config.resolved_state_dir())
    detectors = build_detectors(config.detectors, context)
    clips = ClipRecorder.for_config(config, info, clip_writer or ClipWriter())
    if feedback is None:
        return Pipeline(info, config, detectors, emit, stats, clips)
    return Pipeline(info, config, detectors, emit, stats, clips, feedback.gate(source.name), feedback.suppressed,
                    lambda: feedback.labels_off(source.name))


def build_daemon(
    config: Config,
    config_path: Path | None = None,
    realtime: bool = True,
    source_override: Sequence[SourceConfig] | None = None,
    observers: Sequence[DaemonObserver] | None = None,
) -> Daemon:
    """The daemon with this module's parts and, unless `observers` are given, the standard observers;
    raises ConfigError when what the config names cannot be loaded."""
    parts = App()
    chosen = parts.observers(config) if observers is None else observers
    return Daemon(config, parts, config_path=config_path, realtime=realtime, source_override=source_override,
                  observers=chosen)

