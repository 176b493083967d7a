"""The caption stage: a short plain-language caption per event, never on the alert's path.

`CaptionSink` is a sink like any other. Its `handle_event` only notes the event and, when
a caption is due, puts a job in a bounded queue; worker threads (`captions.concurrency`)
make the caption and hand it back to every sink as an `update` of the same event through
`SinkContext.dispatch`. The alert itself has long gone out by then.

When a caption is made (`captions.when`):
- `start`: as the event starts, from the detector's findings (label, score, top labels,
  place, time; duration and loudness so far). Fast, and the default for text-only backends.
- `complete`: once the event's clip is complete (the event ended, or its clip reached
  `clips.max_s`). The default when audio is sent, since an audio model should hear the
  whole sound; the prompt then also has the event's full duration and loudness.

Backends: `template` (deterministic, no model), `openai` (any OpenAI-compatible
`chat/completions` endpoint, standard library HTTP only), `none` (no caption stage).
The `openai` backend has a per-caption deadline, retries with exponential backoff, a rate
limit per minute and a circuit breaker; whenever it cannot caption, the failure is logged
and the template caption is sent instead.
"""

from __future__ import annotations

import base64
import http.client
import io
import ipaddress
import json
import os
import queue
import re
import socket
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol
from urllib.parse import urlsplit

import numpy as np
import soundfile
import structlog

from earwitness import SAMPLE_RATE, __version__
from earwitness.config import CaptionsConfig, OpenAICaptionConfig
from earwitness.daemon.clips import CLIP_KEY, EventClip
from earwitness.daemon.events import Event, EventChange, SensorState

if TYPE_CHECKING:
    from earwitness.integrations.sinks import SinkContext

log = structlog.get_logger(__name__)

MAX_CAPTION_CHARS = 300
MAX_RESPONSE_BYTES = 1_000_000
RECENT_IDS = 4096
LABEL_PHRASES = {
    "loud": "Loud sound",
    "glass_break": "Glass breaking",
    "glass-break": "Glass breaking",
    "scratch": "Scratching",
    "anomaly": "Unusual sound",
    "unusual": "Unusual sound",
}


# --- what a captioner is given -------------------------------------------------------


@dataclass(frozen=True)
class CaptionRequest:
    """An event to caption, with its audio clip (pre-roll included) when the pipeline kept one."""

    event: Event
    clip: EventClip | None = None

    @classmethod
    def of(cls, event: Event) -> "CaptionRequest":
        clip = event.details.get(CLIP_KEY)
        return cls(event, clip if isinstance(clip, EventClip) else None)


def top_labels(event: Event) -> list[tuple[str, float | None]]:
    """The other likely labels from `event.details["top_labels"]`, best first, the event's own label left out.

    Accepted shapes: {label: score}, [[label, score], ...], [{"label": ..., "score": ...}, ...], [label, ...].
    """
    raw = event.details.get("top_labels")
    pairs: list[tuple[str, float | None]] = []
    if isinstance(raw, dict):
        pairs = [(str(k), _number(v)) for k, v in raw.items()]
    elif isinstance(raw, (list, tuple)):
        for item in raw:
            if isinstance(item, str):
                pairs.append((item, None))
            elif isinstance(item, dict) and "label" in item:
                pairs.append((str(item["label"]), _number(item.get("score"))))
            elif isinstance(item, (list, tuple)) and item:
                pairs.append((str(item[0]), _number(item[1]) if len(item) > 1 else None))
    if any(score is not None for _, score in pairs):
        pairs.sort(key=lambda pair: -(pair[1] or 0.0))
    return [(label, score) for label, score in pairs if label != event.label][:5]


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _words(name: str) -> str:
    return re.sub(r"[_-]+", " ", name).strip()


def label_phrase(label: str) -> str:
    phrase = LABEL_PHRASES.get(label.lower())
    if phrase:
        return phrase
    words = _words(label) or label
    return words[0].upper() + words[1:]


