"""Event audio (`clips`): pre-roll, length, and the retention of written clips."""

from __future__ import annotations

from pydantic import Field

from earwitness.config.base import StrictModel


class ClipsConfig(StrictModel):
    """Event audio: always kept in memory for the captioner; written as FLAC only when `enabled`."""

    enabled: bool = False
    """Write each event's clip to <state_dir>/clips/ and put its path in the event messages (`clip`)."""
    pre_roll_s: float = Field(2.0, ge=0, le=30)
    max_s: float = Field(30.0, gt=0, le=600)
    """A clip's longest length, pre-roll included; a longer event's clip is complete at this length."""
    max_count: int = Field(500, ge=1)
    max_mb: float = Field(500.0, gt=0)
    max_age_days: float = Field(30.0, gt=0)
