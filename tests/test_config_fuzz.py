"""Any bytes saved as the config give a clear error or a valid config: never a traceback, never a dead daemon.

A seeded generator mutates a valid config (byte flips, truncations, other encodings, deep nesting,
duplicate keys, huge values, odd types, alias bombs, empty and non-mapping files); every result goes
to `earwitness config check` and, one by one, to a running daemon's reload (SIGHUP).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.audio import write_bursts
from tests.daemon_process import earwitness_command

SEED = 14
COUNT = 240
REJECTED = "config reload rejected, the running config stays"
RELOAD_RESULTS = {REJECTED, "config reloaded", "config reloaded, nothing changed", "config reload failed, the running config stays"}


def base_config(audio: Path) -> str:
    return f"""# a kitchen sensor
device_id: kitchen-hub
log_level: debug
windows:
  length_s: 1.0
  hop_s: 0.25
detectors:
  - type: energy
    rise_db: 20
events:
  defaults:
    cooldown_s: 2
  labels:
    loud:
      threshold: 0.6
captions:
  backend: template
clips:
  pre_roll_s: 2.0
sources:
  # A switched-off source never ends, so a mutation that breaks the file source's path cannot end the daemon.
  - name: door
    input: mic
    enabled: false
  - name: room
    input: file:{audio}
    location: küche
    loop: true
"""


def _flip(rng: random.Random, text: str) -> bytes:
    raw = bytearray(text.encode())
    for _ in range(rng.randint(1, 6)):
        raw[rng.randrange(len(raw))] = rng.randrange(256)
    return bytes(raw)


def _truncate(rng: random.Random, text: str) -> bytes:
    raw = text.encode()
    return raw[: rng.randrange(len(raw))]


def _encoding(rng: random.Random, text: str) -> bytes:
    return text.encode(rng.choice(["latin-1", "cp1252", "utf-16", "utf-16-le", "utf-32", "utf-8-sig"]))


def _nesting(rng: random.Random, text: str) -> bytes:
    depth = rng.choice([20, 40, 100, 400, 3000, 20000])
    opening, closing = rng.choice([("[", "]"), ("{a: ", "}")])
    return text.replace("hop_s: 0.25", f"hop_s: {opening * depth}1{closing * depth}").encode()


def _duplicate(rng: random.Random, text: str) -> bytes:
    lines = text.splitlines()
    index = rng.randrange(1, len(lines))
    lines.insert(index + 1, lines[index])
    return "\n".join(lines).encode()


def _huge(rng: random.Random, text: str) -> bytes:
    value = rng.choice([
        "x" * 200_000, "9" * 5000, "1e999", "-" + "9" * 300, "[" + ",".join(["1"] * 150_000) + "]",
        "'" + "é" * 600_000 + "'",
    ])
    key = rng.choice(["location", "rise_db", "hop_s", "threshold", "device_id", "cooldown_s"])
    return "\n".join(line if not line.strip().startswith(f"{key}:") else f"{line.split(':')[0]}: {value}"
                     for line in text.splitlines()).encode()


def _odd_type(rng: random.Random, text: str) -> bytes:
    value = rng.choice([
        "[1, 2]", "{a: b}", "null", "~", "yes", "2001-12-14", "2001-13-45", "!!binary aGVsbG8=", "!!set {a, b}",
        "!!python/object:os.system x", ".nan", "-.inf", "0x1F", "0o17", "!!float abc", "'\\0'", '"a\\0b"', "&x 1",
        "*nowhere", "!custom 3", "!!timestamp nope", "12:30:00", "? complex\n  : key",
    ])
    lines = text.splitlines()
    candidates = [i for i, line in enumerate(lines) if ":" in line and not line.strip().endswith(":")]
    index = rng.choice(candidates)
    lines[index] = f"{lines[index].split(':')[0]}: {value}"
    return "\n".join(lines).encode()


def _alias_bomb(rng: random.Random, text: str) -> bytes:
    levels = ["a: &a [1,1,1,1,1,1,1,1,1,1]"] + [
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]" for i in range(rng.randint(4, 8))
    ]
    return (text + "\n".join(levels) + "\n").encode()


def _garbage(rng: random.Random, text: str) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))


def _whole_file(rng: random.Random, text: str) -> bytes:
    return rng.choice([b"", b"\n\n", b"# only a comment\n", b"42\n", b"- a\n- b\n", b"'text'\n", b"null\n", b"~\n",
                       b"---\n---\n", b"sources: []\n", b"{}\n{}\n", b"\xef\xbb\xbf", b"\x00\x00\x00", b"[[[[",
                       b"&a [*a]\n", b"a: &a {b: *a}\n", b"? [a]\n: b\n"])


def _insert_line(rng: random.Random, text: str) -> bytes:
    lines = text.splitlines()
    lines.insert(rng.randrange(len(lines)), rng.choice([
        "\tdetectors: []", "sources:", "  - - -", "windows: {length_s: 2, hop_s: 3}", "hubs: [{name: x}]",
        "detectors: [{type: classifier, model: /nonexistent/model.json}]", "sensors_enabled: maybe", ": :",
        "log_level: loud", "sources: [{name: a b}]", "  indented: badly", "%YAML 1.1", "--- !!map", "...",
    ]))
    return "\n".join(lines).encode()


MUTATIONS: list[Callable[[random.Random, str], bytes]] = [
    _flip, _flip, _flip, _truncate, _truncate, _encoding, _nesting, _duplicate, _huge, _odd_type, _odd_type,
    _alias_bomb, _garbage, _whole_file, _insert_line, _insert_line,
]


def fuzzed_configs(base: str, directory: Path) -> list[Path]:
    rng = random.Random(SEED)
    directory.mkdir()
    paths = []
    for index in range(COUNT):
        mutate = MUTATIONS[index % len(MUTATIONS)]
        path = directory / f"{index:03d}-{mutate.__name__.strip('_')}.yaml"
        path.write_bytes(mutate(rng, base))
        paths.append(path)
    return paths


class LogTail:
    """Reads the daemon's JSON log lines as they are written, from where it last stopped."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        self._partial = b""
        self.tracebacks: list[str] = []

    def read(self) -> list[dict]:
        data = self._partial + self._file.read()
        *complete, self._partial = data.split(b"\n")
        lines = []
        for raw in complete:
            try:
                line = json.loads(raw)
            except ValueError:
                self.tracebacks.append(raw.decode(errors="replace"))  # anything not a log line: a raw traceback
                continue
            if "exception" in line:
                self.tracebacks.append(line["exception"])
            lines.append(line)
        return lines