def duration_text(request: CaptionRequest) -> str | None:
    event, clip = request.event, request.clip
    if event.end_s is not None:
        return f"{max(0.0, event.end_s - event.start_s):.1f} s"
    if clip is not None:
        if clip.capped:
            return f"at least {clip.event_duration_s:.1f} s (still going on)"
        return f"{clip.event_duration_s:.1f} s so far (still going on)"
    return None


def loudness_text(clip: EventClip | None) -> str | None:
    if clip is None:
        return None
    levels = clip.levels()
    if levels["peak_dbfs"] is None:
        return None
    text = f"peak {levels['peak_dbfs']:.1f} dBFS, RMS {levels['rms_dbfs']:.1f} dBFS"
    if levels["background_dbfs"] is not None:
        text += f", {levels['rms_dbfs'] - levels['background_dbfs']:.0f} dB above the background before it"
    return text


def event_context(request: CaptionRequest) -> str:
    """The event's context, as the text the model is given."""
    event = request.event
    local = event.started_at.astimezone()
    lines = [
        "A sound event was detected.",
        f"Detected label: {event.label} (score {event.score:.2f})",
    ]
    others = top_labels(event)
    if others:
        lines.append("Other likely labels: " + ", ".join(
            label if score is None else f"{label} ({score:.2f})" for label, score in others))
    lines.append(f"Source: {event.source.name}; location: {_words(event.source.location)}")
    lines.append(f"Local time: {local:%Y-%m-%d %H:%M:%S %Z}, {local:%A}".replace("  ", " "))
    duration = duration_text(request)
    if duration:
        lines.append(f"Duration: {duration}")
    loudness = loudness_text(request.clip)
    if loudness:
        lines.append(f"Loudness: {loudness}")
    return "\n".join(lines)


def template_caption(request: CaptionRequest) -> str:
    """A deterministic caption from the detector's findings; always available."""
    event = request.event
    local = event.started_at.astimezone()
    caption = f"{label_phrase(event.label)} at {_words(event.source.location)} ({event.source.name}), {local:%H:%M:%S}"
    if event.end_s is not None:
        caption += f", {max(0.0, event.end_s - event.start_s):.1f} s"
    others = top_labels(event)
    if others:
        caption += "; possibly also " + ", ".join(_words(label) for label, _ in others[:3])
    return caption + "."


# --- backends ------------------------------------------------------------------------


