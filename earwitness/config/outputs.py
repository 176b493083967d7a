"""Local outputs (`outputs`): the JSON-lines event stream."""

from __future__ import annotations

from earwitness.config.base import StrictModel


class JsonLinesConfig(StrictModel):
    enabled: bool = True
    path: str = "-"


class OutputsConfig(StrictModel):
    jsonl: JsonLinesConfig = JsonLinesConfig()
