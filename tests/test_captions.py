"""The caption stage and event clips, piece by piece, against a small OpenAI-compatible server on loopback."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from structlog.testing import capture_logs

from earwitness import SAMPLE_RATE
from earwitness.config import DEFAULT_CAPTION_PROMPT, ClipsConfig, ConfigError, parse_config
from earwitness.core.clips import CLIP_KEY, CLIP_PATH_KEY, EventClip
from earwitness.core.events import Event, EventChange, SourceInfo
from earwitness.core.health import Health
from earwitness.daemon.dispatch import Dispatcher
from earwitness.daemon.status import format_status
from earwitness.integrations.captions import (
    CaptionError,
    CaptionRequest,
    CaptionSink,
    CircuitBreaker,
    OpenAICaptioner,
    RateLimiter,
    event_context,
    parse_completion,
    template_caption,
)
from earwitness.integrations.captions.client import MAX_ERROR_BODY_BYTES
from earwitness.integrations.clips import ClipRecorder, ClipWriter, prune_clips
from earwitness.integrations.sinks import SinkContext
from tests.tiny_llm import free_port

CAPTION = "Glass shattered in the living room, followed by footsteps."


# --- a small OpenAI-compatible server -------------------------------------------------


def completion(content: str | None, finish_reason: str = "stop") -> bytes:
    """A `chat/completions` answer as OpenAI-compatible servers send it."""
    return json.dumps({"id": "cmpl-1", "object": "chat.completion", "model": "test",
                       "choices": [{"index": 0, "finish_reason": finish_reason,
                                    "message": {"role": "assistant", "content": content}}]}).encode()


class FakeLLM:
    """`POST /v1/chat/completions` and `GET /v1/models` on 127.0.0.1; records every POST.

    mode: ok | 500 | garbage | empty; `delay_s` before answering; `modes` (a list) overrides `mode` per request;
    `answer` (status, body) overrides both; `refuse_audio`: a request with audio gets llama-server's refusal;
    a model not in `models` gets vLLM's 404.
    """

    def __init__(self, mode: str = "ok", delay_s: float = 0.0, caption: str = CAPTION,
                 answer: tuple[int, bytes] | None = None, models: tuple[str, ...] = ("m", "midashenglm"),
                 refuse_audio: bool = False) -> None:
        self.mode, self.delay_s, self.caption, self.answer = mode, delay_s, caption, answer
        self.models, self.refuse_audio = models, refuse_audio
        self.modes: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/v1/models":
                    self._send(404, b'{"detail": "Not Found"}')
                    return
                self._send(200, json.dumps({"object": "list", "data": [
                    {"id": name, "object": "model", "owned_by": "test"} for name in owner.models]}).encode())

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with owner.lock:
                    owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body),
                                           "at": time.monotonic()})
                    mode = owner.modes.pop(0) if owner.modes else owner.mode
                time.sleep(owner.delay_s)
                model = json.loads(body).get("model")
                if model not in owner.models:
                    self._send(404, json.dumps({"error": {"message": f"The model `{model}` does not exist.",
                                                          "type": "NotFoundError", "code": 404}}).encode())
                elif owner.refuse_audio and b'"input_audio"' in body:
                    self._send(500, json.dumps({"error": {"code": 500, "type": "server_error", "message":
                               "audio input is not supported - hint: if this is unexpected, you may need to "
                               "provide the mmproj"}}).encode())
                elif owner.answer is not None:
                    self._send(*owner.answer)
                elif mode == "500":
                    self._send(500, b'{"error": "model crashed"}')
                elif mode == "garbage":
                    self._send(200, b"<html>this is {not json")
                elif mode == "empty":
                    self._send(200, completion(" "))
                else:
                    self._send(200, completion(f'"{owner.caption}"\n'))

            def _send(self, status: int, data: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    """A loopback URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture
def llm():
    servers: list[FakeLLM] = []

    def start(**kwargs: Any) -> FakeLLM:
        server = FakeLLM(**kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


# --- events and clips made by hand ------------------------------------------------------


STARTED = datetime(2026, 11, 22, 14, 41, 17, 500000, tzinfo=timezone.utc)


def make_event(**changes: Any) -> Event:
    fields: dict[str, Any] = {
        "label": "glass_break", "source": SourceInfo("hall", "living_room"), "device": "dev", "model": "cnn-2", "score": 0.93,
        "start_s": 3.0, "started_at": STARTED, "details": {"top_labels": {"glass_break": 0.93, "speech": 0.41, "door": 0.2}},
    }
    fields.update(changes)
    return Event(**fields)


def tone(seconds: float, amplitude: float = 0.5, freq: float = 1000.0) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE)).astype(np.float32)


def noise(seconds: float, dbfs: float = -50.0, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 10 ** (dbfs / 20), int(seconds * SAMPLE_RATE)).astype(np.float32)


