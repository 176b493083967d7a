"""How the running daemon's figures are reached (`health`): the status socket and Prometheus."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from earwitness.config.base import StrictModel


class PrometheusConfig(StrictModel):
    """An optional Prometheus text endpoint (GET /metrics) with the health figures."""

    enabled: bool = False
    host: str = "127.0.0.1"
    """Loopback by default; anything else exposes the figures to the network."""
    port: int = Field(9720, ge=1, le=65535)


class HealthConfig(StrictModel):
    """How `earwitness status` (and Prometheus) reach the running daemon's figures."""

    socket: Path | None = None
    """null = status.sock in $RUNTIME_DIRECTORY, else $XDG_RUNTIME_DIR/earwitness, else /tmp/earwitness-<uid>."""
    prometheus: PrometheusConfig = PrometheusConfig()
