"""What a config names outside itself (models, TLS, password and key files), loaded before the config is used.

A valid file can still name a model that is not there. Loading everything first lets a reload
reject such a config before it touches the running one, and `earwitness config check` runs the
same loading, so it rejects what a reload would reject. Each problem names its key.
"""

from __future__ import annotations

import errno
import ssl
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from earwitness.config import ClassifierDetectorConfig, Config, ConfigError, DetectorConfig
from earwitness.detectors import DetectorContext, build_detector


def load_detectors(detectors: Sequence[DetectorConfig], origin: str, build: bool = True) -> list[str]:
    """Build each detector once (without state on disk) to prove its model loads; returns the labels they report.

    `build=False` only reads each model's metadata and checks that its weights are there: at start the
    runners load the models right after, and loading them twice would delay the daemon by seconds.
    """
    labels: list[str] = []
    context = DetectorContext(state_dir=None)
    for index, config in enumerate(detectors):
        key = f"{origin}: detectors[{index}]"
        if isinstance(config, ClassifierDetectorConfig):
            scored = check_model(config.model, config.labels, f"{key}.model", f"{key}.labels")
            if not build:
                labels.extend(scored)
                continue
        elif not build:
            labels.append(config.label)
            continue
        try:
            detector = build_detector(config, context)
        except Exception as error:
            where = ".model" if isinstance(config, ClassifierDetectorConfig) else ""
            raise ConfigError(f"{key}{where}: cannot load: {_reason(error)}") from None
        labels.extend(detector.labels)
        context = replace(context, thresholds={**context.thresholds, **detector.thresholds})
    return labels


def check_files(config: Config, origin: str) -> None:
    """The hubs' TLS and password files and the caption API key file must be readable (and TLS files valid)."""
    for index, hub in enumerate(config.hubs):
        key = f"{origin}: hubs[{index}]"
        if hub.tls is not None:
            try:
                context = ssl.create_default_context(cafile=_text(hub.tls.ca_file))
            except (OSError, ssl.SSLError) as error:
                raise ConfigError(f"{key}.tls.ca_file: {_reason(error)} ({hub.tls.ca_file})") from None
            if hub.tls.cert_file is not None:
                try:
                    context.load_cert_chain(str(hub.tls.cert_file), _text(hub.tls.key_file))
                except (OSError, ssl.SSLError) as error:
                    raise ConfigError(f"{key}.tls.cert_file: with key_file: {_reason(error)} ({hub.tls.cert_file})") from None
        if hub.password_file is not None:
            _readable(hub.password_file, f"{key}.password_file")
    if config.captions.backend == "openai" and config.captions.openai.api_key_file is not None:
        _readable(config.captions.openai.api_key_file, f"{origin}: captions.openai.api_key_file")


def check_resources(config: Config, origin: str, build: bool = True) -> list[str]:
    """Everything a reload loads before it swaps; returns the detectors' labels. Raises ConfigError."""
    labels = load_detectors(config.detectors, origin, build)
    check_files(config, origin)
    return labels


def check_model(model: Path | None, labels: Sequence[str] | None, model_key: str, labels_key: str) -> tuple[str, ...]:
    """The model's metadata and weights are there and know `labels`; returns the labels it scores.
    Raises ConfigError naming `model_key` or `labels_key` (a config key, or a command's option)."""
    from earwitness.detectors.classifier import load_metadata, scored_labels

    try:
        path, meta = load_metadata(model)
        known = set(meta["labels"])
        weights = path.with_suffix(".onnx")
        if not weights.is_file():
            raise FileNotFoundError(errno.ENOENT, "no model weights", str(weights))
    except Exception as error:
        raise ConfigError(f"{model_key}: cannot load: {_reason(error)}") from None
    unknown = sorted(set(labels or []) - known)
    if unknown:
        raise ConfigError(f"{labels_key}: model {path.name} has no label(s) {', '.join(unknown)}")
    return scored_labels(meta, labels)


def _readable(path: Path, key: str) -> None:
    try:
        with path.expanduser().open("rb"):
            pass
    except OSError as error:
        raise ConfigError(f"{key}: cannot read {path}: {error.strerror or error}") from None


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path.expanduser())


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return f"{type(error).__name__}: {error}"