def test_fuzzed_configs_never_crash_config_check_or_the_daemon(tmp_path: Path, daemons) -> None:
    audio = write_bursts(tmp_path / "bursts.wav", 3.0, [1.0])
    base = base_config(audio)
    paths = fuzzed_configs(base, tmp_path / "fuzz")
    assert len(paths) >= 200

    check = subprocess.run(earwitness_command("config", "check", *map(str, paths)), capture_output=True, text=True, timeout=300)
    assert "Traceback" not in check.stderr, check.stderr[-3000:]
    accepted = {line.split(": OK")[0] for line in check.stdout.splitlines() if ": OK" in line}
    rejected = {path for path in map(str, paths) if any(line.startswith(f"{path}:") for line in check.stderr.splitlines())}
    assert accepted | rejected == set(map(str, paths)) and not accepted & rejected, "each file gets one verdict"
    assert len(rejected) >= COUNT * 0.7, f"only {len(rejected)} of {COUNT} mutated configs were rejected"

    config = tmp_path / "config.yaml"
    config.write_text(base)
    daemon = daemons("--config", str(config))
    tail = LogTail(daemon.stderr_path)
    daemon.wait_for_log("window", source="room")
    disagreements = []
    for path in paths:
        config.write_bytes(path.read_bytes())
        daemon.process.send_signal(signal.SIGHUP)
        result = _wait_for_reload(daemon, tail)
        if (result["event"] == REJECTED) != (str(path) in rejected):
            disagreements.append((path.name, result))
    assert tail.tracebacks == [], tail.tracebacks[:3]
    assert disagreements == [], "a reload must reject exactly what `config check` rejects"

    # Alive, and still listening to the room once the good config is back.
    config.write_text(base)
    daemon.process.send_signal(signal.SIGHUP)
    _wait_for_reload(daemon, tail)
    began = time.time()
    deadline = time.monotonic() + 10
    while not any(l.get("event") == "window" and l.get("source") == "room" and l["timestamp"] > _iso(began) for l in tail.read()):
        assert daemon.process.poll() is None and time.monotonic() < deadline, "windows again after the fuzzing"
        time.sleep(0.05)
    assert daemon.stop() == 0


def _wait_for_reload(daemon, tail: LogTail) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in tail.read():
            if line.get("event") in RELOAD_RESULTS and line.get("reason") == "SIGHUP":
                return line
        assert daemon.process.poll() is None, f"daemon died: {tail.tracebacks[-1:]}"
        time.sleep(0.01)
    raise AssertionError("no reload result within 20 s")


def _iso(epoch: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")
