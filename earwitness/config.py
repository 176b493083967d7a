"""The configuration schema, validated at load with precise errors.

Every key has a default, so `{}` (or no file at all) gives a working daemon. An empty file is
refused: it is what an interrupted save leaves, and it must not reset a running daemon.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, AnyStr, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
DEFAULT_CONFIG_PATHS = (Path("/etc/earwitness/config.yaml"),)


class ConfigError(Exception):
    """A config file that cannot be read or does not validate; the message names the key path."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    def _hop_within_window(self) -> "WindowConfig":
        if self.hop_s > self.length_s:
            raise ValueError(f"hop_s ({self.hop_s}) must not exceed length_s ({self.length_s})")
        return self


class EnergyDetectorConfig(StrictModel):
    """Onset/level detector: scores how far a window's level rises above the noise floor."""

    type: Literal["energy"] = "energy"
    label: str = Field("loud", pattern=NAME_PATTERN)
    rise_db: float = Field(20.0, gt=0)
    min_level_dbfs: float = Field(-70.0, le=0)
    floor_adapt_s: float = Field(30.0, gt=0)


class ClassifierDetectorConfig(StrictModel):
    """The trained classifier (glass_break, scratch and the shipped safety labels)."""

    type: Literal["classifier"] = "classifier"
    model: Path | None = None
    """A model's .json (beside its .onnx), as written by `earwitness train`; null = the shipped model."""
    backend: Literal["auto", "onnx"] = "auto"
    """Either: the daemon runs the model in ONNX Runtime (torch is for training only)."""
    labels: list[str] | None = None
    """Score only these labels (a subset of the model's shipped labels); null = all shipped labels."""


class AnomalyDetectorConfig(StrictModel):
    """Learns each source's normal sound; scores what does not belong. Place it after the classifier."""

    type: Literal["anomaly"] = "anomaly"
    label: str = Field("anomaly", pattern=NAME_PATTERN)
    learn_s: float = Field(600.0, gt=0)
    """Learning period (seconds of audio per source) during which it never alerts."""
    max_per_day: float = Field(2.0, gt=0)
    """False-anomaly budget: the threshold adapts to recent normal scores to meet it."""
    bank_size: int = Field(2048, ge=16, le=65536)
    """Normal windows kept in the memory bank (reservoir-sampled)."""
    k: int = Field(3, ge=1, le=64)
    """Neighbours averaged for the kNN distance."""
    exclude_s: float = Field(5.0, ge=0)
    """Bank entries taken this close in time to a window are not its neighbours."""
    calib_exclude_s: float = Field(30.0, ge=0)
    """For the first threshold (end of learning), leave-one-out distances ignore entries this close in time."""
    adapt_s: float = Field(86400.0, gt=0)
    """Slow adaptation: normal windows renew the bank over about this long."""
    habituate_episodes: int = Field(3, ge=2)
    """A new sound heard in this many separate episodes is learnt as normal."""
    episode_gap_s: float = Field(60.0, ge=0)
    """Anomalies further apart than this are separate episodes."""
    claim_ratio: float = Field(0.5, gt=0, le=1)
    """A window whose known-label score reaches this x that label's threshold is never learnt."""
    level_weight: float = Field(0.02, ge=0)
    """Weight of the window level (per dB) beside the unit-length embedding."""
    flux_weight: float = Field(0.5, ge=0)
    """Weight of the spectral flux."""
    crest_weight: float = Field(0.05, ge=0)
    """Weight (per dB) of the crest: loudest frame over the window's mean energy (transients)."""
    label_weight: float = Field(1.0, ge=0)
    """Weight of the classifier's label probabilities (as ln(p + 0.001) / 7)."""
    min_distance: float = Field(0.0, ge=0)
    """Floor of the adaptive distance threshold."""
    quiet_percentile: float = Field(10.0, ge=0, le=100)
    """Windows quieter than this percentile of recent levels are never anomalous (the background
    receding, e.g. music stopping, is not a new sound); 0 = off."""
    persist: bool = True
    """Keep the model in <state_dir>/anomaly/<source>.npz across restarts."""
    save_interval_s: float = Field(300.0, gt=0)


DetectorConfig = Annotated[
    Union[EnergyDetectorConfig, ClassifierDetectorConfig, AnomalyDetectorConfig], Field(discriminator="type")
]


_DETECTOR_UNION = get_args(DetectorConfig)[0]
_DETECTOR_TYPES = {member.model_fields["type"].default for member in get_args(_DETECTOR_UNION) or (_DETECTOR_UNION,)}


class LabelEventConfig(StrictModel):
    """How one label's score stream becomes events. Unset keys fall back to `events.defaults`."""

    threshold: float | None = Field(None, ge=0, le=1)
    release_ratio: float | None = Field(None, gt=0, le=1)
    min_duration_s: float | None = Field(None, ge=0)
    merge_gap_s: float | None = Field(None, ge=0)
    cooldown_s: float | None = Field(None, ge=0)
    update_interval_s: float | None = Field(None, gt=0)