def clip_of(event: Event, pre_roll_s: float = 1.0, event_s: float = 1.5) -> tuple[EventClip, np.ndarray]:
    """A complete clip of `event`: noise pre-roll, then a tone."""
    audio = np.concatenate([noise(pre_roll_s), tone(event_s)])
    start = int((event.start_s - pre_roll_s) * SAMPLE_RATE)
    clip = EventClip(event.id, start, int(event.start_s * SAMPLE_RATE), 30 * SAMPLE_RATE, None)
    clip.append(audio)
    clip.finish()
    return clip, audio


def with_clip(event: Event, clip: EventClip) -> Event:
    return event.evolve(details={**event.details, CLIP_KEY: clip})


def decode_wav(data: str) -> tuple[np.ndarray, int, Any]:
    raw = base64.b64decode(data, validate=True)
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    audio, rate = soundfile.read(io.BytesIO(raw), dtype="float32")
    return audio, rate, soundfile.info(io.BytesIO(raw))


# --- config -----------------------------------------------------------------------------


def test_config_defaults_and_checks() -> None:
    config = parse_config({})
    assert config.captions.backend == "template" and config.captions.caption_when == "start"
    assert config.clips.enabled is False and config.clips.pre_roll_s > 0
    audio = parse_config({"captions": {"backend": "openai", "send_audio": True, "openai": {"model": "m"}}})
    assert audio.captions.caption_when == "complete"
    with pytest.raises(ConfigError, match="captions: .*needs openai.model"):
        parse_config({"captions": {"backend": "openai"}})
    with pytest.raises(ConfigError, match="captions.openai.base_url"):
        parse_config({"captions": {"openai": {"base_url": "localhost:8000"}}})
    with pytest.raises(ConfigError, match="captions.openai: .*not both"):
        parse_config({"captions": {"openai": {"api_key_file": "/k", "api_key_env": "K"}}})
    with pytest.raises(ConfigError, match="clips.max_count"):
        parse_config({"clips": {"max_count": 0}})
    with pytest.raises(ConfigError, match="captions.queue"):
        parse_config({"captions": {"queue": 3}})


# --- the openai backend's exact request ----------------------------------------------------


def openai_config(url: str, **changes: Any) -> Any:
    return parse_config({"captions": {"backend": "openai", "openai": {"base_url": url, "model": "midashenglm", **changes}}}).captions.openai


def test_openai_request_text_only(llm, monkeypatch) -> None:
    server = llm()
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test-123")
    event = make_event(end_s=4.5)
    clip, _audio = clip_of(event)
    request = CaptionRequest.of(with_clip(event, clip))
    captioner = OpenAICaptioner(openai_config(server.url, api_key_env="TEST_LLM_KEY", max_tokens=40), send_audio=False)

    assert captioner.caption(request, timeout_s=5) == CAPTION
    [sent] = server.requests
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == "Bearer sk-test-123"
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["body"] == {
        "model": "midashenglm",
        "messages": [
            {"role": "system", "content": DEFAULT_CAPTION_PROMPT},
            {"role": "user", "content": event_context(request)},
        ],
        "max_tokens": 40,
        "temperature": 0.2,
        "stream": False,
    }
    assert "input_audio" not in json.dumps(sent["body"])
    context = sent["body"]["messages"][1]["content"]
    local = STARTED.astimezone()
    for expected in ("Detected label: glass_break (score 0.93)", "Other likely labels: speech (0.41), door (0.20)",
                     "Source: hall; location: living room", f"Local time: {local:%Y-%m-%d %H:%M:%S}",
                     "Duration: 1.5 s", "Loudness: peak -6.0 dBFS, RMS -9.0 dBFS, 41 dB above the background"):
        assert expected in context, context


