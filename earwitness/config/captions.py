"""The caption stage (`captions`): backend, endpoint, limits and breaker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from earwitness.config.base import StrictModel

DEFAULT_CAPTION_PROMPT = (
    "You caption sound events heard by a home or vehicle sound sensor. Reply with one short sentence "
    "in plain language (at most 20 words) saying what was most likely heard and where. Use the attached "
    "audio when there is one; otherwise rely only on the detector's findings and invent no details."
)


class OpenAICaptionConfig(StrictModel):
    """Any OpenAI-compatible `chat/completions` endpoint (vLLM, llama.cpp llama-server, Ollama, LM Studio)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """`/chat/completions` is appended."""
    model: str | None = None
    """The served model name; required with `backend: openai`."""
    api_key_file: Path | None = None
    """A file holding the API key (sent as a Bearer token; never logged)."""
    api_key_env: str | None = None
    """Name of an environment variable holding the API key."""
    timeout_s: float = Field(20.0, gt=0)
    """One HTTP attempt's time limit."""
    max_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.2, ge=0, le=2)
    prompt: str = DEFAULT_CAPTION_PROMPT
    """The system message; the event's context (and audio) follow as the user message. "" = no system message."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:8000/v1")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_key(self) -> OpenAICaptionConfig:
        if self.api_key_file is not None and self.api_key_env is not None:
            raise ValueError("set api_key_file or api_key_env, not both")
        return self


class CaptionBreakerConfig(StrictModel):
    """Circuit breaker: after `failures` failed captions in a row, skip the endpoint for `reset_s`."""

    failures: int = Field(3, ge=1)
    reset_s: float = Field(60.0, gt=0)


class CaptionsConfig(StrictModel):
    """The caption stage: a caption per event, sent as an `update` of that event; never delays an alert."""

    backend: Literal["template", "openai", "none"] = "template"
    when: Literal["auto", "start", "complete"] = "auto"
    """start: caption as the event starts (fast, from the detector's findings); complete: once its clip is
    complete (event ended or clips.max_s reached); auto: complete with send_audio, else start."""
    openai: OpenAICaptionConfig = OpenAICaptionConfig()
    send_audio: bool = False
    """Send the event's audio (16 kHz WAV, pre-roll included) to the endpoint. Off: no audio leaves the process."""
    max_audio_s: float = Field(30.0, gt=0, le=120)
    """At most this much audio per request, from the clip's start; lower still for a model that hears less
    (Qwen2-Audio and Gemma 3n hear 30 s)."""
    max_chars: int = Field(200, ge=20, le=1000)
    """A longer caption is cut at its last full sentence within this length."""
    max_sentences: int = Field(2, ge=1, le=10)
    queue_size: int = Field(32, ge=1)
    """Captions waiting for a worker; beyond it an event gets the template caption at once."""
    concurrency: int = Field(1, ge=1, le=16)
    timeout_s: float = Field(45.0, gt=0)
    """Overall limit for one caption, retries included; then the template caption is used."""
    retries: int = Field(2, ge=0, le=10)
    backoff_s: float = Field(1.0, ge=0)
    """Wait before the first retry; doubled for each further one."""
    rate_limit_per_minute: int = Field(30, ge=0)
    """Requests to the endpoint per minute, 0 = unlimited; beyond it the template caption is used."""
    breaker: CaptionBreakerConfig = CaptionBreakerConfig()

    @model_validator(mode="after")
    def _model_for_openai(self) -> CaptionsConfig:
        if self.backend == "openai" and not self.openai.model:
            raise ValueError("backend 'openai' needs openai.model (the model name the server serves)")
        return self

    @property
    def caption_when(self) -> Literal["start", "complete"]:
        if self.when != "auto":
            return self.when
        return "complete" if self.backend == "openai" and self.send_audio else "start"
