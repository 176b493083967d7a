"""The unit passes `systemd-analyze verify` and `security --offline=yes` with an exposure of 2.5 or less.

Runs script/check-systemd (which CI's test run reaches through this test) and writes its
figures into the test run's output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is absent (apt install systemd)")
def test_unit_verifies_and_exposure_is_at_most_2_5(request: pytest.FixtureRequest) -> None:
    result = subprocess.run([str(REPO / "script/check-systemd")], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHON": sys.executable})
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # into CI's output, even with -q
            reporter.write_line("")
            for line in result.stdout.splitlines():
                reporter.write_line(f"check-systemd: {line}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": OK") == 4


def test_unit_starts_after_the_clock_is_set() -> None:
    unit = (REPO / "systemd" / "earwitness.service").read_text()
    after = [line.split("=", 1)[1].split() for line in unit.splitlines() if line.startswith("After=")]
    assert any("time-sync.target" in targets for targets in after)
