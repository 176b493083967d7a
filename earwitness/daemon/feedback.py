"""The daemon's side of feedback: the ring of recent events, verdicts on them, what feedback kept quiet, and the
labels switched off per source.

Every verdict and every change to the examples (MQTT `feedback`, the status socket's `feedback` requests)
runs on the daemon's ordered control queue, between two batches of windows, like the privacy switch.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from earwitness.config import ClassifierDetectorConfig, Config
from earwitness.core.events import Event, EventChange
from earwitness.core.feedback import VERDICTS, FeedbackError, Verdict
from earwitness.core.health import Health
from earwitness.detectors.suppression import Decision, FeedbackCalibration, SuppressionStore, Suppressor, new_example
from earwitness.detectors.switches import LabelSwitches
from earwitness.detectors.tracker import EMBEDDINGS_KEY, Gate

log = structlog.get_logger(__name__)

RING_S = 4 * 3600.0
"""How long an event's embedding is kept for a verdict."""
RING_MAX = 2000
FORGOTTEN_MAX = 20000
"""Ids of events that left the ring, so that a late verdict is told why it cannot apply."""


@dataclass(frozen=True)
class RecentEvent:
    source: str
    label: str
    embeddings: tuple[np.ndarray, ...]
    top_labels: list[dict[str, Any]]
    at: float
    """time.monotonic() of its latest change."""


def feedback_calibration(config: Config) -> FeedbackCalibration | None:
    """The calibration of the classifier that makes the embeddings (the first configured), if it has one."""
    from earwitness.detectors.classifier import load_metadata

    for detector in config.detectors:
        if isinstance(detector, ClassifierDetectorConfig):
            try:
                return FeedbackCalibration.from_meta(load_metadata(detector.model)[1])
            except (OSError, ValueError) as error:
                log.error("feedback unavailable: the classifier's metadata cannot be read", error=str(error))
                return None
    return None


