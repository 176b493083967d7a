"""Reading and validating a config file so that any bytes give a Config or a one-line ConfigError.

An empty file is refused: it is what an interrupted save leaves, and it must not reset a running daemon."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import AnyStr

import yaml
from pydantic import ValidationError

from earwitness.config.detectors import DETECTOR_TYPES
from earwitness.config.schema import Config
from earwitness.core.errors import ConfigError

DEFAULT_CONFIG_PATHS = (Path("/etc/earwitness/config.yaml"),)


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
    return part in DETECTOR_TYPES or (isinstance(part, str) and part.startswith("function-"))


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
    line_start = text.rfind(newline, 0, offset) + 1
    return text.count(newline, 0, offset) + 1, offset - line_start + 1


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def default_config_path() -> Path | None:
    """The config used when none is given: $EARWITNESS_CONFIG, then /etc/earwitness/config.yaml."""
    if os.environ.get("EARWITNESS_CONFIG"):
        return Path(os.environ["EARWITNESS_CONFIG"])
    return next((path for path in DEFAULT_CONFIG_PATHS if path.exists()), None)
