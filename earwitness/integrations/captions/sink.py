"""The caption sink: captions events off the detection path, each sent as an `update` of its event."""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from earwitness.config import CaptionsConfig
from earwitness.daemon.clips import CLIP_KEY, EventClip
from earwitness.daemon.events import Event, EventChange, SensorState
from earwitness.integrations.captions.client import (
    CaptionError, Captioner, TemplateCaptioner, build_captioner, is_loopback_url,
)
from earwitness.integrations.captions.guard import CircuitBreaker, RateLimiter
from earwitness.integrations.captions.prompt import CaptionRequest, template_caption

if TYPE_CHECKING:
    from earwitness.integrations.sinks import SinkContext

log = structlog.get_logger(__name__)

RECENT_IDS = 4096


@dataclass
class _Job:
    id: str
    event: Event


class CaptionSink:
    """Captions events off the detection path; sends each caption as an `update` of its event."""

    name = "captions"

    def __init__(self, context: "SinkContext", captioner: Captioner | None = None) -> None:
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
        self.stats = {"backend": self._captioner.name, "when": self._when, "requested": 0, "captioned": 0,
                      "template_fallbacks": 0, "queue_full": 0, "circuit": "closed"}

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
                    clip.on_complete(lambda _clip, event_id=event.id: self._clip_complete(event_id))

    def handle_sensor(self, state: SensorState) -> None:
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

    def _clip_complete(self, event_id: str) -> None:
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
                caption, fallback = self._caption(CaptionRequest.of(event))
                self._publish(job, caption, fallback)
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
                self.breaker.success()
                log.info("caption made", id=event_id, backend=self._captioner.name, attempts=attempt,
                         seconds=round(time.monotonic() - began, 3))
                return caption, False
            except CaptionError as error:
                wait = self._config.backoff_s * 2 ** (attempt - 1)
                last = (not error.retryable or attempt > self._config.retries
                        or time.monotonic() + wait + 0.05 >= deadline or self._stop.is_set())
                if last:
                    self.breaker.failure()
                    log.warning("caption failed, template caption used", id=event_id, backend=self._captioner.name,
                                attempts=attempt, error=str(error))
                    return template_caption(request), True
                log.info("caption attempt failed, retrying", id=event_id, attempt=attempt, in_s=wait, error=str(error))
                if self._stop.wait(wait):
                    return template_caption(request), True

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
        try:
            self._context.health.sinks[self.name] = dict(self.stats)
        except Exception:  # health is informative only
            pass
