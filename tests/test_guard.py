"""The car guard's state machine and arming rule, pure: a hand-driven clock, no broker."""

from __future__ import annotations

import json

import pytest

from earwitness.config import ConfigError, GuardConditionConfig, parse_config
from earwitness.guard.machine import GuardMachine, Saved
from earwitness.guard.rules import VehicleRule, payload_value


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def machine(clock: Clock, saved: Saved | None = None, stale_after_s: float | None = None) -> GuardMachine:
    return GuardMachine(arming_delay_s=30.0, cooldown_s=60.0, stale_after_s=stale_after_s, clock=clock, saved=saved)


def test_the_vehicle_arms_after_the_delay_and_disarms_at_once() -> None:
    clock = Clock()
    guard = machine(clock)
    assert guard.state.state == "disarmed"
    assert guard.vehicle(True, "locked=true, shift_state=P")
    assert guard.state.state == "arming" and guard.next_deadline() == clock.now + 30
    clock.now += 29.9
    assert not guard.tick() and guard.state.state == "arming"
    clock.now += 0.1
    assert guard.tick() and guard.state.state == "armed"
    assert guard.state.why == "vehicle: locked=true, shift_state=P" and guard.state.since == clock.now
    clock.now += 5
    assert guard.vehicle(False, "shift_state=D")
    assert guard.state.state == "disarmed" and guard.state.since == clock.now and guard.state.why == "vehicle: shift_state=D"
    # A disarm during the arming delay is as immediate.
    guard.vehicle(True, "locked=true")
    guard.vehicle(False, "locked=false")
    assert guard.state.state == "disarmed" and guard.next_deadline() is None


def test_an_alarm_once_per_incident_and_armed_again_after_the_cooldown() -> None:
    clock = Clock()
    guard = machine(clock)
    guard.command(True, "test")
    clock.now += 30
    guard.tick()
    assert guard.watched_event("glass_break at cabin") == (True, True)
    assert guard.state.state == "triggered" and guard.state.why == "glass_break at cabin"
    clock.now += 40
    assert guard.watched_event("scratch at cabin") == (False, False), "the same incident: no second alarm"
    clock.now += 59
    assert not guard.tick() and guard.state.state == "triggered", "the cool-down runs from the last watched sound"
    clock.now += 1
    assert guard.tick() and guard.state.state == "armed"
    assert guard.watched_event("glass_break at cabin") == (True, True), "a new incident"


def test_sounds_while_disarmed_or_arming_raise_nothing() -> None:
    clock = Clock()
    guard = machine(clock)
    assert guard.watched_event("glass_break at cabin") == (False, False)
    guard.vehicle(True, "locked=true")
    assert guard.watched_event("glass_break at cabin") == (False, False)
    assert guard.state.state == "arming"


def test_hand_commands_stand_until_the_vehicle_state_changes() -> None:
    clock = Clock()
    guard = machine(clock)
    guard.vehicle(True, "locked=true")
    clock.now += 30
    guard.tick()
    assert guard.command(False, "mqtt hub home") and guard.state.state == "disarmed"
    assert guard.state.why == "DISARM from mqtt hub home"
    assert not guard.vehicle(True, "locked=true"), "the same vehicle state again does not re-arm"
    assert guard.vehicle(False, "locked=false") is False  # already disarmed
    assert guard.vehicle(True, "locked=true") and guard.state.state == "arming"
    guard.vehicle(False, "locked=false")
    assert guard.command(True, "mqtt hub home") and guard.state.state == "arming", "ARM by hand waits the delay too"


def test_stale_or_lost_vehicle_state_never_disarms() -> None:
    clock = Clock()
    guard = machine(clock, stale_after_s=120)
    guard.vehicle(True, "locked=true")
    clock.now += 30
    guard.tick()
    assert guard.state.vehicle == "current" and guard.next_deadline() == clock.now + 90
    clock.now += 90
    assert guard.tick()
    assert (guard.state.state, guard.state.vehicle) == ("armed", "silent")
    assert guard.link(False) and (guard.state.state, guard.state.vehicle) == ("armed", "disconnected")
    assert guard.link(True) and guard.state.vehicle == "silent"
    guard.vehicle(True, "locked=true")
    assert (guard.state.state, guard.state.vehicle) == ("armed", "current")