def test_openai_request_with_audio(llm, tmp_path: Path) -> None:
    server = llm()
    key_file = tmp_path / "key"
    key_file.write_text("file-key\n")
    event = make_event(end_s=4.5)
    clip, audio = clip_of(event, pre_roll_s=1.0, event_s=1.5)
    request = CaptionRequest.of(with_clip(event, clip))
    captioner = OpenAICaptioner(openai_config(server.url, api_key_file=str(key_file), prompt=""), send_audio=True,
                                max_audio_s=2.0)

    assert captioner.caption(request, timeout_s=5) == CAPTION
    body = server.requests[0]["body"]
    assert server.requests[0]["headers"]["Authorization"] == "Bearer file-key"
    assert [m["role"] for m in body["messages"]] == ["user"]  # prompt "" = no system message
    text, sound = body["messages"][0]["content"]
    assert text == {"type": "text", "text": event_context(request)
                    + "\nThe first 2.0 s of the event's audio (with 1.0 s before it) is attached."}
    assert sound["type"] == "input_audio" and set(sound["input_audio"]) == {"data", "format"}
    assert sound["input_audio"]["format"] == "wav"
    decoded, rate, info = decode_wav(sound["input_audio"]["data"])
    assert (rate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert len(decoded) == 2 * SAMPLE_RATE  # pre-roll included, cut at max_audio_s
    np.testing.assert_allclose(decoded, audio[: 2 * SAMPLE_RATE], atol=1.5 / 32768)


def test_parse_completion_rejects_what_is_not_a_caption() -> None:
    ok = {"choices": [{"message": {"content": "<think>hm</think>\n  A door slammed.  \nMore text"}}]}
    assert parse_completion(json.dumps(ok).encode()) == "A door slammed."
    parts = {"choices": [{"message": {"content": [{"type": "text", "text": "A dog barked."}]}}]}
    assert parse_completion(json.dumps(parts).encode()) == "A dog barked."
    for bad in (b"not json", b"{}", b'{"choices": []}', b'{"choices": [{"text": "A door."}]}'):
        with pytest.raises(CaptionError) as raised:
            parse_completion(bad)
        assert raised.value.permanent
    for empty in (completion(None), completion("  "), completion("<think>so the sound</think>\n")):
        assert parse_completion(empty) == ""  # no caption in it, but the endpoint answered


def test_template_caption_is_deterministic() -> None:
    event = make_event(end_s=4.25)
    request = CaptionRequest.of(event)
    local = STARTED.astimezone()
    assert template_caption(request) == template_caption(request)
    assert template_caption(request) == (
        f"Glass breaking at living room (hall), {local:%H:%M:%S}, 1.2 s; possibly also speech, door.")
    loud = make_event(label="loud", details={})
    assert template_caption(CaptionRequest.of(loud)) == f"Loud sound at living room (hall), {local:%H:%M:%S}."


# --- the sink: queue, retries, breaker, rate limit -------------------------------------------


class Collector:
    """A SinkContext whose dispatch records what the captioner sends."""

    def __init__(self, captions: dict[str, Any]) -> None:
        self.changes: list[EventChange] = []
        self.cond = threading.Condition()
        self.context = SinkContext(config=parse_config({"captions": captions}), health=Health(), dispatch=self.dispatch,
                                   set_sensor=lambda *_: None, labels=["loud"])

    def dispatch(self, change: EventChange) -> None:
        with self.cond:
            self.changes.append(change)
            self.cond.notify_all()

    def wait(self, count: int, timeout: float = 5.0) -> list[EventChange]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.changes) >= count, timeout), f"{len(self.changes)} of {count}"
            return list(self.changes)


@pytest.fixture
def sinks():
    started: list[CaptionSink] = []

    def start(captions: dict[str, Any]) -> tuple[CaptionSink, Collector]:
        collector = Collector(captions)
        sink = CaptionSink(collector.context)
        sink.start()
        started.append(sink)
        return sink, collector

    yield start
    for sink in started:
        sink.close()


def remote(url: str, **changes: Any) -> dict[str, Any]:
    return {"backend": "openai", "openai": {"base_url": url, "model": "m", "timeout_s": 2.0}, "backoff_s": 0.05,
            "retries": 1, **changes}


def test_template_backend_sends_an_update_of_the_same_event(sinks) -> None:
    sink, collector = sinks({})
    event = make_event()
    sink.handle_event(EventChange("start", event))
    [update] = collector.wait(1)
    assert update.type == "update" and update.event.id == event.id
    assert update.event.caption == template_caption(CaptionRequest.of(event))
    sink.handle_event(update)  # our own update coming back through the dispatcher: ignored
    sink.handle_event(EventChange("end", event.evolve(end_s=4.0, caption=update.event.caption)))
    time.sleep(0.1)
    assert len(collector.changes) == 1


def test_openai_caption_arrives_as_update(sinks, llm) -> None:
    server = llm()
    sink, collector = sinks(remote(server.url))
    event = make_event()
    sink.handle_event(EventChange("start", event))
    [update] = collector.wait(1)
    assert (update.type, update.event.id, update.event.caption) == ("update", event.id, CAPTION)
    assert collector.context.health.sinks["captions"]["captioned"] == 1


FAILED = "caption failed, template caption used"
REFUSED = "caption refused by the endpoint, template caption used"
EMPTY = "caption reply held no caption (empty, only reasoning, or cut off), template caption used"


@pytest.mark.parametrize("mode, requests, logged", [
    ("500", 2, (FAILED, "warning")), ("garbage", 1, (REFUSED, "warning")), ("empty", 1, (EMPTY, "info")),
    ("down", 0, (FAILED, "warning")), ("slow", 2, (FAILED, "warning"))])
def test_failures_fall_back_to_the_template(sinks, llm, mode: str, requests: int, logged: tuple[str, str]) -> None:
    server = llm(mode="ok" if mode in ("slow", "down") else mode, delay_s=3.0 if mode == "slow" else 0.0)
    url = closed_port_url() if mode == "down" else server.url
    sink, collector = sinks(remote(url, openai={"base_url": url, "model": "m", "timeout_s": 0.3}))
    event = make_event()
    began = time.monotonic()
    with capture_logs() as logs:
        sink.handle_event(EventChange("start", event))
        assert time.monotonic() - began < 0.05  # never waits for the endpoint
        [update] = collector.wait(1)
    assert time.monotonic() - began < 1.5
    assert update.event.id == event.id and update.event.caption == template_caption(CaptionRequest.of(event))
    assert len(server.requests) == requests  # retried only when it may help
    failed = [entry for entry in logs if entry["event"] in (FAILED, REFUSED, EMPTY)]
    assert [(entry["event"], entry["log_level"], entry["id"]) for entry in failed] == [(*logged, event.id)]


