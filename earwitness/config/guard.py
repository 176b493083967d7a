"""The car guard's section: which hub carries the vehicle state, the arming rule, the alarm."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from earwitness.config.base import StrictModel


class GuardConditionConfig(StrictModel):
    """One condition of the guard's arming rule: the latest message on `topic` (on the guard's hub),
    or the value at `json_path` in it, equals a value or is one of several."""

    topic: str
    equals: str | None = None
    one_of: list[str] | None = Field(None, min_length=1)
    json_path: str | None = None
    """Where the value is in a JSON payload, e.g. `$.vehicle.locked` or `$.doors[0]`; null = the whole payload as text."""

    @field_validator("equals", mode="before")
    @classmethod
    def _scalar_as_text(cls, value: object) -> object:
        return _condition_text(value)

    @field_validator("one_of", mode="before")
    @classmethod
    def _scalars_as_text(cls, value: object) -> object:
        return [_condition_text(item) for item in value] if isinstance(value, list) else value

    @field_validator("topic")
    @classmethod
    def _plain_topic(cls, value: str) -> str:
        if not value or any(c in value for c in "+#"):
            raise ValueError("must be a non-empty topic without wildcards")
        return value

    @field_validator("json_path")
    @classmethod
    def _valid_path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(JSON_PATH_PATTERN, value):
            raise ValueError("must be a path like $.vehicle.locked or $.doors[0] (keys and list indexes)")
        return value

    @model_validator(mode="after")
    def _one_test(self) -> GuardConditionConfig:
        if (self.equals is None) == (self.one_of is None):
            raise ValueError("set exactly one of equals or one_of")
        return self

    @property
    def accepted(self) -> list[str]:
        return [self.equals] if self.equals is not None else list(self.one_of or [])


JSON_PATH_PATTERN = r"\$?(\.[A-Za-z0-9_-]+|\[\d+\])*|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+|\[\d+\])*"


def _condition_text(value: object) -> object:
    """YAML reads `true` and `1` as a bool and a number; a payload is text (`true`, `1`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


class GuardAlarmConfig(StrictModel):
    """The command sent on the guard's hub once per incident (the car's own siren or horn bridge)."""

    topic: str | None = None
    """null = no alarm command; the `triggered` guard state and the alert are still published."""
    payload: str = "ALARM"
    retain: bool = False
    cooldown_s: float = Field(60.0, gt=0)
    """An incident lasts until this long passes without a watched event; then the guard is `armed` again."""

    @field_validator("topic")
    @classmethod
    def _plain_topic(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in "+#")):
            raise ValueError("must be a non-empty topic without wildcards")
        return value


class GuardConfig(StrictModel):
    """The car guard: armed by the vehicle's own state (all of `arm_when` hold), it raises an alarm
    for watched labels at the vehicle's sources; see the README's "Car guard"."""

    enabled: bool = False
    hub: str | None = None
    """The hub whose broker carries the vehicle state (and receives the alarm first)."""
    arm_when: list[GuardConditionConfig] = []
    """All must hold to arm; the first one that stops holding disarms at once. Empty: armed only by hand."""
    arming_delay_s: float = Field(30.0, ge=0)
    sources: list[str] | None = None
    """The vehicle's sources; null = every source."""
    labels: list[str] = Field(default_factory=lambda: ["glass_break", "scratch"], min_length=1)
    stale_after_s: float | None = Field(None, gt=0)
    """No vehicle-state message for this long: the state is reported `silent` (it never disarms);
    null = never (bridges such as TeslaMate publish only changes, retained)."""
    alarm: GuardAlarmConfig = GuardAlarmConfig()