def test_a_restart_restores_the_state_and_its_timers() -> None:
    clock = Clock()
    guard = machine(clock)
    guard.vehicle(True, "locked=true")
    saved = Saved.from_json(json.loads(json.dumps(guard.saved().to_json())))
    clock.now += 10
    restored = machine(clock, saved)
    assert restored.state.state == "arming" and restored.state.since == guard.state.since
    clock.now += 20
    assert restored.tick() and restored.state.state == "armed"
    armed_since = restored.state.since
    restored.vehicle(True, "locked=true")  # the vehicle's state as it was saved: only its freshness changes
    assert (restored.state.state, restored.state.since, restored.state.vehicle) == ("armed", armed_since, "current")
    clock.now += 3600
    later = machine(clock, restored.saved())
    assert later.state.state == "armed" and later.state.vehicle == "unknown"
    with pytest.raises(ValueError):
        Saved.from_json({**saved.to_json(), "state": {**saved.to_json()["state"], "state": "sleeping"}})


def condition(**settings: object) -> GuardConditionConfig:
    return GuardConditionConfig.model_validate(settings)


def test_rule_equals_one_of_and_json_path() -> None:
    rule = VehicleRule([
        condition(topic="teslamate/cars/1/locked", equals=True),
        condition(topic="teslamate/cars/1/shift_state", one_of=["P", "N"]),
        condition(topic="car/json", json_path="$.doors[1].closed", equals=True),
    ])
    assert rule.topics == ["car/json", "teslamate/cars/1/locked", "teslamate/cars/1/shift_state"]
    assert rule.holds is None
    assert rule.update("teslamate/cars/1/locked", "true") and rule.holds is None
    assert not rule.update("teslamate/cars/1/elevation", "12")
    rule.update("teslamate/cars/1/shift_state", "D")
    assert rule.holds is False, "one condition known to fail is enough"
    assert rule.describe() == "teslamate/cars/1/shift_state=D"
    rule.update("teslamate/cars/1/shift_state", "P")
    rule.update("car/json", '{"doors": [{"closed": false}, {"closed": true}]}')
    assert rule.holds is True
    assert rule.describe() == "teslamate/cars/1/locked=true, teslamate/cars/1/shift_state=P, car/json.doors[1].closed=true"
    rule.update("car/json", "not json")
    assert rule.holds is False


def test_payload_values() -> None:
    assert payload_value(" yes ", None) == " yes "
    assert payload_value('"P"', "$") == "P", "a JSON string (as HA's statestream sends attributes)"
    assert payload_value('{"a": {"b": 3}}', "a.b") == "3"
    assert payload_value('{"a": null}', "$.a") == "null"
    assert payload_value('{"a": [1]}', "$.a[2]") is None
    assert payload_value('{"a": 1}', "$.b") is None


@pytest.mark.parametrize("guard, message", [
    ({"enabled": True, "hub": "nowhere"}, "guard.hub: must name a configured hub (car)"),
    ({"enabled": True, "hub": "car", "sources": ["boot"]}, "guard.sources names unknown sources: boot"),
    ({"arm_when": [{"topic": "a/+/b", "equals": "x"}]}, "guard.arm_when[0].topic: Value error, must be a non-empty topic"),
    ({"arm_when": [{"topic": "a", "equals": "x", "one_of": ["y"]}]}, "guard.arm_when[0]: Value error, set exactly one of"),
    ({"arm_when": [{"topic": "a", "equals": "x", "json_path": "$.a[b]"}]}, "guard.arm_when[0].json_path: Value error"),
    ({"alarm": {"topic": "car/#"}}, "guard.alarm.topic: Value error"),
    ({"arming_delay_s": -1}, "guard.arming_delay_s: Input should be greater than or equal to 0"),
])
def test_a_bad_guard_config_is_a_clear_error_naming_the_key(guard: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"hubs": [{"name": "car", "host": "localhost"}], "guard": guard})
    assert message in str(error.value)


def test_the_guard_hub_is_told_first() -> None:
    """The dispatcher hands every change (the alert, the guard state, the alarm) to the sinks in order."""
    from earwitness.app import App
    from earwitness.core.health import Health
    from earwitness.integrations.mqtt import MqttHubSink
    from earwitness.integrations.sinks import SinkContext

    def hubs(context: SinkContext) -> list[str]:
        return [sink.hub.name for sink in App().sinks(context) if isinstance(sink, MqttHubSink)]

    config = parse_config({
        "hubs": [{"name": "home", "host": "a"}, {"name": "car", "host": "b"}, {"name": "office", "host": "c"}],
        "guard": {"enabled": True, "hub": "car"},
    })
    context = SinkContext(config=config, health=Health(), dispatch=lambda change: None,
                          set_sensor=lambda source, on: None, labels=["glass_break"], guard_input=lambda command: None)
    assert hubs(context) == ["car", "home", "office"]
    unguarded = SinkContext(config=config.model_copy(update={"guard": config.guard.model_copy(update={"enabled": False})}),
                            health=Health(), dispatch=lambda change: None, set_sensor=lambda source, on: None,
                            labels=["glass_break"])
    assert hubs(unguarded) == ["home", "car", "office"]
