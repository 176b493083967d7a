"""The audio inputs (`sources`) and how their audio is cut into windows (`windows`)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from earwitness.config.base import NAME_PATTERN, StrictModel


class SourceConfig(StrictModel):
    """One audio input with its own pipeline."""

    name: str = Field("default", pattern=NAME_PATTERN)
    input: str = "mic"
    device: str | int | None = None
    location: str = "home"
    enabled: bool = True
    loop: bool = False
    queue_s: float = Field(2.0, gt=0)
    stall_s: float = Field(10.0, gt=0)
    """No audio for this long: the source is reported stalled (log, `earwitness status`) and a microphone is
    reopened, with backoff; a pipe (`-`) is waited for. The end of stdin ends the source cleanly."""

    @field_validator("input")
    @classmethod
    def _known_input(cls, value: str) -> str:
        if value in ("mic", "-") or (value.startswith("file:") and len(value) > 5):
            return value
        raise ValueError("must be 'mic', '-' (raw s16le 16 kHz mono on stdin) or 'file:PATH'")


class WindowConfig(StrictModel):
    length_s: float = Field(1.0, gt=0, le=10)
    hop_s: float = Field(0.25, gt=0, le=10)

    @model_validator(mode="after")
    def _hop_within_window(self) -> WindowConfig:
        if self.hop_s > self.length_s:
            raise ValueError(f"hop_s ({self.hop_s}) must not exceed length_s ({self.length_s})")
        return self
