"""The event tracker: hysteresis, two windows in a row, minimum duration, merge gap, cooldown and updates."""

from __future__ import annotations

from datetime import datetime, timezone

from earwitness.config import parse_config
from earwitness.core.events import EventChange, SourceInfo
from earwitness.detectors.tracker import EventTracker

HOP = 0.25


def track(scores: list[float], **settings) -> list[EventChange]:
    config = parse_config({"events": {"defaults": {"threshold": 0.5, **settings}}}).events
    changes: list[EventChange] = []
    tracker = EventTracker(SourceInfo("s", "here"), "dev", config, {}, {"x": "test-1"}, {},
                           datetime(2026, 1, 1, tzinfo=timezone.utc), changes.append)
    for i, score in enumerate(scores):
        tracker.observe({"x": score}, at_s=i * HOP, end_s=i * HOP + 0.5)
    tracker.finish()
    return changes


def kinds(changes: list[EventChange]) -> list[str]:
    return [change.type for change in changes]


def test_start_and_end_with_hysteresis() -> None:
    # 0.4 is under the start threshold but over the release level (0.5 * 0.7): the event holds.
    changes = track([0.1, 0.6, 0.4, 0.4, 0.1, 0.1, 0.1, 0.1], merge_gap_s=0.0)
    assert kinds(changes) == ["start", "end"]
    start, end = changes
    assert start.event.start_s == 1 * HOP
    assert end.event.end_s == 3 * HOP + 0.5
    assert start.event.id == end.event.id
    assert end.event.ended_at is not None and start.event.ended_at is None


def test_below_start_threshold_never_starts() -> None:
    assert track([0.4, 0.45, 0.49, 0.3]) == []


def test_two_windows_in_a_row_at_the_sustain_level_start_an_event_one_does_not() -> None:
    # threshold 0.5, sustain_ratio 0.8: 0.4 twice in a row starts an event at the first of the two.
    assert track([0.1, 0.45, 0.1, 0.45, 0.1], sustain_ratio=0.8) == []
    changes = track([0.1, 0.45, 0.42, 0.1, 0.1, 0.1], sustain_ratio=0.8, merge_gap_s=0.0)
    assert kinds(changes) == ["start", "end"]
    assert changes[0].event.start_s == 1 * HOP
    assert track([0.1, 0.45, 0.42, 0.1], sustain_ratio=0.95) == []  # 0.475 is not reached
    assert track([0.1, 0.45, 0.42, 0.1]) == []  # off unless set


def test_two_windows_in_a_row_count_only_out_of_the_cooldown() -> None:
    # The event of window 0 ends at window 1; its cooldown covers window 9, not window 10.
    def pair_at(first: int) -> list[float]:
        return [0.9, 0.0] + [0.0] * (first - 2) + [0.45, 0.45] + [0.0] * 4

    assert kinds(track(pair_at(9), merge_gap_s=0.0, cooldown_s=2.0, sustain_ratio=0.8)) == ["start", "end"]
    changes = track(pair_at(10), merge_gap_s=0.0, cooldown_s=2.0, sustain_ratio=0.8)
    assert kinds(changes) == ["start", "end", "start", "end"]
    assert changes[2].event.start_s == 10 * HOP


def test_min_duration_suppresses_short_blips() -> None:
    assert track([0.1, 0.9, 0.1, 0.1], min_duration_s=0.5) == []
    changes = track([0.1, 0.9, 0.9, 0.9, 0.1], min_duration_s=0.5)
    assert kinds(changes) == ["start", "end"]
    assert changes[0].event.start_s == 1 * HOP


def test_merge_gap_bridges_short_dips() -> None:
    dip = [0.9, 0.9, 0.0, 0.9, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert kinds(track(dip, merge_gap_s=0.5, cooldown_s=0)) == ["start", "end"]
    assert kinds(track(dip, merge_gap_s=0.0, cooldown_s=0)) == ["start", "end", "start", "end"]


def test_cooldown_blocks_a_new_event() -> None:
    scores = [0.9, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9, 0.0]
    changes = track(scores, merge_gap_s=0.0, cooldown_s=2.0)
    assert kinds(changes) == ["start", "end", "start", "end"]
    assert changes[2].event.start_s == 13 * HOP


def test_update_when_peak_rises() -> None:
    changes = track([0.6, 0.65, 0.9, 0.9, 0.9, 0.97, 0.0, 0.0, 0.0], merge_gap_s=0.0, update_interval_s=0.5)
    assert kinds(changes) == ["start", "update", "update", "end"]
    assert [round(c.event.score, 2) for c in changes] == [0.6, 0.9, 0.97, 0.97]


def test_open_event_ends_at_finish() -> None:
    changes = track([0.9, 0.9])
    assert kinds(changes) == ["start", "end"]
