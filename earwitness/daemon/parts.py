"""What the daemon runs, and who builds it: the composition root (`earwitness.app`) implements `Parts`.

The daemon never picks an implementation itself. At start and on every reload it asks its `Parts`
for the audio sources, pipelines, sinks and car guard of a config, so a reload builds its graph exactly as
the start did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from earwitness.config import Config, SourceConfig
from earwitness.core.events import EventChange
from earwitness.core.health import SourceStats
from earwitness.daemon.feedback import Feedback
from earwitness.daemon.guard import Guard
from earwitness.daemon.pipeline import Pipeline
from earwitness.daemon.sources import AudioSource
from earwitness.guard.machine import GuardState
from earwitness.integrations.sinks import Sink, SinkContext


class Parts(Protocol):
    def audio(self, source: SourceConfig, realtime: bool, block_s: float) -> AudioSource:
        """The source's audio input, opened (raises SourceUnavailable)."""
        ...

    def pipeline(
        self, config: Config, source: SourceConfig, emit: Callable[[EventChange], None], stats: SourceStats,
        feedback: Feedback | None = None,
    ) -> Pipeline:
        """A fresh pipeline for one source: its detectors (with their own state), its clip recorder, and
        feedback's gate and label switches."""
        ...

    def sinks(self, context: SinkContext) -> list[Sink]:
        """The sinks the config enables (not yet started)."""
        ...

    def guard(self, config: Config, publish: Callable[[GuardState, bool], None]) -> Guard | None:
        """The car guard when the config enables it (its state restored, not yet started); it tells `publish`
        its every change."""
        ...
