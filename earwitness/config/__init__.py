"""The configuration: one schema module per subsystem, and loading that cannot crash.

`from earwitness.config import Config, load_config, ConfigError` is the way in; a subsystem that needs
only its own section may import it from its schema module (`earwitness.config.mqtt`, ...).
"""

from earwitness.config.base import NAME_PATTERN, StrictModel
from earwitness.config.captions import (
    DEFAULT_CAPTION_PROMPT,
    CaptionBreakerConfig,
    CaptionsConfig,
    OpenAICaptionConfig,
)
from earwitness.config.clips import ClipsConfig
from earwitness.config.detectors import (
    AnomalyDetectorConfig,
    ClassifierDetectorConfig,
    DetectorConfig,
    EnergyDetectorConfig,
)
from earwitness.config.events import EventDefaults, EventsConfig, LabelEventConfig
from earwitness.config.gate import GateConfig
from earwitness.config.guard import GuardAlarmConfig, GuardConditionConfig, GuardConfig
from earwitness.config.health import HealthConfig, PrometheusConfig
from earwitness.config.loading import (
    DEFAULT_CONFIG_PATHS,
    default_config_path,
    format_validation_error,
    load_config,
    parse_config,
    read_yaml,
)
from earwitness.config.mqtt import (
    HubConfig,
    HubDiscoveryConfig,
    HubOutboxConfig,
    HubRouteConfig,
    HubTlsConfig,
)
from earwitness.config.outputs import JsonLinesConfig, OutputsConfig
from earwitness.config.schema import Config
from earwitness.config.sources import SourceConfig, WindowConfig
from earwitness.core.errors import ConfigError

__all__ = [
    "DEFAULT_CAPTION_PROMPT",
    "DEFAULT_CONFIG_PATHS",
    "NAME_PATTERN",
    "AnomalyDetectorConfig",
    "CaptionBreakerConfig",
    "CaptionsConfig",
    "ClassifierDetectorConfig",
    "ClipsConfig",
    "Config",
    "ConfigError",
    "DetectorConfig",
    "EnergyDetectorConfig",
    "EventDefaults",
    "EventsConfig",
    "GateConfig",
    "GuardAlarmConfig",
    "GuardConditionConfig",
    "GuardConfig",
    "HealthConfig",
    "HubConfig",
    "HubDiscoveryConfig",
    "HubOutboxConfig",
    "HubRouteConfig",
    "HubTlsConfig",
    "JsonLinesConfig",
    "LabelEventConfig",
    "OpenAICaptionConfig",
    "OutputsConfig",
    "PrometheusConfig",
    "SourceConfig",
    "StrictModel",
    "WindowConfig",
    "default_config_path",
    "format_validation_error",
    "load_config",
    "parse_config",
    "read_yaml",
]
