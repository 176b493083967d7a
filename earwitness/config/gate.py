"""The energy gate of low-power listening."""

from __future__ import annotations

from pydantic import Field

from earwitness.config.base import StrictModel


class GateConfig(StrictModel):
    """Low-power listening: the detectors run only on windows whose newest hop (its loudest 20 ms) is
    `margin_db` above the learned floor, and for `hold_s` after; the `pre_roll_s` of windows before such
    a window is scored with it. Other windows score 0 (the energy detector still runs on every one)."""

    enabled: bool = False
    margin_db: float = Field(6.0, gt=0)
    pre_roll_s: float = Field(0.5, ge=0, le=5)
    hold_s: float = Field(2.0, ge=0)
    floor_adapt_s: float = Field(30.0, gt=0)
    """The floor falls to a quieter hop at once and rises towards louder closed hops over about this long."""
