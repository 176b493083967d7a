"""The verdicts false-alarm feedback takes, and its error: shared by the suppression store (detectors), the MQTT
`feedback` command (integrations) and the daemon's control path."""

from __future__ import annotations

from typing import Literal

Verdict = Literal["false_alarm", "confirmed"]
VERDICTS: tuple[str, ...] = ("false_alarm", "confirmed")


class FeedbackError(Exception):
    """Feedback that cannot be applied: the message says why, for the log or the terminal."""
