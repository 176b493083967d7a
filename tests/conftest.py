"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.daemon_process import DaemonProcess
from tests.mqtt_broker import Broker, Subscriber

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real recordings in ../shared/data; tests that need them skip when they are absent."""
    if not (SHARED_DATA / "manifest.csv").is_file():
        pytest.skip(f"../shared/data is absent ({SHARED_DATA}): the real recordings are needed for this test")
    return SHARED_DATA


@pytest.fixture
def daemons(tmp_path: Path):
    """Start `earwitness run` subprocesses; every one still running is killed at the end."""
    started: list[DaemonProcess] = []

    def start(*args: str, **kwargs) -> DaemonProcess:
        workdir = tmp_path / f"daemon{len(started)}"
        workdir.mkdir()
        daemon = DaemonProcess(workdir, *args, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture
def cleanup():
    """Things to stop at the end of a test, last started first."""
    items: list[Any] = []
    yield items
    for item in reversed(items):
        if isinstance(item, DaemonProcess):
            item.kill()
        elif isinstance(item, Subscriber):
            item.close()
        elif isinstance(item, Broker):
            item.stop()
