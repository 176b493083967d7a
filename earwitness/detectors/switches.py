"""Label switches: a label turned off for one source (Home Assistant's per-label switch) raises no event there.

The labels switched off are kept in `<state_dir>/labels.json`, so a restart keeps them off. Changes come
from the daemon's ordered control path; the hubs' threads read them (each change replaces the mapping whole).
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from earwitness.core.files import write_atomically

log = structlog.get_logger(__name__)

STORE_NAME = "labels.json"


class LabelSwitches:
    """Which labels are off at which source; every other label is on."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        """None: in memory only."""
        self._off: dict[str, frozenset[str]] = {}

    @classmethod
    def in_state_dir(cls, state_dir: Path | None) -> LabelSwitches:
        switches = cls(None if state_dir is None else state_dir / STORE_NAME)
        switches.load()
        return switches

    def load(self) -> None:
        """Read the file; a damaged one is logged and every label is on."""
        if self.path is None or not self.path.exists():
            return
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            self._off = {str(source): frozenset(str(label) for label in labels)
                         for source, labels in dict(document["off"]).items()}
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.error("label switches cannot be read; every label is on", path=str(self.path), error=str(error))
            self._off = {}

    def is_on(self, source: str, label: str) -> bool:
        return label not in self._off.get(source, frozenset())

    def off(self, source: str) -> frozenset[str]:
        return self._off.get(source, frozenset())

    def set(self, source: str, label: str, on: bool) -> bool:
        """Switch a label at a source; True when that changed something (then saved)."""
        current = self.off(source)
        updated = current - {label} if on else current | {label}
        if updated == current:
            return False
        off = dict(self._off)
        if updated:
            off[source] = updated
        else:
            off.pop(source, None)
        self._off = off
        self._save()
        return True

    def _save(self) -> None:
        if self.path is None:
            return
        document = {"off": {source: sorted(labels) for source, labels in sorted(self._off.items())}}
        try:
            write_atomically(json.dumps(document).encode(), self.path)
        except OSError as error:  # the switch still applies until the daemon stops
            log.error("label switches cannot be saved; kept in memory", path=str(self.path), error=str(error))