class EventDefaults(StrictModel):
    threshold: float | None = Field(None, ge=0, le=1)
    release_ratio: float = Field(0.7, gt=0, le=1)
    min_duration_s: float = Field(0.0, ge=0)
    merge_gap_s: float = Field(0.5, ge=0)
    cooldown_s: float = Field(2.0, ge=0)
    update_interval_s: float = Field(1.0, gt=0)


class EventsConfig(StrictModel):
    defaults: EventDefaults = EventDefaults()
    labels: dict[str, LabelEventConfig] = {}

    def for_label(self, label: str, recommended: dict[str, float] | None = None) -> EventDefaults:
        """The effective settings of one label, later ones winning: the built-in defaults, the
        detector's `recommended` settings for the label, the keys set in `defaults`, the label's overrides."""
        settings = self.defaults
        if recommended:
            unset = {k: v for k, v in recommended.items() if k not in self.defaults.model_fields_set}
            settings = settings.model_copy(update=unset)
        overrides = self.labels.get(label)
        if overrides is not None:
            settings = settings.model_copy(update=overrides.model_dump(exclude_none=True))
        return settings


class JsonLinesConfig(StrictModel):
    enabled: bool = True
    path: str = "-"


class OutputsConfig(StrictModel):
    jsonl: JsonLinesConfig = JsonLinesConfig()


class HubTlsConfig(StrictModel):
    """TLS to a broker: the CA that signed its certificate, an optional client certificate."""

    ca_file: Path | None = None
    """null = the system's CA store."""
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True

    @model_validator(mode="after")
    def _cert_with_key(self) -> "HubTlsConfig":
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
    def _one_password(self) -> "HubConfig":
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("set password_file or password_env, not both")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        return self

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else (8883 if self.tls is not None else 1883)


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
    def _one_key(self) -> "OpenAICaptionConfig":
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
    def _model_for_openai(self) -> "CaptionsConfig":
        if self.backend == "openai" and not self.openai.model:
            raise ValueError("backend 'openai' needs openai.model (the model name the server serves)")
        return self

    @property
    def caption_when(self) -> Literal["start", "complete"]:
        if self.when != "auto":
            return self.when
        return "complete" if self.backend == "openai" and self.send_audio else "start"


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


class Config(StrictModel):
    device_id: str = Field("earwitness", pattern=NAME_PATTERN)
    sensors_enabled: bool = True
    state_dir: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    sources: list[SourceConfig] = Field(default_factory=lambda: [SourceConfig()], min_length=1)
    windows: WindowConfig = WindowConfig()
    detectors: list[DetectorConfig] = Field(
        default_factory=lambda: [ClassifierDetectorConfig(), AnomalyDetectorConfig()], min_length=1
    )
    events: EventsConfig = EventsConfig()
    outputs: OutputsConfig = OutputsConfig()
    health: HealthConfig = HealthConfig()
    hubs: list[HubConfig] = []
    captions: CaptionsConfig = CaptionsConfig()
    clips: ClipsConfig = ClipsConfig()

    @field_validator("sources")
    @classmethod
    def _unique_source_names(cls, sources: list[SourceConfig]) -> list[SourceConfig]:
        names = [source.name for source in sources]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique, repeated: {', '.join(duplicates)}")
        return sources

    @model_validator(mode="after")
    def _hubs_valid(self) -> "Config":
        names = [hub.name for hub in self.hubs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"hub names must be unique, repeated: {', '.join(duplicates)}")
        known = {source.name for source in self.sources}
        for hub in self.hubs:
            unknown = sorted(set(hub.route.sources or []) - known)
            if unknown:
                raise ValueError(f"hub {hub.name!r}: route.sources names unknown sources: {', '.join(unknown)}")
        return self

    def resolved_state_dir(self) -> Path:
        """Where durable state lives: the config's, systemd's StateDirectory, or the user's."""
        if self.state_dir is not None:
            return self.state_dir
        if os.environ.get("STATE_DIRECTORY"):
            return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
        return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state")) / "earwitness"


def format_validation_error(error: ValidationError, origin: str) -> str:
    """One line per problem: `origin: key.path: message (got value)`."""
    lines = []
    for problem in error.errors():
        path = ".".join(_path_part(part) for part in problem["loc"] if not _is_union_tag(part))
        path = re.sub(r"\.\[", "[", path) or "(top level)"
        got = "" if problem["type"] == "missing" else f" (got {_one_line(repr(problem['input']), 80)})"
        lines.append(f"{origin}: {path}: {problem['msg']}{got}")
    return "\n".join(lines)


