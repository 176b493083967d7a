"""The caption stage and event clips, piece by piece, against a small OpenAI-compatible server on loopback."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
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
from earwitness.daemon.clips import CLIP_KEY, CLIP_PATH_KEY, WRITER, ClipRecorder, EventClip, prune_clips
from earwitness.daemon.events import Event, EventChange, SourceInfo
from earwitness.daemon.health import Health
from earwitness.integrations.captions import (
    CaptionError, CaptionRequest, CaptionSink, CircuitBreaker, OpenAICaptioner, RateLimiter, event_context,
    parse_completion, template_caption,
)
from earwitness.integrations.sinks import Dispatcher, SinkContext

CAPTION = "Glass shattered in the living room, followed by footsteps."


# --- a small OpenAI-compatible server -------------------------------------------------


class FakeLLM:
    """`POST /v1/chat/completions` on 127.0.0.1; records every request.

    mode: ok | 500 | garbage | empty; `delay_s` before answering; `modes` (a list) overrides `mode` per request.
    """

    def __init__(self, mode: str = "ok", delay_s: float = 0.0, caption: str = CAPTION) -> None:
        self.mode, self.delay_s, self.caption = mode, delay_s, caption
        self.modes: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with owner.lock:
                    owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body),
                                           "at": time.monotonic()})
                    mode = owner.modes.pop(0) if owner.modes else owner.mode
                time.sleep(owner.delay_s)
                if mode == "500":
                    self._send(500, b'{"error": "model crashed"}')
                elif mode == "garbage":
                    self._send(200, b"<html>this is {not json")
                elif mode == "empty":
                    self._send(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": " "}}]}).encode())
                else:
                    reply = {"id": "cmpl-1", "object": "chat.completion", "model": "test",
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": f'"{owner.caption}"\n'}}]}
                    self._send(200, json.dumps(reply).encode())

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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


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
    fields: dict[str, Any] = dict(
        label="glass_break", source=SourceInfo("hall", "living_room"), device="dev", model="cnn-2", score=0.93,
        start_s=3.0, started_at=STARTED, details={"top_labels": {"glass_break": 0.93, "speech": 0.41, "door": 0.2}},
    )
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
                    + "\nThe audio of the event (with a few seconds before it) is attached."}
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
    for bad in (b"not json", b"{}", b'{"choices": []}', b'{"choices": [{"message": {"content": null}}]}',
                b'{"choices": [{"message": {"content": "  "}}]}'):
        with pytest.raises(CaptionError) as raised:
            parse_completion(bad)
        assert not raised.value.retryable


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


@pytest.mark.parametrize("mode, requests", [("500", 2), ("garbage", 1), ("empty", 1), ("down", 0), ("slow", 2)])
def test_failures_fall_back_to_the_template(sinks, llm, mode: str, requests: int) -> None:
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
    failed = [entry for entry in logs if entry["event"] == "caption failed, template caption used"]
    assert len(failed) == 1 and failed[0]["id"] == event.id and failed[0]["log_level"] == "warning"


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
    assert update.event.caption == CAPTION and len(server.requests) == 1
    decoded, _rate, _info = decode_wav(server.requests[0]["body"]["messages"][1]["content"][1]["input_audio"]["data"])
    assert len(decoded) == int(1.5 * SAMPLE_RATE)


def test_send_audio_to_a_remote_endpoint_warns_at_start() -> None:
    for url, warned in (("http://192.168.1.20:8000/v1", True), ("http://localhost:8000/v1", False),
                        ("http://[::1]:8000/v1", False)):
        collector = Collector(remote(url, send_audio=True))
        with capture_logs() as logs:
            sink = CaptionSink(collector.context)
            sink.start()
            sink.close()
        warnings = [e for e in logs if e["log_level"] == "warning" and "send_audio" in e["event"]]
        assert bool(warnings) == warned, url


# --- the dispatcher keeps captions --------------------------------------------------------------


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.changes: list[EventChange] = []

    def start(self) -> None: ...
    def handle_sensor(self, state) -> None: ...
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


def recorder_for(tmp_path: Path, **clips: Any) -> ClipRecorder:
    config = parse_config({"state_dir": str(tmp_path), "clips": {"pre_roll_s": 1.0, **clips}})
    return ClipRecorder.for_config(config, SourceInfo("hall", "living_room"))


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
    WRITER.flush()
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