def test_handle_event_never_waits_for_a_slow_endpoint(sinks, llm) -> None:
    server = llm(delay_s=0.5)
    sink, collector = sinks(remote(server.url, concurrency=2, queue_size=3))
    events = [make_event() for _ in range(8)]
    began = time.monotonic()
    for event in events:
        sink.handle_event(EventChange("start", event))
    assert time.monotonic() - began < 0.1
    changes = collector.wait(8, timeout=4)
    by_id = {change.event.id: change.event.caption for change in changes}
    assert set(by_id) == {event.id for event in events}
    # the queued (3) and those the 2 workers took at once get the model's caption; those beyond the
    # queue get the template's, at once
    model = sum(caption == CAPTION for caption in by_id.values())
    assert 3 <= model <= 5
    assert collector.context.health.sinks["captions"]["queue_full"] == 8 - model
    assert all(c.event.caption != CAPTION for c in changes[: 8 - model])  # the template ones came first


def test_circuit_breaker_stops_calling_a_failing_endpoint(sinks, llm) -> None:
    server = llm(mode="500")
    sink, collector = sinks(remote(server.url, retries=0, breaker={"failures": 2, "reset_s": 0.4}))
    for number in range(3):
        sink.handle_event(EventChange("start", make_event()))
        collector.wait(number + 1)
    assert len(server.requests) == 2  # the third never reached the endpoint
    assert sink.breaker.state == "open"
    server.mode = "ok"
    time.sleep(0.45)
    sink.handle_event(EventChange("start", make_event()))
    assert collector.wait(4)[-1].event.caption == CAPTION  # the trial request closes the circuit
    assert sink.breaker.state == "closed" and len(server.requests) == 3


def test_a_refusal_answers_the_trial_request_of_an_open_circuit(sinks, llm) -> None:
    server = llm(mode="500")
    sink, collector = sinks(remote(server.url, retries=0, breaker={"failures": 1, "reset_s": 0.2}))
    sink.handle_event(EventChange("start", make_event()))
    collector.wait(1)
    assert sink.breaker.state == "open"
    server.answer = (404, b'{"error": {"message": "The model `m` does not exist."}}')
    time.sleep(0.25)
    for number in (2, 3):
        sink.handle_event(EventChange("start", make_event()))
        collector.wait(number)
    assert sink.breaker.state == "closed" and len(server.requests) == 3


def test_rate_limit_per_minute(sinks, llm) -> None:
    server = llm()
    sink, collector = sinks(remote(server.url, rate_limit_per_minute=2))
    for number in range(3):
        sink.handle_event(EventChange("start", make_event()))
        collector.wait(number + 1)
    assert [c.event.caption == CAPTION for c in collector.changes] == [True, True, False]
    assert len(server.requests) == 2


def test_breaker_and_limiter_units() -> None:
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert [limiter.allow(), limiter.allow(), limiter.allow()] == [True, True, False]
    now[0] = 60.0
    assert limiter.allow()
    breaker = CircuitBreaker(failures=2, reset_s=10, clock=lambda: now[0])
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow() and breaker.state == "open"
    now[0] += 10
    assert breaker.allow() and breaker.state == "half-open"
    assert not breaker.allow()  # one trial at a time
    breaker.failure()
    assert breaker.state == "open"
    now[0] += 10
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed"


def test_caption_when_complete_waits_for_the_clip(sinks, llm) -> None:
    server = llm()
    sink, collector = sinks(remote(server.url, send_audio=True))
    event = make_event()
    clip = EventClip(event.id, 2 * SAMPLE_RATE, 3 * SAMPLE_RATE, 30 * SAMPLE_RATE, None)
    clip.append(noise(1.0))
    sink.handle_event(EventChange("start", with_clip(event, clip)))
    time.sleep(0.2)
    assert not server.requests and not collector.changes
    clip.append(tone(0.5))
    clip.finish()  # the recorder completes the clip as the event ends, before the end goes out
    sink.handle_event(EventChange("end", with_clip(event.evolve(end_s=3.5), clip)))
    [update] = collector.wait(1)
    # a complete caption states the event's duration, which the model's did not
    assert update.event.caption == "Glass shattered in the living room, followed by footsteps (0.5 s)."
    assert len(server.requests) == 1
    decoded, _rate, _info = decode_wav(server.requests[0]["body"]["messages"][1]["content"][1]["input_audio"]["data"])
    assert len(decoded) == int(1.5 * SAMPLE_RATE)


