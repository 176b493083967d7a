"""Captioners: the template (no model) and any OpenAI-compatible `chat/completions` endpoint."""

from __future__ import annotations

import base64
import http.client
import io
import ipaddress
import json
import os
import re
import socket
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np
import soundfile

from earwitness import SAMPLE_RATE, __version__
from earwitness.config import CaptionsConfig, OpenAICaptionConfig
from earwitness.integrations.captions.prompt import CaptionRequest, event_context, template_caption

MAX_CAPTION_CHARS = 300
MAX_RESPONSE_BYTES = 1_000_000


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

