"""Every MQTT topic this device publishes or subscribes to, in one place: the public contract with hubs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """The topics of one hub for this device."""

    prefix: str
    device: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    def state(self, source: str, label: str) -> str:
        return f"{self.base}/{source}/{label}"

    def sensor(self, source: str) -> str:
        return f"{self.base}/{source}/sensor"

    def availability(self, source: str) -> str:
        return f"{self.base}/{source}/availability"

    def sensor_set(self, source: str) -> str:
        return f"{self.base}/{source}/sensor/set"

    @property
    def sensor_set_filter(self) -> str:
        return f"{self.base}/+/sensor/set"

    @property
    def guard(self) -> str:
        return f"{self.base}/guard"

    @property
    def guard_set(self) -> str:
        return f"{self.base}/guard/set"

    @property
    def feedback(self) -> str:
        return f"{self.base}/feedback"

    def hearing(self, source: str) -> str:
        return f"{self.base}/{source}/hearing"

    def label_switch(self, source: str, label: str) -> str:
        return f"{self.base}/{source}/{label}/switch"

    def label_switch_set(self, source: str, label: str) -> str:
        return f"{self.base}/{source}/{label}/switch/set"

    @property
    def label_switch_set_filter(self) -> str:
        return f"{self.base}/+/+/switch/set"
