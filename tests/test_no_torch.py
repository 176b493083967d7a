"""The runtime never imports torch: `run`, `detect`, `eval` and `bench` work from a plain install."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

from tests.audio import write_bursts

NOT_IMPORTED = ("earwitness.training", "earwitness.detectors.cnn", "earwitness.__main__")
"""Modules that may import torch (the `train` extra: training and the torch network it trains), and the
`python -m earwitness` entry point (importing it runs the CLI)."""
EVAL_MODULES = ("earwitness.training.commands", "earwitness.training.evaluate", "earwitness.training.anomaly_eval",
                "earwitness.training.calibrate", "earwitness.training.data", "earwitness.training.home_eval",
                "earwitness.training.long_day", "earwitness.training.day_plan", "earwitness.training.anomaly_day")
"""What `earwitness eval` (without --baseline) loads: part of the runtime."""

CHECK = """
import contextlib, importlib, io, json, pkgutil, sys
import earwitness
from earwitness.cli import main

not_imported, eval_modules, audio = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
for info in pkgutil.walk_packages(earwitness.__path__, "earwitness."):
    if not info.name.startswith(tuple(not_imported)):
        importlib.import_module(info.name)
for name in eval_modules:
    importlib.import_module(name)
out = io.StringIO()
with contextlib.redirect_stdout(out):
    status = main(["detect", audio])
print(json.dumps({"status": status, "events": out.getvalue().splitlines(),
                  "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch"),
                  "imported": sorted(m for m in sys.modules if m.startswith("earwitness."))}))
"""


def test_runtime_modules_and_detect_do_not_import_torch(tmp_path: Path) -> None:
    audio = write_bursts(tmp_path / "bursts.flac", 6.0, [2.0, 4.0])
    done = subprocess.run(
        [sys.executable, "-c", CHECK, json.dumps(NOT_IMPORTED), json.dumps(EVAL_MODULES), str(audio)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["status"] == 0
    assert all(json.loads(line)["source"] == str(audio) for line in report["events"])
    assert {"earwitness.daemon.service", "earwitness.detectors.classifier", "earwitness.bench",
            "earwitness.integrations.mqtt", *EVAL_MODULES} <= set(report["imported"])
    assert report["torch"] == [], "the runtime imported torch"


def test_a_plain_install_requires_no_torch() -> None:
    """pyproject.toml: torch is in the `train` extra, not among the dependencies of a plain install."""
    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    assert "torch" not in {Requirement(r).name for r in project["dependencies"]}
    assert "torch" in {Requirement(r).name for r in project["optional-dependencies"]["train"]}
