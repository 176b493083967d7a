"""The arming rule: conditions on the latest message of vehicle-state topics (equals / one of / JSON path)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from earwitness.config import GuardConditionConfig

_PATH_PART = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]|^([A-Za-z0-9_-]+)")


def payload_value(payload: str, json_path: str | None) -> str | None:
    """The text a condition compares: the payload itself, or the value at `json_path` in it
    (a string as is, anything else as JSON: `true`, `3`, `null`); None when the path is not there."""
    if json_path is None:
        return payload
    try:
        value: object = json.loads(payload)
    except ValueError:
        return None
    for key, index, first in _PATH_PART.findall(json_path.removeprefix("$")):
        if index:
            if not isinstance(value, list) or int(index) >= len(value):
                return None
            value = value[int(index)]
        else:
            if not isinstance(value, dict) or (key or first) not in value:
                return None
            value = value[key or first]
    return value if isinstance(value, str) else json.dumps(value)


class VehicleRule:
    """Whether every condition holds, from the latest message on each condition's topic.

    `holds` is None until every topic whose condition could still decide has been heard:
    one condition known to fail is enough for False."""

    def __init__(self, conditions: Sequence[GuardConditionConfig]) -> None:
        self._conditions = list(conditions)
        self._values: dict[int, str | None] = {}
        """Per condition (by index): the compared value of its topic's latest message."""

    @property
    def topics(self) -> list[str]:
        return sorted({condition.topic for condition in self._conditions})

    def update(self, topic: str, payload: str) -> bool:
        """Take one message; True if it was on a condition's topic."""
        matched = False
        for index, condition in enumerate(self._conditions):
            if condition.topic == topic:
                self._values[index] = payload_value(payload.strip(), condition.json_path)
                matched = True
        return matched

    @property
    def holds(self) -> bool | None:
        if not self._conditions:
            return None
        results = [self._holds(index) for index in range(len(self._conditions))]
        if False in results:
            return False
        return None if None in results else True

    def _holds(self, index: int) -> bool | None:
        if index not in self._values:
            return None
        return self._values[index] in self._conditions[index].accepted

    def describe(self) -> str:
        """What the vehicle says, for the guard's `why`: `locked=true, shift_state=P` (the failing ones
        when the rule fails)."""
        failing = [i for i in range(len(self._conditions)) if self._holds(i) is False]
        shown = failing or [i for i in range(len(self._conditions)) if i in self._values]
        return ", ".join(f"{self._name(i)}={self._values[i]}" for i in shown)

    def _name(self, index: int) -> str:
        condition = self._conditions[index]
        path = (condition.json_path or "").removeprefix("$")
        return f"{condition.topic}{'' if not path or path[0] in '.[' else '.'}{path}"