class Feedback:
    """Verdicts in, examples kept, windows matched; figures for `earwitness status` and the metrics."""

    def __init__(self, config: Config, health: Health, store: SuppressionStore | None = None) -> None:
        self._health = health
        self.store = store if store is not None else SuppressionStore.in_state_dir(config.resolved_state_dir())
        self.switches = LabelSwitches.in_state_dir(config.resolved_state_dir())
        self.calibration = feedback_calibration(config)
        self._recent: OrderedDict[str, RecentEvent] = OrderedDict()
        self._forgotten: OrderedDict[str, None] = OrderedDict()
        self._latest: dict[tuple[str, str], str] = {}
        """(source, label) -> the id of its most recent event (the Home Assistant "Not <label>" button)."""
        self._suppressed: dict[str, dict[str, int]] = {}
        self._publish()

    def reconfigure(self, config: Config) -> None:
        """A reload may name another model: its calibration applies from now on."""
        self.calibration = feedback_calibration(config)

    # --- the pipelines' side ------------------------------------------------------------

    def labels_off(self, source: str) -> frozenset[str]:
        return self.switches.off(source)

    def gate(self, source: str) -> Gate | None:
        """The tracker's gate for one source; None when the model has no feedback calibration."""
        if self.calibration is None:
            return None
        return Suppressor(self.store, source, self.calibration).decide

    def suppressed(self, event: Event, decision: Decision) -> None:
        """An event that feedback kept quiet has ended: logged and counted, never sent."""
        per_source = self._suppressed.setdefault(event.source.name, {})
        per_source[event.label] = per_source.get(event.label, 0) + 1
        log.info("event suppressed by feedback", source=event.source.name, label=event.label, id=event.id,
                 score=round(event.score, 3), example=decision.suppressed_by, similarity=round(decision.similarity, 4))
        self._publish()

    def record(self, change: EventChange) -> None:
        """Keep the embeddings of each event's windows for a later verdict (called for every change sent)."""
        event = change.event
        embeddings = event.details.get(EMBEDDINGS_KEY)
        if not embeddings:
            return
        top = change.message().get("top_labels", [])
        self._recent[event.id] = RecentEvent(event.source.name, event.label, tuple(embeddings), top, time.monotonic())
        self._recent.move_to_end(event.id)
        self._latest[(event.source.name, event.label)] = event.id
        self._expire()

    # --- the control queue's side --------------------------------------------------------

    def verdict(self, event_id: str, verdict: str) -> dict[str, Any]:
        """Apply a verdict on a recent event; FeedbackError says why it cannot be."""
        if verdict not in VERDICTS:
            raise FeedbackError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
        self._expire()
        recent = self._recent.get(event_id)
        if recent is None:
            if event_id in self._forgotten:
                raise FeedbackError(f"event {event_id} is older than the {RING_S / 3600:g} h of events kept for feedback")
            raise FeedbackError(f"no recent event {event_id!r} on this device (events are kept {RING_S / 3600:g} h, "
                                "and only those the classifier scored)")
        if verdict == "false_alarm":
            self._check_suppressible(recent.label)
        for existing in self.store.examples(source=recent.source, label=recent.label):
            if existing.event_id == event_id and existing.verdict == verdict:
                return {"example": existing.summary(), "evicted": [], "repeated": True}
        typed: Verdict = "false_alarm" if verdict == "false_alarm" else "confirmed"
        example = new_example(typed, recent.source, recent.label, event_id, recent.embeddings, recent.top_labels)
        evicted = self.store.add(example)
        log.info("feedback stored", verdict=verdict, event_id=event_id, source=recent.source, label=recent.label,
                 example=example.id, evicted=[e.id for e in evicted])
        self._publish()
        return {"example": example.summary(), "evicted": [e.id for e in evicted]}

    def switch(self, source: str, label: str, on: bool, config: Config, labels: list[str]) -> bool:
        """Switch a label at a source (remote control); False (logged) for an unknown source or label."""
        if source not in {s.name for s in config.sources} or label not in labels:
            log.warning("label switch for an unknown source or label ignored", source=source, label=label)
            return False
        self.switches.set(source, label, on)
        return True

    def latest(self, source: str, label: str, verdict: str) -> dict[str, Any]:
        """A verdict on the source's most recent event of that label (Home Assistant's "Not <label>" button)."""
        event_id = self._latest.get((source, label))
        if event_id is None:
            raise FeedbackError(f"no recent {label} event on source {source!r}")
        return self.verdict(event_id, verdict)

    def remote(self, command: Mapping[str, Any]) -> None:
        """A command from a hub: its outcome is logged (nobody waits for an answer)."""
        try:
            result = self.handle(command)
        except FeedbackError as error:
            log.warning("mqtt feedback ignored", error=str(error), command=dict(command))
            return
        log.info("mqtt feedback applied", command=dict(command), example=result.get("example", {}).get("id"))

    def forget(self, example_id: str) -> dict[str, Any]:
        example = self.store.forget(example_id)
        log.info("feedback example forgotten", example=example_id, source=example.source, label=example.label)
        self._publish()
        return {"forgotten": example.summary()}

    def clear(self) -> dict[str, Any]:
        count = self.store.clear()
        log.info("feedback examples cleared", count=count)
        self._publish()
        return {"cleared": count}

    def listing(self) -> dict[str, Any]:
        return {"examples": [e.summary() for e in self.store.examples()]}

    def handle(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """One request of the status socket's `feedback` command; FeedbackError for a bad one."""
        action = request.get("action")
        if action == "verdict":
            return self.verdict(str(request.get("id", "")), str(request.get("verdict", "")))
        if action == "latest":
            return self.latest(str(request.get("source", "")), str(request.get("label", "")), str(request.get("verdict", "")))
        if action == "list":
            return self.listing()
        if action == "forget":
            return self.forget(str(request.get("example", "")))
        if action == "clear":
            return self.clear()
        raise FeedbackError(f"unknown feedback action {action!r}")

    # --- inside ---------------------------------------------------------------------------

    def _check_suppressible(self, label: str) -> None:
        if self.calibration is None:
            raise FeedbackError("the classifier model has no feedback calibration, so false alarms cannot be "
                                "suppressed safely (python -m earwitness.training.feedback_calibration --write)")
        if label not in self.calibration.labels:
            raise FeedbackError(f"label {label!r} is not calibrated for feedback; false alarms of it cannot be suppressed")

    def _expire(self) -> None:
        now = time.monotonic()
        while self._recent:
            event_id, oldest = next(iter(self._recent.items()))
            if now - oldest.at <= RING_S and len(self._recent) <= RING_MAX:
                break
            del self._recent[event_id]
            self._forgotten[event_id] = None
        while len(self._forgotten) > FORGOTTEN_MAX:
            self._forgotten.popitem(last=False)

    def _publish(self) -> None:
        examples = self.store.examples()
        self._health.feedback = {
            "false_alarms": sum(1 for e in examples if e.verdict == "false_alarm"),
            "confirmed": sum(1 for e in examples if e.verdict == "confirmed"),
            "suppressed": {source: dict(labels) for source, labels in self._suppressed.items()},
            "calibrated": self.calibration is not None,
        }
