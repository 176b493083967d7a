"""Turn each label's stream of window scores into events: start, update, end.

Per label: a start threshold with hysteresis (the event holds while the score stays
above `threshold * release_ratio`), optionally a lower threshold that two windows in a row
must reach (`sustain_ratio`), a minimum duration before an event starts, a merge gap that
bridges short dips, and a cooldown after an event ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from earwitness.config import EventDefaults, EventsConfig
from earwitness.core.events import Event, EventChange, SourceInfo
from earwitness.detectors.suppression import Decision

Gate = Callable[[str, float, "np.ndarray | None"], "Decision | None"]
"""(label, score, window embedding) -> whether feedback keeps the event that would start quiet."""
EMBEDDINGS_KEY = "_embeddings"
"""Event details key of the embeddings of the event's windows so far (in memory only: never in a message)."""
MAX_EVENT_EMBEDDINGS = 16

UPDATE_MIN_RISE = 0.05
"""An update is sent when the peak score has risen by at least this much."""


@dataclass
class _LabelState:
    candidate_since: float | None = None
    previous: tuple[float, float, np.ndarray | None] = (0.0, 0.0, None)
    """The last window's (score, `at_s`, embedding): with this one, two in a row for `sustain_ratio`."""
    lead: tuple[float, np.ndarray | None] | None = None
    """(score, embedding) of the first of two windows that began the candidate: feedback judges both."""
    event: Event | None = None
    last_active_s: float = 0.0
    reported_score: float = 0.0
    last_update_s: float = 0.0
    cooldown_until_s: float = float("-inf")
    suppressed: Decision | None = None
    """Set while the open event is kept quiet by feedback: it is not reported, only counted when it ends."""


