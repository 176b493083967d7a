"""`earwitness status` and the Prometheus endpoint against a running daemon."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from earwitness import __version__
from earwitness.daemon.status import client_socket_paths, exit_code, format_status, server_socket_path
from tests.audio import write_bursts
from tests.daemon_process import ENERGY, earwitness_command, write_config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_status_reports_a_running_daemon(tmp_path: Path, daemons) -> None:
    audio = write_bursts(tmp_path / "bursts.wav", 2.0, [0.3])
    port = free_port()
    config = write_config(tmp_path / "config.yaml", {
        "detectors": ENERGY,
        "sources": [
            {"name": "cabin", "location": "cabin", "input": f"file:{audio}", "loop": True},
            {"name": "exterior", "location": "exterior", "input": f"file:{audio}", "enabled": False},
            {"name": "door", "location": "home", "input": f"file:{tmp_path / 'missing.wav'}"},
        ],
        "health": {"socket": str(tmp_path / "status.sock"), "prometheus": {"enabled": True, "port": port}},
    })
    daemon = daemons("--config", str(config))
    daemon.wait_for(lambda: any(line.get("type") == "start" for line in daemon.lines()), what="an event")
    time.sleep(0.6)  # a few more windows, for the rate

    result = subprocess.run(earwitness_command("status", "--config", str(config), "--json"),
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 3, result.stderr  # reached, but a source failed
    figures = json.loads(result.stdout)
    cabin, exterior, door = (figures["sources"][name] for name in ("cabin", "exterior", "door"))
    assert cabin["state"] == "listening" and cabin["location"] == "cabin"
    assert cabin["windows"] >= 4
    assert 2.0 <= cabin["windows_per_second"] <= 6.0  # hop 0.25 s in real time: about 4
    assert cabin["inference_ms"] > 0
    assert cabin["dropped_frames"] == 0
    assert exterior["state"] == "disabled"
    assert door["state"] == "failed" and "missing.wav" in door["error"]
    assert figures["last_event"]["label"] == "loud" and figures["last_event"]["source"] == "cabin"
    assert figures["pid"] == daemon.process.pid
    assert figures["config"] == str(config)

    table = subprocess.run(earwitness_command("status", "--socket", str(tmp_path / "status.sock")),
                           capture_output=True, text=True, timeout=20)
    assert table.returncode == 3
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines() if line.split()}
    assert rows["cabin"][1:3] == ["cabin", "listening"]
    assert rows["exterior"][1:3] == ["exterior", "disabled"]
    assert rows["door"][1:3] == ["home", "failed"]
    assert "last event: loud" in table.stdout

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        metrics = response.read().decode()
    samples = parse_metrics(metrics)
    assert samples["earwitness_windows_total", ("source", "cabin")] >= 4
    assert samples["earwitness_source_state", ("location", "cabin"), ("source", "cabin"), ("state", "listening")] == 1
    assert samples["earwitness_source_state", ("location", "home"), ("source", "door"), ("state", "failed")] == 1
    assert samples["earwitness_dropped_frames_total", ("source", "cabin")] == 0
    assert "# TYPE earwitness_windows_total counter" in metrics
    assert any(key[0] == "earwitness_last_event_timestamp_seconds" for key in samples)

    assert daemon.stop() == 0  # a requested stop is a clean exit, even with a failed source
    assert not (tmp_path / "status.sock").exists()


def test_status_without_a_daemon_says_where_it_looked(tmp_path: Path) -> None:
    result = subprocess.run(earwitness_command("status", "--socket", str(tmp_path / "none.sock")),
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 1
    assert "no running earwitness daemon answered" in result.stderr and "none.sock" in result.stderr


def test_socket_paths() -> None:
    assert server_socket_path(None, {"RUNTIME_DIRECTORY": "/run/earwitness"}) == Path("/run/earwitness/status.sock")
    assert server_socket_path(None, {"XDG_RUNTIME_DIR": "/run/user/1000"}) == Path("/run/user/1000/earwitness/status.sock")
    assert server_socket_path(Path("/x.sock"), {"RUNTIME_DIRECTORY": "/run/earwitness"}) == Path("/x.sock")
    # An admin's shell has no RUNTIME_DIRECTORY: the service's socket is still found.
    assert Path("/run/earwitness/status.sock") in client_socket_paths(None, {"XDG_RUNTIME_DIR": "/run/user/0"})


def test_the_table_shows_hubs_and_the_exit_code_flags_a_disconnected_hub() -> None:
    snapshot: dict[str, Any] = {
        "version": "0.1.0", "pid": 42, "uptime_s": 3723,
        "sources": {"cabin": {"location": "car", "state": "listening", "error": None, "windows": 10,
                              "windows_per_second": 4.0, "dropped_frames": 0, "inference_ms": 1.5}},
        "sinks": {"mqtt:home": {"connected": True, "outbox": 0},
                  "mqtt:vehicle": {"connected": False, "outbox": 17, "error": "connection refused"},
                  "captions": {"backend": "template", "requested": 3}},
        "last_event": None,
    }
    text = format_status(snapshot)
    assert "up 1h 2m" in text
    assert any(line.split() == ["mqtt:vehicle", "NO", "17"] for line in text.splitlines())
    assert any(line.split() == ["mqtt:home", "yes", "0"] for line in text.splitlines())
    assert "  mqtt:vehicle: connection refused" in text
    assert "captions: backend template, requested 3" in text
    assert exit_code(snapshot) == 3
    snapshot["sinks"]["mqtt:vehicle"]["connected"] = True
    assert exit_code(snapshot) == 0


def test_metrics_carry_hub_figures() -> None:
    from earwitness.core.health import Health
    from earwitness.integrations.prometheus import render_metrics

    health = Health()
    health.source("cabin", "car").record_window(0.002)
    health.sinks["mqtt:home"] = {"connected": True, "outbox": 0}
    health.sinks["mqtt:vehicle"] = {"connected": False, "outbox": 17}
    health.sinks["captions"] = {"backend": "template"}
    text = render_metrics(health, "van")
    samples = parse_metrics(text)
    assert samples["earwitness_hub_connected", ("hub", "mqtt:vehicle")] == 0
    assert samples["earwitness_hub_outbox_messages", ("hub", "mqtt:vehicle")] == 17
    assert samples["earwitness_hub_connected", ("hub", "mqtt:home")] == 1
    assert samples["earwitness_inference_seconds", ("source", "cabin")] == 0.002
    assert samples["earwitness_info", ("device", "van"), ("version", __version__)] == 1
    assert "captions" not in text


def test_metrics_print_exact_values() -> None:
    from earwitness.core.health import Health
    from earwitness.integrations.prometheus import render_metrics

    health = Health()
    cabin = health.source("cabin", "car")
    cabin.windows, cabin.dropped_frames = 1234567, 98765432101
    health.sinks["mqtt:home"] = {"connected": True, "outbox": 123456789, "outbox_in_memory": 3, "outbox_write_failures": 7654321}
    samples = parse_metrics(render_metrics(health, "van"))
    assert samples["earwitness_windows_total", ("source", "cabin")] == 1234567
    assert samples["earwitness_dropped_frames_total", ("source", "cabin")] == 98765432101
    assert samples["earwitness_hub_outbox_messages", ("hub", "mqtt:home")] == 123456789
    assert samples["earwitness_hub_outbox_write_failures_total", ("hub", "mqtt:home")] == 7654321
    assert samples["earwitness_hub_outbox_in_memory_messages", ("hub", "mqtt:home")] == 3


def parse_metrics(text: str) -> dict[tuple, float]:
    """(name, sorted label pairs...) -> value, read with Prometheus' own text parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, *sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}
