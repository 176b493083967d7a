"""The caption sink: captions events off the detection path, each sent as an `update` of its event."""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import structlog

from earwitness.config import CaptionsConfig
from earwitness.core.clips import CLIP_KEY, EventClip
from earwitness.core.events import Event, EventChange, SensorState
from earwitness.guard.machine import GuardState
from earwitness.integrations.captions.client import (
    Captioner,
    CaptionError,
    OpenAICaptioner,
    TemplateCaptioner,
    build_captioner,
    is_loopback_url,
)
from earwitness.integrations.captions.guard import CircuitBreaker, RateLimiter
from earwitness.integrations.captions.prompt import CaptionRequest, template_caption, with_duration
from earwitness.integrations.sinks import SinkContext

log = structlog.get_logger(__name__)

RECENT_IDS = 4096
CHECK_TIMEOUT_S = 10.0
"""The endpoint check at start and on reload (`GET /models`) gives up after this long."""


@dataclass
class _Job:
    id: str
    event: Event


class CaptionSink:
    """Captions events off the detection path; sends each caption as an `update` of its event."""

    name = "captions"

    def __init__(self, context: SinkContext, captioner: Captioner | None = None) -> None:
        self._context = context
        self._config: CaptionsConfig = context.config.captions
        self._captioner = captioner or build_captioner(self._config)
        self._remote = not isinstance(self._captioner, TemplateCaptioner)
        self._when = self._config.caption_when
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=self._config.queue_size)
        self._latest: OrderedDict[str, Event] = OrderedDict()
        """The latest uncaptioned state of each event that still waits for its caption."""
        self._requested: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.RLock()
        self._limiter = RateLimiter(self._config.rate_limit_per_minute)
        self.breaker = CircuitBreaker(self._config.breaker.failures, self._config.breaker.reset_s)
        self._stop = threading.Event()
        self._closed = False
        self._workers: list[threading.Thread] = []
        self._reasons_logged: set[str] = set()
        self.stats: dict[str, Any] = {"backend": self._captioner.name, "when": self._when,
                      "state": "checking" if isinstance(self._captioner, OpenAICaptioner) else "ready",
                      "last_failure": None, "requested": 0, "captioned": 0, "template_fallbacks": 0,
                      "queue_full": 0, "circuit": "closed"}
        """Shown by `earwitness status`. state: checking (the endpoint check runs), ready, unreachable (down,
        timing out or failing with 5xx), model not served, refused (a permanent error: its reason is
        `last_failure`)."""

    # Sink interface -------------------------------------------------------------

    def start(self) -> None:
        if self._remote and self._config.send_audio and not is_loopback_url(self._config.openai.base_url):
            log.warning("captions.send_audio is on and the caption endpoint is not on loopback: "
                        "event audio will leave this machine", endpoint=self._config.openai.base_url)
        for number in range(self._config.concurrency):
            worker = threading.Thread(target=self._work, name=f"caption-{number}", daemon=True)
            worker.start()
            self._workers.append(worker)
        self._publish_stats()
        log.info("captions on", backend=self._captioner.name, when=self._when,
                 send_audio=self._remote and self._config.send_audio)
        if isinstance(self._captioner, OpenAICaptioner):
            threading.Thread(target=self._check_endpoint, args=(self._captioner,), name="caption-check",
                             daemon=True).start()

    def handle_event(self, change: EventChange) -> None:
        """Note the change; queue a caption when one is due. Never blocks."""
        event = change.event
        if event.caption is not None or self._closed:
            return  # captioned already (our own update coming back through the dispatcher)
        with self._lock:
            if event.id in self._requested:
                if event.id in self._latest:
                    self._latest[event.id] = event
                return
            self._remember(event)
            if self._when == "start" or change.type == "end":
                self._request(event.id)
            elif change.type == "start":
                clip = event.details.get(CLIP_KEY)
                if isinstance(clip, EventClip):
                    clip.on_complete(functools.partial(self._clip_complete, event.id))

    def handle_sensor(self, state: SensorState) -> None:
        pass

    def handle_guard(self, state: GuardState, alarm: bool) -> None:
        pass

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        dropped = 0
        while True:
            try:
                if self._queue.get_nowait() is not None:
                    dropped += 1
            except queue.Empty:
                break
        for _ in self._workers:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        if dropped:
            log.info("captions still queued at shutdown dropped", count=dropped)

    # internals -----------------------------------------------------------------

    def _remember(self, event: Event) -> None:
        self._latest[event.id] = event
        self._latest.move_to_end(event.id)
        while len(self._latest) > RECENT_IDS:
            self._latest.popitem(last=False)

    def _clip_complete(self, event_id: str, clip: EventClip) -> None:
        """A clip that reached its maximum length: caption the event, which goes on, now. A clip completed by
        its event's end is captioned when that end arrives here (the recorder completes the clip before the
        end reaches the sinks), so that the prompt says the event ended, and how long it lasted."""
        if not clip.capped:
            return
        with self._lock:
            if event_id not in self._requested and event_id in self._latest and not self._closed:
                self._request(event_id)

    def _request(self, event_id: str) -> None:
        self._requested[event_id] = None
        while len(self._requested) > RECENT_IDS:
            self._requested.popitem(last=False)
        self.stats["requested"] += 1
        job = _Job(event_id, self._latest[event_id])
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.stats["queue_full"] += 1
            log.warning("caption queue full, template caption used", id=event_id, queue_size=self._config.queue_size)
            self._publish(job, template_caption(CaptionRequest.of(job.event)), fallback=True)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None or self._stop.is_set():
                return
            try:
                with self._lock:
                    event = self._latest.get(job.id, job.event)
                request = CaptionRequest.of(event)
                caption, fallback = self._caption(request)
                self._publish(job, with_duration(caption, request), fallback)
            except Exception:
                log.exception("captioning failed", id=job.id)

    def _caption(self, request: CaptionRequest) -> tuple[str, bool]:
        """The caption, and whether it is the template's instead of the backend's."""
        event_id = request.event.id
        if not self._remote:
            return self._captioner.caption(request, self._config.timeout_s), False
        if not self.breaker.allow():
            log.info("caption endpoint skipped while failing (circuit open), template caption used", id=event_id)
            return template_caption(request), True
        deadline = time.monotonic() + self._config.timeout_s
        attempt = 0
        while True:
            if not self._limiter.allow():
                log.warning("caption rate limit reached, template caption used", id=event_id,
                            per_minute=self._config.rate_limit_per_minute)
                return template_caption(request), True
            attempt += 1
            began = time.monotonic()
            try:
                timeout = min(self._config.openai.timeout_s, deadline - began)
                caption = self._captioner.caption(request, timeout)
            except CaptionError as error:
                if error.permanent:
                    if self.breaker.state == "half-open":
                        self.breaker.success()  # the trial request was answered: the endpoint is back
                    self._refused(event_id, error)
                    return template_caption(request), True
                wait = self._config.backoff_s * 2 ** (attempt - 1)
                last = (attempt > self._config.retries or time.monotonic() + wait + 0.05 >= deadline
                        or self._stop.is_set())
                if last:
                    self.breaker.failure()
                    self._set_state("unreachable", str(error))
                    log.warning("caption failed, template caption used", id=event_id, backend=self._captioner.name,
                                attempts=attempt, error=str(error))
                    return template_caption(request), True
                log.info("caption attempt failed, retrying", id=event_id, attempt=attempt, in_s=wait, error=str(error))
                if self._stop.wait(wait):
                    return template_caption(request), True
                continue
            self.breaker.success()  # the endpoint answered, whatever it said
            self._set_state("ready")
            seconds = round(time.monotonic() - began, 3)
            if not caption:
                log.info("caption reply held no caption (empty, only reasoning, or cut off), template caption used",
                         id=event_id, attempts=attempt, seconds=seconds)
                return template_caption(request), True
            log.info("caption made", id=event_id, backend=self._captioner.name, attempts=attempt, seconds=seconds)
            return caption, False

    def _refused(self, event_id: str, error: CaptionError) -> None:
        """A permanent error: no retry, the breaker untouched; its reason logged as a warning once, then quietly."""
        reason = str(error)
        self._set_state("refused", reason)
        first = reason not in self._reasons_logged
        self._reasons_logged.add(reason)
        (log.warning if first else log.info)("caption refused by the endpoint, template caption used",
                                             id=event_id, backend=self._captioner.name, reason=reason)

    def _check_endpoint(self, captioner: OpenAICaptioner) -> None:
        """At start and on reload: say once, clearly, when the server is down or does not serve the model."""
        model, endpoint = captioner.config.model, captioner.config.base_url
        try:
            served = captioner.served_models(CHECK_TIMEOUT_S)
        except CaptionError as error:
            if self._closed:
                return
            self._set_state("refused" if error.permanent else "unreachable", str(error))
            log.warning("caption endpoint not usable, template captions until it answers", endpoint=endpoint,
                        model=model, reason=str(error))
            return
        if self._closed:
            return
        if model in served:
            self._set_state("ready")
            log.info("caption endpoint ready", endpoint=endpoint, model=model)
            return
        reason = f"model {model!r} is not served by {endpoint} (it serves: {', '.join(served) or 'none listed'})"
        self._set_state("model not served", reason)
        log.warning("caption model not served, template captions until it is", endpoint=endpoint, model=model,
                    served=served)

    def _set_state(self, state: str, failure: str | None = None) -> None:
        with self._lock:
            if self._closed:
                return  # replaced (reload): its successor's figures are the ones shown
            self.stats["state"] = state
            if failure is not None:
                self.stats["last_failure"] = failure
            self._publish_stats()

    def _publish(self, job: _Job, caption: str, fallback: bool) -> None:
        with self._lock:
            event = self._latest.pop(job.id, job.event)
            self.stats["template_fallbacks" if fallback else "captioned"] += 1
            self._publish_stats()
        if self._closed:
            return
        try:
            self._context.dispatch(EventChange("update", event.evolve(caption=caption)))
        except RuntimeError as error:  # the daemon's loop has closed meanwhile
            log.debug("caption not delivered, the daemon is stopping", id=job.id, error=str(error))

    def _publish_stats(self) -> None:
        self.stats["circuit"] = self.breaker.state
        self.stats["queued"] = self._queue.qsize()
        with contextlib.suppress(Exception):  # health is informative only
            self._context.health.sinks[self.name] = dict(self.stats)
