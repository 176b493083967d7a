"""Protection of the caption endpoint: a rate limit and a circuit breaker."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


class RateLimiter:
    """At most `per_minute` requests in any 60 s (0 = unlimited)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = per_minute
        self._clock = clock
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        if self._limit <= 0:
            return True
        with self._lock:
            now = self._clock()
            while self._times and now - self._times[0] >= 60.0:
                self._times.popleft()
            if len(self._times) >= self._limit:
                return False
            self._times.append(now)
            return True


class CircuitBreaker:
    """Closed: requests go out. After `failures` failed captions in a row it opens: no requests
    for `reset_s`. Then one trial request (half-open) closes it again or re-opens it."""

    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = failures
        self._reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self.state = "closed"
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            if self.state == "closed":
                return True
            if self.state == "open" and self._clock() - self._opened_at >= self._reset_s:
                self.state = "half-open"
                log.info("caption endpoint: trying again (circuit half-open)")
                return True
            return False

    def success(self) -> None:
        with self._lock:
            if self.state != "closed":
                log.info("caption endpoint answers again (circuit closed)")
            self.state, self._failures = "closed", 0

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self.state == "half-open" or (self.state == "closed" and self._failures >= self._threshold):
                self.state, self._opened_at = "open", self._clock()
                log.warning("caption endpoint failing: circuit open, template captions meanwhile",
                            failures=self._failures, retry_in_s=self._reset_s)