def _path_part(part: str | int) -> str:
    return f"[{part}]" if isinstance(part, int) else str(part)


def _is_union_tag(part: str | int) -> bool:
    """Pydantic puts the discriminator's value (`energy`, ...) in the error path; the user never wrote it."""
    return part in _DETECTOR_TYPES or (isinstance(part, str) and part.startswith("function-"))


def parse_config(data: object, origin: str = "<config>") -> Config:
    """Validate already-parsed YAML data."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, origin)) from None


def load_config(path: Path | str | None) -> Config:
    """Load and validate a YAML config file; `None` gives the embedded defaults. Any bytes give a Config or a ConfigError."""
    if path is None:
        return Config()
    return parse_config(read_yaml(Path(path)), str(path))


MAX_CONFIG_BYTES = 256 * 1024
"""The commented example is 13 kB."""
MAX_DEPTH = 32
MAX_VALUES = 100_000
"""Scalars, lists and mappings in the file, each alias counted as often as it is used."""
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML was built with it: far faster on a large file, and it limits nesting itself."""


def read_yaml(path: Path) -> object:
    """The YAML document in `path`, refused with a one-line ConfigError when it is too large, not UTF-8,
    not YAML, empty, nested too deep or repeats a key: a config edit must never crash the daemon."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: cannot read config: {getattr(error, 'strerror', None) or error}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: file too large (over {MAX_CONFIG_BYTES} bytes); a config is a few kilobytes")
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line, column = _position(raw, error.start)
        raise ConfigError(f"{path}: line {line}, column {column}: not UTF-8 (byte 0x{raw[error.start]:02x}); "
                          "save the file as UTF-8") from None
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{path}: the file has no settings (empty or only comments); write {{}} for the "
                              "built-in defaults (an empty file is refused: it is what a failed save leaves)")
        _check_nodes(node, path)
        return loader.construct_document(node)
    except yaml.reader.ReaderError as error:  # a control character: YAML refuses the whole stream
        line, column = _position(text, error.position)
        raise ConfigError(f"{path}: line {line}, column {column}: not valid YAML: character #x{error.character:04x} "
                          "is not allowed") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = "; ".join(part for part in (error.context, error.problem) if part)
        raise ConfigError(f"{path}: {where}not valid YAML: {_one_line(what)}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {_one_line(str(error))}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nesting too deep (a config has at most {MAX_DEPTH} levels)") from None
    except ConfigError:
        raise
    except Exception as error:  # PyYAML's constructors raise what they meet: 5000 digits, a 13th month, `!!timestamp x`
        raise ConfigError(f"{path}: a value cannot be read: {type(error).__name__}: {_one_line(str(error))}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_nodes(root: yaml.Node, path: Path) -> None:
    """Refuse what YAML allows but a config never has: duplicate keys (the first would be silently
    overridden), nesting deeper than MAX_DEPTH, more than MAX_VALUES values once aliases are expanded
    (a "billion laughs" file), NUL characters (no path or name may hold one)."""
    stack: list[tuple[yaml.Node, int, str]] = [(root, 1, "")]
    values = 0
    while stack:
        node, depth, key_path = stack.pop()
        values += 1
        line = node.start_mark.line + 1
        where = f"{path}: line {line}: {key_path or '(top level)'}"
        if values > MAX_VALUES:
            raise ConfigError(f"{path}: too many values (over {MAX_VALUES}, aliases expanded)")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: nesting too deep (a config has at most {MAX_DEPTH} levels)")
        if isinstance(node, yaml.ScalarNode):
            if "\0" in node.value:
                raise ConfigError(f"{where}: contains a NUL character")
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, depth + 1, f"{key_path}[{index}]") for index, item in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                child = f"{key_path}.{name}" if key_path else str(name)
                if name is not None and name != "<<":
                    if name in seen:
                        raise ConfigError(f"{path}: line {key.start_mark.line + 1}: duplicate key {child} "
                                          f"(first at line {seen[name]})")
                    seen[name] = key.start_mark.line + 1
                stack.append((key, depth + 1, child))
                stack.append((value, depth + 1, child))


def _position(text: AnyStr, offset: int) -> tuple[int, int]:
    """1-based line and column of an offset into `text`."""
    newline = "\n" if isinstance(text, str) else b"\n"
    line_start = text.rfind(newline, 0, offset) + 1  # type: ignore[arg-type]
    return text.count(newline, 0, offset) + 1, offset - line_start + 1  # type: ignore[arg-type]


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def default_config_path() -> Path | None:
    """The config used when none is given: $EARWITNESS_CONFIG, then /etc/earwitness/config.yaml."""
    if os.environ.get("EARWITNESS_CONFIG"):
        return Path(os.environ["EARWITNESS_CONFIG"])
    return next((path for path in DEFAULT_CONFIG_PATHS if path.exists()), None)