def test_send_audio_to_a_remote_endpoint_warns_at_start() -> None:
    # `.invalid` never resolves (RFC 6761): the endpoint check at start sends nothing anywhere
    for url, warned in (("http://caption-server.invalid:8000/v1", True), ("http://localhost:8000/v1", False),
                        ("http://[::1]:8000/v1", False)):
        collector = Collector(remote(url, send_audio=True))
        with capture_logs() as logs:
            sink = CaptionSink(collector.context)
            sink.start()
            sink.close()
        warnings = [e for e in logs if e["log_level"] == "warning" and "send_audio" in e["event"]]
        assert bool(warnings) == warned, url


# --- against real servers (issue 18): each finding, then the endpoint check and the text fallback -------------


def test_prompt_of_an_ended_event_says_it_ended(sinks, llm, tmp_path: Path) -> None:
    """Finding 1: the recorder completes the clip before the end change reaches the caption sink."""
    server = llm()
    sink, collector = sinks(remote(server.url, send_audio=True))
    dispatcher = Dispatcher([sink], Health())
    recorder = recorder_for(tmp_path)
    audio = np.concatenate([noise(2.0), tone(1.0), noise(1.0)])
    event = make_event(start_s=2.0, details={})
    feed(recorder, audio[: int(2.5 * SAMPLE_RATE)])
    dispatcher.event(recorder.on_change(EventChange("start", event)))
    feed(recorder, audio[int(2.5 * SAMPLE_RATE) :])
    end = recorder.on_change(EventChange("end", event.evolve(end_s=3.0, ended_at=STARTED)))
    time.sleep(0.3)  # the end change on its way to the sinks (the daemon's loop hands it over)
    assert not server.requests
    dispatcher.event(end)
    [update] = collector.wait(1)
    assert update.event.caption == CAPTION.removesuffix(".") + " (1.0 s)." and update.event.end_s == 3.0
    text = server.requests[0]["body"]["messages"][1]["content"][0]["text"]
    assert "Duration: 1.0 s (it has ended)" in text and "still going on" not in text, text


def test_a_capped_clip_is_captioned_while_its_event_goes_on(sinks, llm, tmp_path: Path) -> None:
    server = llm()
    sink, collector = sinks(remote(server.url, send_audio=True))
    recorder = recorder_for(tmp_path, max_s=2.0)
    audio = np.concatenate([noise(1.0), tone(3.0)])
    feed(recorder, audio[: int(1.5 * SAMPLE_RATE)])
    sink.handle_event(recorder.on_change(EventChange("start", make_event(start_s=1.0, details={}))))
    feed(recorder, audio[int(1.5 * SAMPLE_RATE) :])  # the clip reaches 2 s; the event has not ended
    collector.wait(1)
    text = server.requests[0]["body"]["messages"][1]["content"][0]["text"]
    assert "Duration: at least 1.0 s (still going on)" in text, text


@pytest.mark.parametrize("status", [503, 404])
def test_a_huge_error_body_keeps_its_status(llm, status: int) -> None:
    """Finding 2: the status of an error with a body over 1 MB was lost; its body is read only up to a bound."""
    reason = "The model `midashenglm` does not exist." if status == 404 else "Service Unavailable"
    body = json.dumps({"error": {"message": reason, "padding": "x" * 2_000_000}}).encode()
    server = llm(answer=(status, body))
    captioner = OpenAICaptioner(openai_config(server.url))
    began = time.monotonic()
    with pytest.raises(CaptionError) as raised:
        captioner.caption(CaptionRequest.of(make_event()), timeout_s=5)
    assert str(raised.value).startswith(f"HTTP {status} from {server.url}/chat/completions")
    assert raised.value.permanent == (status == 404)
    assert len(str(raised.value)) < 400 and time.monotonic() - began < 2
    assert MAX_ERROR_BODY_BYTES == 64 * 1024


@pytest.mark.parametrize("status, reason", [
    (404, "The model `m` does not exist."),  # vLLM, wrong model name
    (400, "Server is pinned to '/models/tiny'; requested 'm'."),  # transformers serve, wrong model name
    (500, "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj"),
])
def test_a_permanent_error_is_not_retried_and_says_why(sinks, llm, status: int, reason: str) -> None:
    """Finding 3: refusals were retried, opened the circuit breaker, and gave their reason only in the debug log."""
    server = llm(answer=(status, json.dumps({"error": {"message": reason, "type": "invalid_request_error"}}).encode()))
    sink, collector = sinks(remote(server.url, retries=2, breaker={"failures": 2, "reset_s": 60}))
    events = [make_event() for _ in range(3)]
    with capture_logs() as logs:
        for number, event in enumerate(events):
            sink.handle_event(EventChange("start", event))
            collector.wait(number + 1)
    assert len(server.requests) == 3  # one each: no retry, no open circuit
    assert sink.breaker.state == "closed"
    assert [c.event.caption for c in collector.changes] == [template_caption(CaptionRequest.of(e)) for e in events]
    refused = [(e["log_level"], e["reason"]) for e in logs if e["event"] == REFUSED]
    expected = f"HTTP {status} from {server.url}/chat/completions: {reason}"
    assert refused == [("warning", expected), ("info", expected), ("info", expected)]  # a warning once
    figures = collector.context.health.sinks["captions"]
    assert (figures["state"], figures["last_failure"]) == ("refused", expected)
    status_text = format_status({"sources": {}, "sinks": collector.context.health.sinks})
    assert f"state refused, last_failure {expected}" in status_text


