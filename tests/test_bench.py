"""`earwitness bench` runs end to end and writes every figure (values are for people, not asserted)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.daemon_process import earwitness_command
from tests.mqtt_broker import MOSQUITTO

KEYS = {"model_ms_per_window", "frontend_ms_per_window", "yamnet_ms_per_window", "detect_x_realtime",
        "listen_cpu_percent", "rss_mb", "startup_s", "latency_ms_p50", "latency_ms_p95", "latency_ms_max",
        "start_to_listening_s", "runtime_install_mb", "gate_listen_cpu_percent", "gate_latency_ms_p95",
        "quiet_listen_cpu_percent", "gate_quiet_listen_cpu_percent", "latency_from_break_ms_p95"}


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")
def test_bench_writes_every_figure(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        earwitness_command("bench", "--json", str(out), "--windows", "50", "--listen-s", "18",
                           "--data", str(shared_data), "--yamnet", str(shared_data.parent / "models/yamnet/yamnet.tflite")),
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures) >= KEYS
    assert figures["events_played"] == 3 and figures["events_received"] >= 2
    assert figures["gate_events_received"] >= 2, "the energy gate lets the glass breaks through"
    assert all(isinstance(figures[key], (int, float)) for key in KEYS - {"yamnet_ms_per_window"})
    assert "latency_ms_p95" in result.stdout


@pytest.mark.parametrize("argv", [["--listen-s", "5"], ["--windows", "0"]])
def test_bench_refuses_a_run_too_short_to_measure(tmp_path: Path, argv: list[str]) -> None:
    """Too little audio to get past the warm-up, or no window to time: a one-line error and status 2, not a
    traceback minutes into the run."""
    done = subprocess.run(earwitness_command("bench", "--json", str(tmp_path / "b.json"), *argv),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("earwitness bench: ") and "Traceback" not in done.stderr
    assert not (tmp_path / "b.json").exists()
