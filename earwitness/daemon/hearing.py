"""What a source hears right now, for the installer's live view (`earwitness listen`) and the optional MQTT
`hearing` telemetry: the level, the AudioSet classes the distilled head hears best, and each label's score
against its threshold. Figures only, never audio."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from earwitness.core.windows import Detection, Window


def hearing_of(window: Window, detection: Detection, scores: Mapping[str, float], thresholds: Mapping[str, float],
               labels_off: frozenset[str]) -> Callable[[], dict[str, Any]]:
    """The newest window's figures and scores (as `earwitness status --json` shows them under each source's
    `hearing`), worked out when asked for; what the window's audio gives is taken now (the audio is reused)."""
    at, level = round(time.time(), 3), round(max(window.features.rms_dbfs, -120.0), 1)

    def heard() -> dict[str, Any]:
        top: Any = next((d["top_labels"] for d in detection.details.values() if d.get("top_labels")), [])
        pairs = top.items() if isinstance(top, dict) else top
        return {
            "at": at,
            "level_dbfs": level,
            "top_labels": [{"name": str(name), "score": round(float(score), 3)} for name, score in pairs],
            "labels": {label: {"score": round(float(score), 4), "threshold": thresholds.get(label),
                               "on": label not in labels_off}
                       for label, score in scores.items()},
        }

    return heard
