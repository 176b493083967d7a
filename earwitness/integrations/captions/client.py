"""Captioners: the template (no model) and any OpenAI-compatible `chat/completions` endpoint."""

from __future__ import annotations

import base64
import http.client
import io
import ipaddress
import json
import os
import re
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np
import soundfile
import structlog

from earwitness import SAMPLE_RATE, __version__
from earwitness.config import CaptionsConfig, OpenAICaptionConfig
from earwitness.integrations.captions.prompt import CaptionRequest, event_context, template_caption
from earwitness.integrations.captions.text import clean_caption, plain_text

log = structlog.get_logger(__name__)

MAX_RESPONSE_BYTES = 1_000_000
MAX_ERROR_BODY_BYTES = 64 * 1024
"""An error's body is read up to this much: enough for its reason, never a server's whole page."""
RETRYABLE_STATUSES = (408, 425, 429)
MODEL_AUDIO_S = (("qwen2-audio", 30.0), ("gemma-3n", 30.0), ("gemma3n", 30.0))
"""Model families (matched in the served model name) that hear no more than this much audio per request."""
_UNSUPPORTED = re.compile(r"not (?:yet )?supported|unsupported|does not support|doesn't support|not a multimodal|at most 0 ",
                          re.IGNORECASE)
_AUDIO = re.compile(r"audio|multimodal|modalit", re.IGNORECASE)