class EventTracker:
    """Tracks the events of one source; `observe` is called once per window."""

    def __init__(
        self,
        source: SourceInfo,
        device: str,
        config: EventsConfig,
        default_thresholds: Mapping[str, float],
        models: dict[str, str],
        recommended: Mapping[str, Mapping[str, float]],
        stream_started_at: datetime,
        emit: Callable[[EventChange], None],
        wall_time: Callable[[float], datetime] | None = None,
        gate: Gate | None = None,
        on_suppressed: Callable[[Event, Decision], None] | None = None,
    ) -> None:
        self._source = source
        self._device = device
        self._models = models
        self._wall = wall_time or (lambda stream_s: stream_started_at + timedelta(seconds=stream_s))
        """When a point of the stream was captured: the pipeline's clock, else the stream's start plus its offset."""
        self._emit = emit
        self._gate = gate
        self._on_suppressed = on_suppressed
        self._settings: dict[str, EventDefaults] = {}
        self._thresholds: dict[str, float] = {}
        for label in models:
            settings = config.for_label(label, recommended.get(label))
            self._settings[label] = settings
            threshold = settings.threshold if settings.threshold is not None else default_thresholds.get(label, 0.5)
            self._thresholds[label] = threshold
        self._states = {label: _LabelState() for label in models}

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self._thresholds)

    def observe(self, scores: Mapping[str, float], at_s: float, end_s: float,
                details: Mapping[str, Mapping[str, Any]] | None = None, embedding: np.ndarray | None = None) -> None:
        """Feed one window's scores; `at_s` is where on the stream they apply (an event's start
        is placed there), `end_s` the end of the window, `embedding` the window's (for feedback)."""
        for label, score in scores.items():
            if label in self._states:
                self._observe_label(label, score, at_s, end_s, (details or {}).get(label, {}), embedding)

    def finish(self) -> None:
        """End every open event (end of stream, sensor switched off, shutdown)."""
        for label, state in self._states.items():
            if state.event is not None:
                self._end(label, state)

    def _observe_label(self, label: str, score: float, at_s: float, end_s: float, details: Mapping[str, Any],
                       embedding: np.ndarray | None) -> None:
        state = self._states[label]
        settings = self._settings[label]
        threshold = self._thresholds[label]
        holding = score >= threshold * settings.release_ratio
        previous_score, previous_at_s, previous_embedding = state.previous
        state.previous = (score, at_s, embedding)

        if state.event is not None:
            if holding:
                state.last_active_s = end_s
                if state.suppressed is not None and score >= threshold:
                    lifted = self._lifted(label, score, embedding)
                    if lifted is not None:  # a sure score, or another sound: the quiet event is raised after all
                        state.suppressed = None
                        state.event = state.event.evolve(score=max(score, state.event.score),
                                                         details={**state.event.details, **details, **lifted})
                        self._keep_embedding(state, embedding)
                        self._report(state, "start", at_s)
                        return
                if score > state.event.score:
                    state.event = state.event.evolve(score=score, details={**state.event.details, **details})
                self._keep_embedding(state, embedding)
                if (
                    state.suppressed is None
                    and state.event.score - state.reported_score >= UPDATE_MIN_RISE
                    and at_s - state.last_update_s >= settings.update_interval_s
                ):
                    self._report(state, "update", at_s)
            elif end_s - state.last_active_s > settings.merge_gap_s:
                self._end(label, state)
            return

        if at_s < state.cooldown_until_s:
            return
        if state.candidate_since is None:
            if score >= threshold:
                state.candidate_since = at_s
            elif (settings.sustain_ratio is not None and previous_at_s >= state.cooldown_until_s
                  and min(score, previous_score) >= threshold * settings.sustain_ratio):
                state.candidate_since = previous_at_s
                state.lead = (previous_score, previous_embedding)
        elif not holding:
            state.candidate_since, state.lead = None, None
        if state.candidate_since is not None and at_s - state.candidate_since >= settings.min_duration_s:
            start_s, lead = state.candidate_since, state.lead
            state.candidate_since, state.lead = None, None
            decision = self._decide(label, [*([lead] if lead is not None else []), (score, embedding)])
            state.event = Event(
                label=label,
                source=self._source,
                device=self._device,
                model=self._models[label],
                score=score,
                start_s=start_s,
                started_at=self._wall(start_s),
                details=dict(details) if decision is None else {**details, "feedback": decision.feedback()},
            )
            state.last_active_s = end_s
            if lead is not None:
                self._keep_embedding(state, lead[1])
            self._keep_embedding(state, embedding)
            state.suppressed = decision if decision is not None and decision.suppressed_by is not None else None
            if state.suppressed is None:
                self._report(state, "start", at_s)

    def _decide(self, label: str, windows: list[tuple[float, np.ndarray | None]]) -> Decision | None:
        """Feedback's decision on the window(s) that start an event: quiet when any is like a false alarm."""
        if self._gate is None:
            return None
        decisions = [self._gate(label, score, embedding) for score, embedding in windows]
        return next((d for d in decisions if d is not None and d.suppressed_by is not None), decisions[-1])

    @staticmethod
    def _keep_embedding(state: _LabelState, embedding: np.ndarray | None) -> None:
        """Keep the embedding of each window of the event (the first ones), for a verdict on it later."""
        assert state.event is not None
        kept = state.event.details.get(EMBEDDINGS_KEY, ())
        if embedding is not None and len(kept) < MAX_EVENT_EMBEDDINGS:
            state.event = state.event.evolve(details={**state.event.details, EMBEDDINGS_KEY: (*kept, embedding)})

    def _lifted(self, label: str, score: float, embedding: np.ndarray | None) -> dict[str, Any] | None:
        """None while feedback still keeps this window quiet, else the details that say why it no longer does."""
        assert self._gate is not None
        decision = self._gate(label, score, embedding)
        if decision is None:
            return {}
        return None if decision.suppressed_by is not None else {"feedback": decision.feedback()}

    def _report(self, state: _LabelState, change: str, at_s: float) -> None:
        assert state.event is not None
        state.reported_score = state.event.score
        state.last_update_s = at_s
        self._emit(EventChange(change, state.event))  # type: ignore[arg-type]

    def _end(self, label: str, state: _LabelState) -> None:
        assert state.event is not None
        end_s = max(state.last_active_s, state.event.start_s)
        state.event = state.event.evolve(end_s=end_s, ended_at=self._wall(end_s))
        if state.suppressed is None:
            self._emit(EventChange("end", state.event))
        elif self._on_suppressed is not None:
            self._on_suppressed(state.event, state.suppressed)
        state.event, state.suppressed = None, None
        state.cooldown_until_s = end_s + self._settings[label].cooldown_s
