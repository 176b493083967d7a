"""Writing state files so that a crash or a power cut never leaves half a file behind."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(data: bytes, path: Path) -> None:
    """Write `data` to `path` atomically: a temporary file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