class CaptionError(Exception):
    """A caption attempt failed.

    `permanent`: the server refused the request as it is (wrong model name, unsupported input, bad key,
    not a chat completion); trying again cannot help, so there is no retry and the circuit breaker is
    not touched. Otherwise transient (5xx, timeout, no connection): retried with backoff, counted by
    the breaker. `audio_refused`: the refusal is of the audio input; a text prompt may still work.
    """

    def __init__(self, message: str, permanent: bool, audio_refused: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.audio_refused = audio_refused


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


def audio_limit_s(model: str, configured_s: float) -> float:
    """The audio sent per request: `configured_s`, or less for a model family known to hear less."""
    name = model.lower()
    return min([configured_s] + [limit for family, limit in MODEL_AUDIO_S if family in name])


class OpenAICaptioner:
    """An OpenAI-compatible `chat/completions` endpoint (vLLM, llama.cpp llama-server, Ollama, LM Studio,
    `transformers serve`)."""

    name = "openai"

    def __init__(self, config: OpenAICaptionConfig, send_audio: bool = False, max_audio_s: float = 30.0,
                 max_chars: int = 200, max_sentences: int = 2) -> None:
        self.config = config
        self.send_audio = send_audio
        self.max_audio_s = audio_limit_s(config.model or "", max_audio_s)
        self.max_chars = max_chars
        self.max_sentences = max_sentences
        self.audio_refused = False
        """Set once the server refused audio input: text prompts from then on."""
        parts = urlsplit(config.base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._base_path = parts.path.rstrip("/")

    @property
    def url(self) -> str:
        return self.config.base_url + "/chat/completions"

    @property
    def sends_audio(self) -> bool:
        return self.send_audio and not self.audio_refused

    def payload(self, request: CaptionRequest) -> dict[str, Any]:
        """The exact JSON body sent for this request."""
        text = event_context(request)
        content: str | list[dict[str, Any]] = text
        if self.sends_audio and request.clip is not None:
            audio = request.clip.audio(self.max_audio_s)
            if len(audio):
                pre_roll_s = min(request.clip.pre_roll, len(audio)) / SAMPLE_RATE
                attached = (f"The first {len(audio) / SAMPLE_RATE:.1f} s of the event's audio"
                            if len(audio) < len(request.clip) else "The audio of the event")
                content = [
                    {"type": "text", "text": f"{text}\n{attached} (with {pre_roll_s:.1f} s before it) is attached."},
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

    def caption(self, request: CaptionRequest, timeout_s: float) -> str:
        """The clean caption; "" when the reply holds none. A refusal of audio input switches this endpoint
        to text prompts for good (logged once) and asks again at once with the text prompt."""
        deadline = time.monotonic() + timeout_s
        try:
            return self._caption(request, timeout_s)
        except CaptionError as error:
            if not (error.audio_refused and self.sends_audio):
                raise
            self.audio_refused = True
            log.warning("caption endpoint refuses audio input: text prompts from now on", endpoint=self.url,
                        model=self.config.model, reason=str(error))
            return self._caption(request, max(0.01, deadline - time.monotonic()))

    def _caption(self, request: CaptionRequest, timeout_s: float) -> str:
        body = json.dumps(self.payload(request)).encode("utf-8")
        data = self._exchange("POST", "/chat/completions", body, timeout_s)
        return parse_completion(data, self.max_chars, self.max_sentences)

    def served_models(self, timeout_s: float) -> list[str]:
        """The model names the server lists (`GET /models`)."""
        data = self._exchange("GET", "/models", None, timeout_s)
        try:
            return [str(entry["id"]) for entry in json.loads(data)["data"]]
        except (ValueError, KeyError, TypeError):
            raise CaptionError(f"{self.config.base_url}/models is not an OpenAI-compatible model list: "
                               f"{plain_text(data[:120].decode('utf-8', 'replace'))!r}", permanent=True) from None

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": f"earwitness/{__version__}"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _api_key(self) -> str | None:
        if self.config.api_key_file is not None:
            try:
                return self.config.api_key_file.expanduser().read_text(encoding="utf-8").strip()
            except OSError as error:
                raise CaptionError(f"cannot read api_key_file {self.config.api_key_file}: {error.strerror or error}",
                                   permanent=True) from None
        if self.config.api_key_env is not None:
            key = os.environ.get(self.config.api_key_env)
            if not key:
                raise CaptionError(f"environment variable {self.config.api_key_env} (api_key_env) is not set",
                                   permanent=True)
            return key.strip()
        return None

    def _exchange(self, method: str, path: str, body: bytes | None, timeout_s: float) -> bytes:
        """The body of a 200 answer; any other answer raises its `CaptionError`."""
        url = self.config.base_url + path
        status, data = self._request(method, self._base_path + path, body, self._headers(), timeout_s, url)
        if status == 200:
            return data
        reason = error_reason(data)
        refused = bool(_UNSUPPORTED.search(reason))
        permanent = refused or (400 <= status < 500 and status not in RETRYABLE_STATUSES)
        raise CaptionError(f"HTTP {status} from {url}: {reason}" if reason else f"HTTP {status} from {url}",
                          permanent, audio_refused=refused and bool(_AUDIO.search(reason)))

    def _request(self, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout_s: float,
                 url: str) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout_s
        connection_class = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = connection_class(self._host, self._port, timeout=max(0.01, timeout_s))
        try:
            connection.request(method, path, body, headers)
            sock = connection.sock  # getresponse() may hand it over to the response

            def limit() -> None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("timed out")
                if sock is not None:
                    sock.settimeout(remaining)

            limit()
            response = connection.getresponse()
            bound = MAX_RESPONSE_BYTES if response.status == 200 else MAX_ERROR_BODY_BYTES
            chunks, size = [], 0
            while size < bound:
                limit()
                chunk = response.read1(min(65536, bound - size + 1))
                if not chunk:
                    break
                size += len(chunk)
                chunks.append(chunk)
            data = b"".join(chunks)
            if response.status == 200 and size > bound:
                raise CaptionError(f"answer from {url} larger than {bound} bytes", permanent=True)
            return response.status, data[:bound]
        except TimeoutError:
            raise CaptionError(f"no answer from {url} within {timeout_s:.1f} s", permanent=False) from None
        except (OSError, http.client.HTTPException) as error:
            raise CaptionError(f"cannot reach {url}: {type(error).__name__}: {error}", permanent=False) from None
        finally:
            connection.close()


def error_reason(data: bytes) -> str:
    """The reason in an error body: its JSON `error.message`, `error`, `detail` or `message`, else its text."""
    text = data.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        for candidate in (error.get("message") if isinstance(error, dict) else error, body.get("detail"),
                          body.get("message")):
            if candidate:
                text = candidate if isinstance(candidate, str) else json.dumps(candidate)
                break
    reason = " ".join(plain_text(text).split())
    return reason if len(reason) <= 300 else reason[:299] + "…"


def parse_completion(data: bytes, max_chars: int = 200, max_sentences: int = 2) -> str:
    """The clean caption in a `chat/completions` answer; "" when it holds none (empty, only reasoning,
    cut off before a full sentence)."""
    try:
        choice = json.loads(data)["choices"][0]
        content = choice["message"].get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        snippet = plain_text(data[:120].decode("utf-8", "replace"))
        raise CaptionError(f"not a chat completion: {snippet!r}", permanent=True) from None
    if isinstance(content, list):  # content parts
        content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        return ""
    return clean_caption(content, cut_off=choice.get("finish_reason") == "length", max_chars=max_chars,
                         max_sentences=max_sentences)


def build_captioner(config: CaptionsConfig) -> Captioner:
    if config.backend == "openai":
        return OpenAICaptioner(config.openai, config.send_audio, config.max_audio_s, config.max_chars,
                               config.max_sentences)
    return TemplateCaptioner()
