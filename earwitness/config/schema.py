"""The whole configuration: every subsystem's section, and the checks that span sections.

Every key has a default, so `{}` (or no file at all) gives a working daemon."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from earwitness.config.base import NAME_PATTERN, StrictModel
from earwitness.config.captions import CaptionsConfig
from earwitness.config.clips import ClipsConfig
from earwitness.config.detectors import AnomalyDetectorConfig, ClassifierDetectorConfig, DetectorConfig
from earwitness.config.events import EventsConfig
from earwitness.config.gate import GateConfig
from earwitness.config.guard import GuardConfig
from earwitness.config.health import HealthConfig
from earwitness.config.mqtt import HubConfig
from earwitness.config.outputs import OutputsConfig
from earwitness.config.sources import SourceConfig, WindowConfig


class Config(StrictModel):
    device_id: str = Field("earwitness", pattern=NAME_PATTERN)
    sensors_enabled: bool = True
    state_dir: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    sources: list[SourceConfig] = Field(default_factory=lambda: [SourceConfig()], min_length=1)
    windows: WindowConfig = WindowConfig()
    gate: GateConfig = GateConfig()
    detectors: list[DetectorConfig] = Field(default_factory=lambda: _default_detectors(), min_length=1)
    events: EventsConfig = EventsConfig()
    outputs: OutputsConfig = OutputsConfig()
    health: HealthConfig = HealthConfig()
    hubs: list[HubConfig] = []
    captions: CaptionsConfig = CaptionsConfig()
    clips: ClipsConfig = ClipsConfig()
    guard: GuardConfig = GuardConfig()

    @field_validator("sources")
    @classmethod
    def _unique_source_names(cls, sources: list[SourceConfig]) -> list[SourceConfig]:
        names = [source.name for source in sources]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique, repeated: {', '.join(duplicates)}")
        return sources

    @model_validator(mode="after")
    def _hubs_valid(self) -> Config:
        names = [hub.name for hub in self.hubs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"hub names must be unique, repeated: {', '.join(duplicates)}")
        known = {source.name for source in self.sources}
        for hub in self.hubs:
            unknown = sorted(set(hub.route.sources or []) - known)
            if unknown:
                raise ValueError(f"hub {hub.name!r}: route.sources names unknown sources: {', '.join(unknown)}")
        guard = self.guard
        if guard.enabled:
            if guard.hub not in names:
                raise ValueError(f"guard.hub: must name a configured hub ({', '.join(names) or 'none configured'}), got {guard.hub!r}")
            unknown = sorted(set(guard.sources or []) - known)
            if unknown:
                raise ValueError(f"guard.sources names unknown sources: {', '.join(unknown)}")
        return self

    def resolved_state_dir(self) -> Path:
        """Where durable state lives: the config's, systemd's StateDirectory, or the user's."""
        if self.state_dir is not None:
            return self.state_dir
        if os.environ.get("STATE_DIRECTORY"):
            return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
        return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state")) / "earwitness"


def _default_detectors() -> list[DetectorConfig]:
    """The shipped classifier, and the anomaly detector on top of it."""
    return [ClassifierDetectorConfig(), AnomalyDetectorConfig()]
