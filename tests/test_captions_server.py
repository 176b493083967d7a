"""Captions through a real OpenAI-compatible server: `transformers serve` with a tiny model built in the
test (tests/tiny_llm.py), and the real daemon (`earwitness run`) playing tone bursts in real time.

Three daemons run side by side: one names the served model, one a model the server does not serve,
one a server that is down. The alerts of all three go out on time.
"""

from __future__ import annotations

import time
import unicodedata
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="transformers serve needs transformers[serving] (script/setup --dev)")
pytest.importorskip("transformers", reason="transformers serve needs transformers[serving] (script/setup --dev)")

from tests.test_captions import REFUSED, closed_port_url
from tests.test_captions_daemon import JSONL_EXTRAS, SCHEMA, Watched
from tests.tiny_llm import CLEAN_REPLY, REPLY, TransformersServer, build_model

ALERT_LATENCY_S = 1.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("llm")
    running = TransformersServer(build_model(workdir / "tiny-llama"), workdir / "serve.log")
    try:
        assert running.wait_ready() == [running.model]
        assert running.warm_up() == REPLY
        yield running
    finally:
        running.stop()


def captions(run: Watched) -> dict[str, str]:
    return {line["id"]: line["caption"] for line in run.of_type("update") if line["caption"]}


def test_the_daemon_captions_through_a_real_server(daemons, server: TransformersServer, tmp_path: Path) -> None:
    began = time.monotonic()
    wrong_model = "earwitness/no-such-model"
    runs = {
        name: Watched(daemons, tmp_path / name, [1.0, 3.0], 10.0, {  # the daemon ends with its file: time to caption
            "backend": "openai", "retries": 1, "backoff_s": 0.1,
            "openai": {"base_url": url, "model": model, "timeout_s": 10, "max_tokens": 32},
        })
        for name, url, model in (("served", server.url, server.model), ("wrong model", server.url, wrong_model),
                                 ("down", closed_port_url(), server.model))
    }
    for name, run in runs.items():
        assert run.finish(timeout=60) == 0, f"{name}: {run.daemon.stderr_path.read_text()[-2000:]}"
        starts = run.of_type("start")
        assert len(starts) == len(run.of_type("end")) == 2, name
        for start in starts:
            assert set(start) == SCHEMA | JSONL_EXTRAS and start["caption"] is None, name
            assert run.latency(start) < ALERT_LATENCY_S, (name, run.latency(start))  # never waits for the server
        assert set(captions(run)) == {start["id"] for start in starts}, name  # each event's own update

    served = runs["served"]
    assert set(captions(served).values()) == {CLEAN_REPLY}  # the model's reply, cleaned
    for caption in captions(served).values():
        assert all(unicodedata.category(char)[0] != "C" and char != "\ufffd" for char in caption)
    logs = served.daemon.logs()
    assert [e["model"] for e in logs if e.get("event") == "caption endpoint ready"] == [server.model]
    assert len([e for e in logs if e.get("event") == "caption made"]) == 2

    wrong = runs["wrong model"]
    assert all(c.startswith("Loud sound at living room (hall), ") for c in captions(wrong).values())
    logs = wrong.daemon.logs()
    [check] = [e for e in logs if e.get("event") == "caption model not served, template captions until it is"]
    assert check["level"] == "warning" and check["served"] == [server.model] and check["model"] == wrong_model
    refused = [e for e in logs if e.get("event") == REFUSED]
    assert [e["level"] for e in refused] == ["warning", "info"]  # not retried; said clearly once
    assert refused[0]["reason"] == (f"HTTP 400 from {server.url}/chat/completions: Server is pinned to "
                                    f"'{server.model}'; requested '{wrong_model}'.")

    down = runs["down"]
    assert all(c.startswith("Loud sound at living room (hall), ") for c in captions(down).values())
    [check] = [e for e in down.daemon.logs() if e.get("event") == "caption endpoint not usable, template captions "
               "until it answers"]
    assert check["level"] == "warning" and "ConnectionRefusedError" in check["reason"]
    print(f"three daemons against transformers serve: {time.monotonic() - began:.1f} s")
