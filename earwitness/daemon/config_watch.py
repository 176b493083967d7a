"""Watching the config file: a change is reloaded once it has settled."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

CONFIG_POLL_S = 1.0
"""How often the file is looked at: a reload follows a change within about two polls; each poll wakes the daemon."""


class ConfigWatcher:
    """Asks for a reload (`reload`) when the file's size or modification time has changed and then held still."""

    def __init__(self, path: Path | None, reload: Callable[[str], None]) -> None:
        self._path = path
        self._reload = reload
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            stat = os.stat(self._path)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    async def run(self) -> None:
        """Reload once a change to the file has settled: a file caught half-written (an editor's
        save, a truncating write) would otherwise be read as a different, even valid, config."""
        changed_to = None
        while True:
            await asyncio.sleep(CONFIG_POLL_S)
            stamp = self._stat()
            if stamp is None or stamp == self._stamp:
                changed_to = None
            elif stamp != changed_to:
                changed_to = stamp
            else:
                self._stamp, changed_to = stamp, None
                self._reload("config file changed")
