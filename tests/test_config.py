"""Config validation: precise errors with the key path, defaults that work."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from earwitness.config import Config, ConfigError, load_config, parse_config
from tests.daemon_process import earwitness_command

REPO = Path(__file__).resolve().parent.parent


def config_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(earwitness_command("config", "check", str(path)), capture_output=True, text=True, timeout=60)


def test_defaults_are_valid() -> None:
    config = parse_config({})
    assert config == Config()
    assert config.windows.hop_s <= 0.25
    assert config.sources[0].input == "mic"


def test_example_config_passes_check() -> None:
    result = config_check(REPO / "config" / "earwitness.yaml")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_example_config_documents_the_defaults() -> None:
    assert load_config(REPO / "config" / "earwitness.yaml") == Config()


def test_example_config_leaves_each_label_the_models_event_settings() -> None:
    """What `earwitness eval` measures (no config: the model's settings) is what the example config runs."""
    meta = json.loads((REPO / "earwitness" / "models" / "earwitness-v2.json").read_text())
    example = load_config(REPO / "config" / "earwitness.yaml").events
    for label, recommended in meta["event_settings"].items():
        assert example.for_label(label, recommended) == Config().events.for_label(label, recommended)
        assert example.for_label(label, recommended).model_dump(include=set(recommended)) == recommended


def test_unknown_key_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sources:\n  - name: cabin\n    input: mic\n    volume: 11\n")
    result = config_check(path)
    assert result.returncode != 0
    assert "sources[0].volume" in result.stderr
    assert "Extra inputs are not permitted" in result.stderr


def test_wrong_type_names_path_and_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("windows:\n  hop_s: quarter\n")
    result = config_check(path)
    assert result.returncode != 0
    assert "windows.hop_s" in result.stderr and "'quarter'" in result.stderr


@pytest.mark.parametrize(
    "data, path_in_error",
    [
        ({"detectors": [{"type": "energy", "rise_db": -3}]}, "detectors[0].rise_db"),
        ({"detectors": [{"type": "nonsense"}]}, "detectors[0]"),
        ({"windows": {"length_s": 0.5, "hop_s": 1.0}}, "windows"),
        ({"sources": [{"name": "a"}, {"name": "a"}]}, "sources"),
        ({"sources": [{"input": "microphone"}]}, "sources[0].input"),
        ({"events": {"labels": {"loud": {"threshold": 1.5}}}}, "events.labels.loud.threshold"),
        ({"device_id": "my device"}, "device_id"),
    ],
)
def test_invalid_values_are_rejected(data: dict, path_in_error: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(data, "test.yaml")
    assert f"test.yaml: {path_in_error}" in str(error.value)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("sources: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(scalar)


def test_label_overrides_fall_back_to_defaults() -> None:
    config = parse_config({"events": {"defaults": {"cooldown_s": 5}, "labels": {"loud": {"threshold": 0.9}}}})
    loud = config.events.for_label("loud")
    assert loud.threshold == 0.9 and loud.cooldown_s == 5
    assert config.events.for_label("other").threshold is None


@pytest.mark.parametrize("content, message", [
    (b"", "no settings (empty or only comments)"),
    (b"# nothing but a comment\n", "no settings"),
    (b"- a\n- b\n", "top level must be a mapping"),
    ("location: Küche\n".encode("latin-1"), "line 1, column 12: not UTF-8 (byte 0xfc)"),
    (b"windows:\n  hop_s: [1\n", "line 3, column 1: not valid YAML"),
    (b"windows:\n  hop_s: 0.1\n  hop_s: 0.2\n", "line 3: duplicate key windows.hop_s (first at line 2)"),
    (b"windows: " + b"[" * 400 + b"]" * 400, "nesting too deep"),
    (b"windows: " + b"{a: " * 40 + b"1" + b"}" * 40, "nesting too deep"),
    (b"a: &a [1,1,1,1,1,1,1,1,1,1]\n" + b"".join(b"%c: &%c [" % (98 + i, 98 + i) + b",".join([b"*%c" % (97 + i)] * 10) + b"]\n"
                                                 for i in range(6)), "too many values"),
    (b"device_id: " + b"x" * 300_000 + b"\n", "file too large"),
    (b"device_id: " + b"9" * 5000 + b"\n", "a value cannot be read"),
    (b"state_dir: \"/var/\\0lib\"\n", "state_dir: contains a NUL character"),
    (b"device_id: !!timestamp soon\n", "a value cannot be read"),
    (b"device_id: \x1d\n", "character #x001d is not allowed"),
    (b"windows: {hop_s: [1, 2]}\n", "windows.hop_s"),
])
def test_any_bytes_give_a_one_line_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value)
    assert str(error.value).startswith(f"{path}: ") and len(str(error.value).splitlines()) == 1
    assert len(str(error.value)) < 400


def test_an_empty_config_at_start_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("")
    result = subprocess.run(earwitness_command("run", "--config", str(config)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no settings" in result.stderr and "Traceback" not in result.stderr
    config.write_text("{}\n")
    assert config_check(config).returncode == 0
