"""Caption hygiene: a model's reply made into one or two clean sentences, or "" when nothing usable is left.

Captions go to MQTT hubs, phones and logs as plain text, so whatever a server returns is cleaned:
reasoning blocks (closed or cut off), terminal escapes, control and replacement characters,
markdown and surrounding quotes go; whitespace collapses; the length is capped at a sentence
boundary. A reply cut off by the token limit keeps only its full sentences.
"""

from __future__ import annotations

import re
import unicodedata

REASONING_TAGS = "think|thinking|reasoning|reflection"
_REASONING_BLOCK = re.compile(rf"<({REASONING_TAGS})>.*?(?:</\1>|$)", re.DOTALL | re.IGNORECASE)
_REASONING_END = re.compile(rf"^.*</(?:{REASONING_TAGS})>", re.DOTALL | re.IGNORECASE)
"""A closing tag without its opening one: templates that open the block in the prompt leave only this."""
_ESCAPE_SEQUENCE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|.)")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_LINE_MARKER = re.compile(r"^\s*(?:#{1,6}\s+|[-*+•]\s+|>\s*|\d{1,2}[.)]\s+)")
_EMPHASIS = re.compile(r"(?<!\w)[*_~]+|[*_~]+(?!\w)|`+")
_LEAD_LABEL = re.compile(r"^(?:caption|answer|description|response)\s*:\s*", re.IGNORECASE)
_DOUBLE_QUOTES = "\"“”„‟«»「」『』"
_QUOTES = _DOUBLE_QUOTES + "'‘’‚‛"
_SENTENCE_END = re.compile(r"[.!?…。！？](?:[\"'”’»)\]]*)(?=\s|$)")
_DROPPED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}


def clean_caption(reply: str, cut_off: bool = False, max_chars: int = 200, max_sentences: int = 2) -> str:
    """The caption in a model's `reply`; `cut_off`: the reply stopped at the token limit (finish_reason "length")."""
    text = _REASONING_END.sub("", _REASONING_BLOCK.sub("", reply))
    text = plain_text(_ESCAPE_SEQUENCE.sub("", text))
    lines = [line for line in (_plain_markdown(line) for line in text.splitlines()) if line]
    if not lines:
        return ""
    text = lines[0]
    if cut_off and len(lines) == 1:  # only the last line of a reply cut off is incomplete
        text = _full_sentences(text)
    text = _strip_quotes(_LEAD_LABEL.sub("", text))
    ends = [match.end() for match in _SENTENCE_END.finditer(text)]
    if len(ends) > max_sentences:
        text = text[: ends[max_sentences - 1]]
    return _strip_quotes(_cap(text, max_chars))


def plain_text(text: str) -> str:
    """Whitespace of any kind becomes a space; control, format, private and replacement characters go."""
    kept = []
    for char in text:
        if char == "\n" or char.isspace():
            kept.append("\n" if char in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029" else " ")
        elif char != "\ufffd" and unicodedata.category(char) not in _DROPPED_CATEGORIES:
            kept.append(char)
    return "".join(kept)


def _plain_markdown(line: str) -> str:
    line = _LINK.sub(r"\1", line)
    line = _LINE_MARKER.sub("", line)
    line = _EMPHASIS.sub("", line)
    return " ".join(line.split())


def _strip_quotes(text: str) -> str:
    """Double quotes go wherever they are (a caption quotes nothing); single ones only around it (apostrophes stay)."""
    text = text.translate({ord(char): None for char in _DOUBLE_QUOTES})
    text = text.strip(_QUOTES + " ")
    return re.sub(rf"[{_QUOTES}]+([.!?…])$", r"\1", text).strip()


def _full_sentences(text: str) -> str:
    ends = [match.end() for match in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]] if ends else ""


def _cap(text: str, max_chars: int) -> str:
    """At most `max_chars`: cut at the last sentence end within it, else at a word, marked with an ellipsis."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    full = _full_sentences(head)
    if full:
        return full
    cut = head[: max_chars - 1].rsplit(" ", 1)[0] if " " in head else head[: max_chars - 1]
    return cut.rstrip(" ,;:-") + "…"