def test_caption_text_is_clean(sinks, llm) -> None:
    """Finding 4: control characters and U+FFFD went into captions and on to MQTT."""
    server = llm(caption="Glass\x07 broke\ufffd in the \x1b[31mhall\x1b[0m,\u200b then\tsilence.\x00")
    sink, collector = sinks(remote(server.url))
    sink.handle_event(EventChange("start", make_event()))
    [update] = collector.wait(1)
    assert update.event.caption == "Glass broke in the hall, then silence."


@pytest.mark.parametrize("content, finish_reason, expected", [
    ("<think>The user wants a caption. The sound is glass", "stop", None),  # reasoning never closed
    ("<think>It is glass.</think>\n**Glass broke** in the hall.", "stop", "Glass broke in the hall."),
    ("A door slammed in the hall. Then a dog barked and", "length", "A door slammed in the hall."),
    ("A door slammed in the hall and then a dog", "length", None),
    ("“A door slammed.” A dog barked. A car drove off. The end.", "stop", "A door slammed. A dog barked."),
])
def test_reasoning_and_cut_off_replies(sinks, llm, content: str, finish_reason: str, expected: str | None) -> None:
    """Finding 5: an unclosed <think> block, or a reply cut off by the token limit, was taken as the caption."""
    server = llm(answer=(200, completion(content, finish_reason)))
    sink, collector = sinks(remote(server.url))
    event = make_event()
    sink.handle_event(EventChange("start", event))
    [update] = collector.wait(1)
    assert update.event.caption == (expected or template_caption(CaptionRequest.of(event)))


def test_long_captions_are_cut_at_a_sentence() -> None:
    words = "A loud crash came from the hall, like a shelf of plates falling onto a tiled floor, then silence"
    reply = completion(f"{words}. {words}, again.")
    assert parse_completion(reply, max_chars=120) == words + "."
    assert parse_completion(completion(words), max_chars=40) == "A loud crash came from the hall, like…"
    assert parse_completion(completion("One. Two. Three."), max_sentences=1) == "One."


def test_an_empty_reply_is_not_an_endpoint_failure(sinks, llm) -> None:
    """Finding 6: an empty reply counted as a failure of the endpoint and opened the circuit breaker."""
    server = llm(mode="empty")
    sink, collector = sinks(remote(server.url, breaker={"failures": 1, "reset_s": 60}))
    events = [make_event() for _ in range(2)]
    with capture_logs() as logs:
        for number, event in enumerate(events):
            sink.handle_event(EventChange("start", event))
            collector.wait(number + 1)
    assert len(server.requests) == 2 and sink.breaker.state == "closed"
    assert [c.event.caption for c in collector.changes] == [template_caption(CaptionRequest.of(e)) for e in events]
    assert not [e for e in logs if e["log_level"] == "warning"]
    assert collector.context.health.sinks["captions"]["state"] == "ready"


@pytest.mark.parametrize("event_dbfs, wording", [
    (-40.0, "10 dB below the background before it"),
    (-30.2, "about as loud as the background before it"),
    (-20.0, "10 dB above the background before it"),
])
def test_level_wording_for_quiet_events(event_dbfs: float, wording: str) -> None:
    """Finding 7: an event quieter than the background was said to be "-1 dB above the background"."""
    event = make_event(end_s=4.0)
    audio = np.concatenate([noise(1.0, dbfs=-30.0, seed=1), noise(1.0, dbfs=event_dbfs, seed=2)])
    clip = EventClip(event.id, 2 * SAMPLE_RATE, 3 * SAMPLE_RATE, 30 * SAMPLE_RATE, None)
    clip.append(audio)
    clip.finish()
    context = event_context(CaptionRequest.of(with_clip(event, clip)))
    assert context.endswith(wording), context
    assert "-" not in context.rsplit("RMS", 1)[1].split(",", 1)[1]


def test_audio_is_capped_to_what_the_model_hears(llm) -> None:
    """Qwen2-Audio hears the first 30 s only: no more is sent, whatever max_audio_s allows."""
    assert parse_config({}).captions.max_audio_s == 30.0
    models = ("Qwen/Qwen2-Audio-7B-Instruct", "gemma-3n-E4B-it", "mistralai/Voxtral-Mini-3B-2507")
    server = llm(models=models)
    event = make_event(end_s=43.0)
    clip = EventClip(event.id, 2 * SAMPLE_RATE, 3 * SAMPLE_RATE, 60 * SAMPLE_RATE, None)
    clip.append(np.concatenate([noise(1.0), tone(40.0, amplitude=0.1)]))
    clip.finish()
    request = CaptionRequest.of(with_clip(event, clip))
    for model, seconds in zip(models, (30.0, 30.0, 41.0)):
        captioner = OpenAICaptioner(openai_config(server.url, model=model), send_audio=True, max_audio_s=120)
        captioner.caption(request, timeout_s=5)
        text, sound = server.requests[-1]["body"]["messages"][1]["content"]
        decoded, _rate, _info = decode_wav(sound["input_audio"]["data"])
        assert len(decoded) == int(seconds * SAMPLE_RATE), model
        said = "The first 30.0 s of the event's audio" if seconds < 41 else "The audio of the event"
        assert text["text"].endswith(f"{said} (with 1.0 s before it) is attached."), text


