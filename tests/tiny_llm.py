"""A real OpenAI-compatible server for the tests: `transformers serve` with a tiny model built here.

No model hub is reached. The model is a one-layer Llama with random embeddings whose attention
and MLP add nothing, so each next token depends only on the current one; its output head is set
so that after the chat template's `<|assistant|>` it always says `REPLY` and stops. `REPLY` is
what a real model may send: a reasoning block, a control character, a replacement character,
markdown and quotes, all of which caption hygiene must remove.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import cast

REPLY_PIECES = ["<think>", "Hm.", "</think>", '"Glass', "\x07", " broke", "\ufffd", " in the", " **hall**", '."']
REPLY = "".join(REPLY_PIECES)
CLEAN_REPLY = "Glass broke in the hall."
"""`REPLY` as a caption."""
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}"
    "{% endif %}</s>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_model(directory: Path) -> Path:
    """Write the tokenizer and model to `directory` (a few kB, well under a second once torch is imported)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
    tokenizer.train_from_iterator([], trainers.BpeTrainer(special_tokens=special,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.add_tokens(REPLY_PIECES)
    fast.chat_template = CHAT_TEMPLATE
    reply = cast(list[int], fast.convert_tokens_to_ids(REPLY_PIECES))
    chain = [cast(int, fast.convert_tokens_to_ids("<|assistant|>")), *reply, cast(int, fast.eos_token_id)]
    assert len(set(chain)) == len(chain), "each token of the reply must be followed by one token only"

    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=0,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings, head = model.model.embed_tokens.weight, model.lm_head.weight
        head.zero_()
        for token, following in zip(chain, chain[1:]):
            head[following] += 10 * embeddings[token] / embeddings[token].norm()
    fast.save_pretrained(directory)
    model.save_pretrained(directory)
    return directory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TransformersServer:
    """`transformers serve MODEL` on a loopback port, pinned to the model; offline."""

    def __init__(self, model: Path, log_path: Path) -> None:
        self.model = str(model)
        self.port = free_port()
        self._log = log_path.open("w")
        command = Path(sys.executable).with_name("transformers")
        self.process = subprocess.Popen(
            [str(command), "serve", self.model, "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"},
        )
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def wait_ready(self, timeout_s: float = 300.0) -> list[str]:
        """The models it lists, once it answers."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformers serve exited ({self.process.returncode}):\n"
                                   + self.log_path.read_text()[-3000:])
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=2) as answer:
                    return [entry["id"] for entry in json.load(answer)["data"]]
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise RuntimeError("transformers serve did not answer in time:\n" + self.log_path.read_text()[-3000:])

    def warm_up(self, timeout_s: float = 120.0) -> str:
        """One chat completion, so that the first caption does not pay for the server's first generation."""
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": "warm up"}],
                           "max_tokens": 16}).encode()
        request = urllib.request.Request(self.url + "/chat/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return json.load(answer)["choices"][0]["message"]["content"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
