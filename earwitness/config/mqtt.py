"""The MQTT brokers that receive alerts (`hubs`): connection, TLS, routing, discovery, outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from earwitness.config.base import NAME_PATTERN, StrictModel


class HubTlsConfig(StrictModel):
    """TLS to a broker: the CA that signed its certificate, an optional client certificate."""

    ca_file: Path | None = None
    """null = the system's CA store."""
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True

    @model_validator(mode="after")
    def _cert_with_key(self) -> HubTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class HubRouteConfig(StrictModel):
    """Which events a hub receives; null = all."""

    labels: list[str] | None = None
    sources: list[str] | None = None


class HubDiscoveryConfig(StrictModel):
    """Home Assistant MQTT discovery."""

    enabled: bool = True
    prefix: str = "homeassistant"
    off_delay_s: int = Field(60, ge=1)
    """The binary sensors fall back to OFF this long after their last ON (a missed OFF)."""


class HubOutboxConfig(StrictModel):
    """Limits of a hub's durable outbox; what exceeds them is dropped (oldest first) and logged."""

    max_messages: int = Field(10000, ge=1)
    max_age_s: int = Field(86400, ge=1)
    """Also the MQTT 5 message expiry interval."""


class HubConfig(StrictModel):
    """One MQTT broker that receives alerts (for example `home`, `vehicle`)."""

    name: str = Field(pattern=NAME_PATTERN)
    host: str
    port: int | None = Field(None, ge=1, le=65535)
    """null = 8883 with TLS, else 1883."""
    tls: HubTlsConfig | None = None
    username: str | None = None
    password_file: Path | None = None
    """Read at each connect; never logged."""
    password_env: str | None = None
    """Name of an environment variable holding the password; never logged."""
    client_id: str | None = None
    """null = earwitness-<device_id>-<name>."""
    keepalive: int = Field(30, ge=5, le=65535)
    prefix: str = "earwitness"
    qos: Literal[0, 1, 2] = 1
    protocol: Literal["5", "3.1.1"] = "5"
    route: HubRouteConfig = HubRouteConfig()
    discovery: HubDiscoveryConfig = HubDiscoveryConfig()
    allow_remote_control: bool = False
    hearing: bool = False
    """Publish what each routed source hears, at most once a second, to `<prefix>/<device>/<source>/hearing`:
    the level in dBFS and the top AudioSet labels (figures only, never audio)."""
    outbox: HubOutboxConfig = HubOutboxConfig()
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(60.0, gt=0)

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, (int, float)) else value

    @field_validator("prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        if not value or any(c in value for c in "+#") or value.startswith("/") or value.endswith("/"):
            raise ValueError("must be a non-empty topic without wildcards or leading/trailing '/'")
        return value

    @model_validator(mode="after")
    def _one_password(self) -> HubConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("set password_file or password_env, not both")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        return self

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else (8883 if self.tls is not None else 1883)