def test_a_server_that_refuses_audio_gets_text_prompts(sinks, llm, tmp_path: Path) -> None:
    server = llm(refuse_audio=True)
    sink, collector = sinks(remote(server.url, send_audio=True, when="start"))
    events = [make_event(end_s=4.5) for _ in range(2)]
    with capture_logs() as logs:
        for number, event in enumerate(events):
            clip, _audio = clip_of(event)
            sink.handle_event(EventChange("start", with_clip(event, clip)))
            collector.wait(number + 1)
    assert [c.event.caption for c in collector.changes] == [CAPTION.removesuffix(".") + " (1.5 s)."] * 2
    sent = [request["body"]["messages"][1]["content"] for request in server.requests]
    assert [isinstance(content, list) for content in sent] == [True, False, False]  # audio once, then text
    assert "Detected label: glass_break" in sent[1] and "Duration: 1.5 s (it has ended)" in sent[1]
    assert sink.breaker.state == "closed"
    switched = [e for e in logs if e["event"] == "caption endpoint refuses audio input: text prompts from now on"]
    assert len(switched) == 1 and switched[0]["log_level"] == "warning"
    assert "audio input is not supported" in switched[0]["reason"]


@pytest.mark.parametrize("case", ["ready", "model not served", "unreachable"])
def test_the_endpoint_is_checked_at_start(llm, case: str) -> None:
    server = llm(models=("m",) if case == "ready" else ("qwen2-audio", "llama3"))
    url = closed_port_url() if case == "unreachable" else server.url
    collector = Collector(remote(url))
    with capture_logs() as logs:
        sink = CaptionSink(collector.context)
        began = time.monotonic()
        sink.start()
        assert time.monotonic() - began < 0.1  # the check never holds up the start
        deadline = time.monotonic() + 5
        while collector.context.health.sinks["captions"]["state"] == "checking" and time.monotonic() < deadline:
            time.sleep(0.01)
        sink.close()
    figures = collector.context.health.sinks["captions"]
    assert figures["state"] == case
    checks = [e for e in logs if e["event"].startswith("caption endpoint") or e["event"].startswith("caption model")]
    assert len(checks) == 1, checks  # said once
    if case == "ready":
        assert checks[0]["log_level"] == "info" and figures["last_failure"] is None
    elif case == "model not served":
        assert checks[0]["event"] == "caption model not served, template captions until it is"
        assert checks[0]["served"] == ["qwen2-audio", "llama3"] and checks[0]["log_level"] == "warning"
        assert figures["last_failure"] == f"model 'm' is not served by {url} (it serves: qwen2-audio, llama3)"
    else:
        assert checks[0]["event"] == "caption endpoint not usable, template captions until it answers"
        assert figures["last_failure"].startswith(f"cannot reach {url}/models: ConnectionRefusedError")


# --- the dispatcher keeps captions --------------------------------------------------------------


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.changes: list[EventChange] = []

    def start(self) -> None: ...
    def handle_sensor(self, state) -> None: ...
    def handle_guard(self, state, alarm) -> None: ...
    def close(self) -> None: ...

    def handle_event(self, change: EventChange) -> None:
        self.changes.append(change)


def test_dispatcher_keeps_the_caption_on_later_changes() -> None:
    recorder = Recorder()
    dispatcher = Dispatcher([recorder], Health())
    event = make_event(details={CLIP_KEY: "audio", CLIP_PATH_KEY: None})
    dispatcher.event(EventChange("start", event))
    dispatcher.event(EventChange("update", event.evolve(caption="A caption.")))
    dispatcher.event(EventChange("update", event.evolve(score=0.99)))  # the tracker's copy: no caption
    ended = event.evolve(score=0.99, end_s=4.0, ended_at=STARTED, details={CLIP_KEY: "audio", CLIP_PATH_KEY: "/c.flac"})
    dispatcher.event(EventChange("end", ended))
    assert [(c.type, c.event.caption) for c in recorder.changes] == [
        ("start", None), ("update", "A caption."), ("update", "A caption."), ("end", "A caption.")]
    assert recorder.changes[-1].event.details[CLIP_KEY] == "audio"  # the sinks still get the audio

    # a caption that comes after the end carries the event's latest state
    late = make_event()
    dispatcher.event(EventChange("start", late))
    dispatcher.event(EventChange("end", late.evolve(end_s=4.0, ended_at=STARTED)))
    dispatcher.event(EventChange("update", late.evolve(caption="Late.")))
    last = recorder.changes[-1]
    assert (last.type, last.event.caption, last.event.ended_at) == ("update", "Late.", STARTED)
    assert last.message()["ended_at"] is not None
    assert CLIP_KEY not in dispatcher._recent[event.id].event.details  # no audio kept in its memory


