"""How score streams become events (`events`): defaults, and per-label overrides."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field

from earwitness.config.base import StrictModel


class LabelEventConfig(StrictModel):
    """How one label's score stream becomes events. Unset keys fall back to `events.defaults`."""

    threshold: float | None = Field(None, ge=0, le=1)
    release_ratio: float | None = Field(None, gt=0, le=1)
    sustain_ratio: float | None = Field(None, gt=0, le=1)
    min_duration_s: float | None = Field(None, ge=0)
    merge_gap_s: float | None = Field(None, ge=0)
    cooldown_s: float | None = Field(None, ge=0)
    update_interval_s: float | None = Field(None, gt=0)


class EventDefaults(StrictModel):
    threshold: float | None = Field(None, ge=0, le=1)
    release_ratio: float = Field(0.7, gt=0, le=1)
    sustain_ratio: float | None = Field(None, gt=0, le=1)
    """Two windows in a row at or above `threshold * sustain_ratio` also start an event (None: only
    `threshold` does). A break's shatter and falling pieces hold a high score over two hops; a clink, one."""
    min_duration_s: float = Field(0.0, ge=0)
    merge_gap_s: float = Field(0.5, ge=0)
    cooldown_s: float = Field(2.0, ge=0)
    update_interval_s: float = Field(1.0, gt=0)


class EventsConfig(StrictModel):
    defaults: EventDefaults = EventDefaults()
    labels: dict[str, LabelEventConfig] = {}

    def for_label(self, label: str, recommended: Mapping[str, float] | None = None) -> EventDefaults:
        """The effective settings of one label, later ones winning: the built-in defaults, the
        detector's `recommended` settings for the label, the keys set in `defaults`, the label's overrides."""
        settings = self.defaults
        if recommended:
            unset = {k: v for k, v in recommended.items() if k not in self.defaults.model_fields_set}
            settings = settings.model_copy(update=unset)
        overrides = self.labels.get(label)
        if overrides is not None:
            settings = settings.model_copy(update=overrides.model_dump(exclude_none=True))
        return settings
