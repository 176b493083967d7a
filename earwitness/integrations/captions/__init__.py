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
The `openai` backend checks the endpoint (`GET /models`) at start and on reload, and has a
per-caption deadline, a rate limit per minute and a circuit breaker. Transient failures
(5xx, timeouts, no connection) are retried with backoff and counted by the breaker;
refusals (other 4xx, "not supported") are not retried and leave the breaker alone. A server
that refuses audio input gets text prompts from then on. Whenever no caption can be had,
the reason is logged and shown by `earwitness status`, and the template caption is sent.
A reply is cleaned before it goes anywhere; one with no caption in it (empty, only
reasoning, cut off before a full sentence) gets the template caption too.

Modules, one job each: `prompt` (the event's facts as text, the template caption),
`text` (caption hygiene), `client` (the captioners and their HTTP), `guard` (rate limit,
circuit breaker), `sink` (the queue, the workers, the endpoint check and the updates).
"""

from earwitness.integrations.captions.client import (
    Captioner,
    CaptionError,
    OpenAICaptioner,
    TemplateCaptioner,
    build_captioner,
    is_loopback_url,
    parse_completion,
    wav_base64,
)
from earwitness.integrations.captions.guard import CircuitBreaker, RateLimiter
from earwitness.integrations.captions.prompt import CaptionRequest, event_context, template_caption, top_labels
from earwitness.integrations.captions.sink import CaptionSink

__all__ = [
    "CaptionError", "CaptionRequest", "CaptionSink", "Captioner", "CircuitBreaker", "OpenAICaptioner", "RateLimiter",
    "TemplateCaptioner", "build_captioner", "event_context", "is_loopback_url", "parse_completion", "template_caption",
    "top_labels", "wav_base64",
]