# --- clips ------------------------------------------------------------------------------------


CLIP_WRITER = ClipWriter()


def recorder_for(tmp_path: Path, **clips: Any) -> ClipRecorder:
    config = parse_config({"state_dir": str(tmp_path), "clips": {"pre_roll_s": 1.0, **clips}})
    return ClipRecorder.for_config(config, SourceInfo("hall", "living_room"), CLIP_WRITER)


def feed(recorder: ClipRecorder, audio: np.ndarray, chunk_s: float = 0.05) -> None:
    step = int(chunk_s * SAMPLE_RATE)
    for start in range(0, len(audio), step):
        recorder.feed(audio[start : start + step])


def test_clip_keeps_pre_roll_and_the_event_until_its_end(tmp_path: Path) -> None:
    recorder = recorder_for(tmp_path)
    audio = np.concatenate([noise(4.0), tone(1.0), noise(2.0)])
    event = make_event(start_s=4.0, details={})
    feed(recorder, audio[: int(4.6 * SAMPLE_RATE)])
    start = recorder.on_change(EventChange("start", event))
    clip = start.event.details[CLIP_KEY]
    assert CLIP_PATH_KEY not in start.event.details and "clip" not in start.message()  # clip files are off
    assert not clip.complete and clip.pre_roll == SAMPLE_RATE
    feed(recorder, audio[int(4.6 * SAMPLE_RATE) :])
    end = recorder.on_change(EventChange("end", event.evolve(end_s=5.5)))
    assert end.event.details[CLIP_KEY] is clip and clip.complete and not clip.capped
    np.testing.assert_array_equal(clip.audio(), audio[3 * SAMPLE_RATE : int(5.5 * SAMPLE_RATE)])
    levels = clip.levels()
    assert levels["peak_dbfs"] == pytest.approx(-6.0, abs=0.1) and levels["background_dbfs"] == pytest.approx(-50, abs=1)


def test_clip_stops_at_max_length_while_the_event_goes_on(tmp_path: Path) -> None:
    recorder = recorder_for(tmp_path, max_s=2.0)
    audio = np.concatenate([noise(1.0), tone(5.0)])
    feed(recorder, audio[: int(1.5 * SAMPLE_RATE)])
    event = make_event(start_s=1.0, details={})
    clip = recorder.on_change(EventChange("start", event)).event.details[CLIP_KEY]
    completed: list[EventClip] = []
    clip.on_complete(completed.append)
    feed(recorder, audio[int(1.5 * SAMPLE_RATE) :])
    assert completed == [clip] and clip.capped and len(clip) == 2 * SAMPLE_RATE
    np.testing.assert_array_equal(clip.audio(), audio[: 2 * SAMPLE_RATE])


def test_clip_files_written_and_named_in_messages(tmp_path: Path) -> None:
    recorder = recorder_for(tmp_path, enabled=True)
    audio = np.concatenate([noise(2.0), tone(0.5), noise(1.0)])
    event = make_event(start_s=2.0, details={})
    feed(recorder, audio[: int(2.5 * SAMPLE_RATE)])
    start = recorder.on_change(EventChange("start", event))
    assert start.message()["clip"] is None  # recording
    feed(recorder, audio[int(2.5 * SAMPLE_RATE) :])
    end = recorder.on_change(EventChange("end", event.evolve(end_s=2.75)))
    path = Path(end.message()["clip"])
    assert path.parent == tmp_path / "clips" and path.name.endswith(f"_hall_glass_break_{event.id}.flac")
    CLIP_WRITER.flush()
    written, rate = soundfile.read(path, dtype="float32")
    assert rate == SAMPLE_RATE and soundfile.info(path).format == "FLAC"
    np.testing.assert_allclose(written, audio[SAMPLE_RATE : int(2.75 * SAMPLE_RATE)], atol=1.5 / 32768)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # nothing else on disk


def test_clip_limits(tmp_path: Path) -> None:
    now = time.time()
    for number in range(6):
        path = tmp_path / f"clip{number}.flac"
        path.write_bytes(b"x" * 300_000)
        os.utime(path, (now - (6 - number) * 3600, now - (6 - number) * 3600))
    old = tmp_path / "old.flac"
    old.write_bytes(b"x")
    os.utime(old, (now - 3 * 86400, now - 3 * 86400))
    limits = ClipsConfig(max_count=5, max_mb=1.0, max_age_days=2)
    assert prune_clips(tmp_path, limits, now) == 4  # old by age, clip0 by count, clip1 and clip2 by size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip3.flac", "clip4.flac", "clip5.flac"]