class CaptionError(Exception):
    """A caption attempt failed; `retryable` says whether trying again may help."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Captioner(Protocol):
    """Takes an event (scores, top labels and, where allowed, its audio) and returns a caption."""

    name: str

    def caption(self, request: CaptionRequest, timeout_s: float) -> str: ...


class TemplateCaptioner:
    name = "template"

    def caption(self, request: CaptionRequest, timeout_s: float) -> str:
        return template_caption(request)


def wav_base64(audio: np.ndarray) -> str:
    """16 kHz mono 16-bit WAV, base64."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenAICaptioner:
    """An OpenAI-compatible `chat/completions` endpoint (vLLM, llama.cpp llama-server, Ollama, LM Studio)."""

    name = "openai"

    def __init__(self, config: OpenAICaptionConfig, send_audio: bool = False, max_audio_s: float = 10.0) -> None:
        self.config = config
        self.send_audio = send_audio
        self.max_audio_s = max_audio_s
        parts = urlsplit(config.base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = (parts.path.rstrip("/") or "") + "/chat/completions"

    @property
    def url(self) -> str:
        return self.config.base_url + "/chat/completions"

    def payload(self, request: CaptionRequest) -> dict[str, Any]:
        """The exact JSON body sent for this request."""
        text = event_context(request)
        content: str | list[dict[str, Any]] = text
        if self.send_audio and request.clip is not None:
            audio = request.clip.audio(self.max_audio_s)
            if len(audio):
                content = [
                    {"type": "text", "text": text + "\nThe audio of the event (with a few seconds before it) is attached."},
                    {"type": "input_audio", "input_audio": {"data": wav_base64(audio), "format": "wav"}},
                ]
        messages: list[dict[str, Any]] = []
        if self.config.prompt:
            messages.append({"role": "system", "content": self.config.prompt})
        messages.append({"role": "user", "content": content})
        return {
            "model": self.config.model,
            "messages": messages,
            "max_tokens": self.config.max_tokens,
            "temperature": self.config.temperature,
            "stream": False,
        }

    def _api_key(self) -> str | None:
        if self.config.api_key_file is not None:
            try:
                return self.config.api_key_file.expanduser().read_text(encoding="utf-8").strip()
            except OSError as error:
                raise CaptionError(f"cannot read api_key_file {self.config.api_key_file}: {error.strerror or error}",
                                   retryable=False) from None
        if self.config.api_key_env is not None:
            key = os.environ.get(self.config.api_key_env)
            if not key:
                raise CaptionError(f"environment variable {self.config.api_key_env} (api_key_env) is not set",
                                   retryable=False)
            return key.strip()
        return None

    def caption(self, request: CaptionRequest, timeout_s: float) -> str:
        body = json.dumps(self.payload(request)).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": f"earwitness/{__version__}"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        status, data = self._post(body, headers, timeout_s)
        if status != 200:
            snippet = data[:200].decode("utf-8", "replace").strip()
            retryable = status in (408, 425, 429) or status >= 500
            raise CaptionError(f"HTTP {status} from {self.url}: {snippet}", retryable=retryable)
        return parse_completion(data)

    def _post(self, body: bytes, headers: dict[str, str], timeout_s: float) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout_s
        connection_class = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = connection_class(self._host, self._port, timeout=max(0.01, timeout_s))
        try:
            connection.request("POST", self._path, body, headers)
            sock = connection.sock  # getresponse() may hand it over to the response

            def limit() -> None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout("timed out")
                if sock is not None:
                    sock.settimeout(remaining)

            limit()
            response = connection.getresponse()
            chunks, size = [], 0
            while True:
                limit()
                chunk = response.read1(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise CaptionError(f"response from {self.url} larger than {MAX_RESPONSE_BYTES} bytes", retryable=False)
                chunks.append(chunk)
            return response.status, b"".join(chunks)
        except (socket.timeout, TimeoutError):
            raise CaptionError(f"no answer from {self.url} within {timeout_s:.1f} s", retryable=True) from None
        except (OSError, http.client.HTTPException) as error:
            raise CaptionError(f"cannot reach {self.url}: {type(error).__name__}: {error}", retryable=True) from None
        finally:
            connection.close()


def parse_completion(data: bytes) -> str:
    """The caption in a `chat/completions` response: the first line of `choices[0].message.content`."""
    try:
        reply = json.loads(data)
        content = reply["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        snippet = data[:120].decode("utf-8", "replace")
        raise CaptionError(f"not a chat completion: {snippet!r}", retryable=False) from None
    if isinstance(content, list):  # content parts
        content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise CaptionError("the completion has no text content", retryable=False)
    content = re.sub(r"<think>.*?</think>", "", content, flags=re.DOTALL)
    line = next((line.strip() for line in content.splitlines() if line.strip()), "")
    line = re.sub(r"\s+", " ", line).strip().strip('"').strip()
    if not line:
        raise CaptionError("the completion is empty", retryable=False)
    return line[:MAX_CAPTION_CHARS]


def build_captioner(config: CaptionsConfig) -> Captioner:
    if config.backend == "openai":
        return OpenAICaptioner(config.openai, config.send_audio, config.max_audio_s)
    return TemplateCaptioner()


# --- protection of the endpoint -------------------------------------------------------


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


# --- the sink -----------------------------------------------------------------------


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
