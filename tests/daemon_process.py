"""Run `earwitness` as a real subprocess and read what it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ENERGY = [{"type": "energy"}]
"""Daemon tests that play tone bursts use the energy detector (label `loud`): a tone is no glass break."""


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def earwitness_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "earwitness", *args]


class DaemonProcess:
    """`earwitness run` in the background; stdout (JSON lines) and stderr (JSON logs) go to files."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None, stdin: Any = None) -> None:
        self.stdout_path = workdir / "daemon.out"
        self.stderr_path = workdir / "daemon.err"
        self._stdout = self.stdout_path.open("w")
        self._stderr = self.stderr_path.open("w")
        self.process = subprocess.Popen(
            earwitness_command("run", *args), stdout=self._stdout, stderr=self._stderr, stdin=stdin,
            # Each daemon gets its own runtime (status socket) and state directories.
            env={**os.environ, "RUNTIME_DIRECTORY": str(workdir), "STATE_DIRECTORY": str(workdir / "state"), **(env or {})},
        )

    def lines(self) -> list[dict[str, Any]]:
        return _json_lines(self.stdout_path)

    def logs(self) -> list[dict[str, Any]]:
        return _json_lines(self.stderr_path)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            if self.process.poll() is not None and not predicate():
                raise AssertionError(f"daemon exited ({self.process.returncode}) before {what}:\n{self.stderr_path.read_text()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n{self.stderr_path.read_text()[-3000:]}")

    def wait_for_log(self, event: str, timeout: float = 15.0, **fields: Any) -> dict[str, Any]:
        def match() -> dict[str, Any] | None:
            return next((l for l in self.logs() if l.get("event") == event and all(l.get(k) == v for k, v in fields.items())), None)

        return self.wait_for(match, timeout, what=f"log {event!r} {fields}")

    def stop(self, timeout: float = 5.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout)
        finally:
            self._stdout.close()
            self._stderr.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stdout.close()
        self._stderr.close()


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines
