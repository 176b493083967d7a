"""The status socket: the running daemon's figures as JSON, read by `earwitness status`.

The daemon listens on a UNIX stream socket; a client connects, sends one request line
(an empty line, or JSON `{"command": "status"}`) and receives one JSON document (the health
snapshot plus version, pid and uptime), then the connection closes. A client that sends
nothing gets the snapshot after `REQUEST_WAIT_S`. Other commands (`feedback`, ...) are
JSON requests that the daemon runs on its ordered control path; their answer is
`{"ok": true, ...}` or `{"ok": false, "error": "..."}`.
Its path is `health.socket` from the config, else `status.sock` in $RUNTIME_DIRECTORY
(systemd's RuntimeDirectory=, /run/earwitness), else in $XDG_RUNTIME_DIR/earwitness,
else in /tmp/earwitness-<uid>.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog

from earwitness import __version__
from earwitness.core.feedback import FeedbackError
from earwitness.core.observers import DaemonObserver, RunningDaemon
from earwitness.integrations.clips import ClipWriter

log = structlog.get_logger(__name__)

SOCKET_NAME = "status.sock"
REQUEST_WAIT_S = 1.0
REQUEST_MAX_BYTES = 65536
SYSTEM_RUNTIME_DIR = Path("/run/earwitness")
"""Where the systemd service's RuntimeDirectory=earwitness lies."""


def runtime_dir(env: Mapping[str, str] = os.environ) -> Path:
    """This process's runtime directory for earwitness."""
    if env.get("RUNTIME_DIRECTORY"):
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "earwitness"
    return Path(f"/tmp/earwitness-{os.getuid()}")


def server_socket_path(configured: Path | None, env: Mapping[str, str] = os.environ) -> Path:
    """Where the daemon listens."""
    return configured if configured is not None else runtime_dir(env) / SOCKET_NAME


def client_socket_paths(configured: Path | None, env: Mapping[str, str] = os.environ) -> list[Path]:
    """Where `earwitness status` looks, in order: the configured path, or this user's runtime
    directory, then the system service's (/run/earwitness), then the fallbacks."""
    if configured is not None:
        return [configured]
    candidates = [runtime_dir(env) / SOCKET_NAME, SYSTEM_RUNTIME_DIR / SOCKET_NAME]
    if env.get("XDG_RUNTIME_DIR"):
        candidates.append(Path(env["XDG_RUNTIME_DIR"]) / "earwitness" / SOCKET_NAME)
    candidates.append(Path(f"/tmp/earwitness-{os.getuid()}") / SOCKET_NAME)
    unique: list[Path] = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


class StatusUnavailable(Exception):
    """No daemon answered; the message says where it looked."""


def fetch_status(paths: list[Path], timeout_s: float = 3.0) -> tuple[Path, dict[str, Any]]:
    """The snapshot from the first socket that answers."""
    return ask(paths, {"command": "status"}, timeout_s)


def ask(paths: list[Path], request: dict[str, Any], timeout_s: float = 3.0) -> tuple[Path, dict[str, Any]]:
    """Send `request` to the first socket that answers; its answer."""
    tried = []
    for path in paths:
        if not path.exists():
            tried.append(f"{path} (absent)")
            continue
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(timeout_s)
                client.connect(str(path))
                client.sendall(json.dumps(request).encode() + b"\n")
                data = b""
                while chunk := client.recv(65536):
                    data += chunk
            return path, json.loads(data)
        except (OSError, ValueError) as error:
            tried.append(f"{path} ({getattr(error, 'strerror', None) or error})")
    raise StatusUnavailable("no running earwitness daemon answered; tried " + ", ".join(tried))


class StatusServer(DaemonObserver):
    """Serves the daemon's figures on a UNIX socket."""

    def __init__(self, path: Path, clip_writer: ClipWriter | None = None) -> None:
        self.path = path
        self._clip_writer = clip_writer
        self._server: asyncio.AbstractServer | None = None
        self._daemon: RunningDaemon | None = None
        self._started_at = time.time()

    async def start(self, daemon: RunningDaemon) -> None:
        self._daemon = daemon
        try:
            self._prepare_directory()
            if self._another_daemon_answers():
                log.warning("status socket in use by another daemon; `earwitness status` will reach that one",
                          socket=str(self.path))
                return
            with _suppress_missing():
                if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                    os.unlink(self.path)  # stale, from a daemon that did not stop cleanly
            self._server = await asyncio.start_unix_server(self._answer, path=str(self.path))
            os.chmod(self.path, 0o660)
            log.info("status socket listening", socket=str(self.path))
        except OSError as error:
            log.error("cannot serve the status socket", socket=str(self.path), error=str(error))

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with _suppress_missing():
            os.unlink(self.path)
        self._server = None

    def snapshot(self) -> dict[str, Any]:
        assert self._daemon is not None
        writer = self._clip_writer
        return {
            "version": __version__,
            "pid": os.getpid(),
            "started_at": datetime.fromtimestamp(self._started_at, timezone.utc).isoformat(timespec="seconds"),
            "uptime_s": round(time.time() - self._started_at, 1),
            "config": str(self._daemon.config_path) if self._daemon.config_path else None,
            "runners": self._daemon.live_runners(),
            "clip_writer": {"pending": writer.pending if writer else 0, "dropped": writer.dropped if writer else 0},
            **self._daemon.health.snapshot(),
        }

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            answer = await self._respond(await self._request(reader))
            writer.write(json.dumps(answer).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), 5.0)
        except (OSError, asyncio.TimeoutError):
            pass
        except Exception:
            log.exception("status request failed")
        finally:
            writer.close()

    @staticmethod
    async def _request(reader: asyncio.StreamReader) -> dict[str, Any]:
        """The client's request; a client that sends nothing (or an empty line) asks for the status."""
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_WAIT_S)
        except asyncio.TimeoutError:
            return {"command": "status"}
        if not line.strip():
            return {"command": "status"}
        if len(line) > REQUEST_MAX_BYTES:
            return {"command": None, "error": "request too long"}
        try:
            request = json.loads(line)
        except ValueError as error:
            return {"command": None, "error": f"request is not JSON: {error}"}
        return request if isinstance(request, dict) else {"command": None, "error": "request must be a JSON object"}

    async def _respond(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        if command == "status":
            return self.snapshot()
        assert self._daemon is not None
        if command == "feedback":
            try:
                return {"ok": True, **await self._daemon.feedback_request(request)}
            except FeedbackError as error:
                return {"ok": False, "error": str(error)}
            except asyncio.TimeoutError:
                return {"ok": False, "error": "the daemon did not get to the request in time (stopping?)"}
        return {"ok": False, "error": request.get("error") or f"unknown command {command!r}"}

    def _prepare_directory(self) -> None:
        directory = self.path.parent
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
        elif directory.name.startswith("earwitness-") and directory.parent == Path("/tmp"):
            info = os.lstat(directory)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                raise OSError(f"{directory} is not a directory owned by this user")

    def _another_daemon_answers(self) -> bool:
        if not self.path.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(self.path))
                return True
            except OSError:
                return False


class _suppress_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, tb: object) -> bool:
        return kind is not None and issubclass(kind, FileNotFoundError)


# --- the readable table -------------------------------------------------------------------


def format_status(snapshot: dict[str, Any], source_path: Path | None = None) -> str:
    """`earwitness status` as a person reads it."""
    lines = []
    head = f"earwitness {snapshot.get('version', '?')}, pid {snapshot.get('pid', '?')}, up {_duration(snapshot.get('uptime_s'))}"
    if snapshot.get("config"):
        head += f", config {snapshot['config']}"
    lines.append(head)
    if source_path is not None:
        lines.append(f"(from {source_path})")
    lines.append("")

    sources = snapshot.get("sources", {})
    rows: list[tuple[str, ...]] = [("SOURCE", "LOCATION", "STATE", "WINDOWS/S", "WINDOWS", "DROPPED", "INFERENCE")]
    notes = []
    for name, figures in sources.items():
        listening = figures.get("state") == "listening"
        rows.append((
            name, figures.get("location", ""), figures.get("state", "?"),
            f"{figures.get('windows_per_second', 0):.2f}" if listening else "-",
            str(figures.get("windows", 0)), str(figures.get("dropped_frames", 0)),
            f"{figures.get('inference_ms', 0):.2f} ms" if figures.get("windows") else "-",
        ))
        if figures.get("error"):
            notes.append(f"  {name}: {figures['error']}")
    lines.extend(_table(rows) if sources else ["no sources"])
    lines.extend(notes)
    lines.append("")

    sinks = {name: figures for name, figures in snapshot.get("sinks", {}).items() if isinstance(figures, dict)}
    hubs = {name: figures for name, figures in sinks.items() if "connected" in figures}
    if hubs:
        rows = [("HUB", "CONNECTED", "OUTBOX")]
        notes = []
        for name, figures in hubs.items():
            outbox = figures.get("outbox")
            rows.append((name, "yes" if figures["connected"] else "NO", "-" if outbox is None else str(outbox)))
            if not figures["connected"] and figures.get("error"):
                notes.append(f"  {name}: {figures['error']}")
        lines.extend(_table(rows))
        lines.extend(notes)
    else:
        lines.append("no hubs configured")
    for name, figures in sinks.items():
        if name not in hubs:
            scalars = ", ".join(f"{key} {value}" for key, value in figures.items() if isinstance(value, (str, int, float)))
            lines.append(f"{name}: {scalars}")
    lines.append("")

    tasks = snapshot.get("tasks", {})
    if tasks:
        lines.append("tasks: " + "; ".join(
            f"{name} {figures.get('state', '?')}"
            + (f" ({figures['restarts']} restarts, last: {figures.get('last_error')})" if figures.get("restarts") else "")
            for name, figures in tasks.items()))
    feedback = snapshot.get("feedback") or {}
    if feedback.get("false_alarms") or feedback.get("confirmed") or feedback.get("suppressed"):
        quiet = "; ".join(f"{source} {label} {count}" for source, labels in feedback.get("suppressed", {}).items()
                          for label, count in labels.items())
        lines.append(f"feedback: {feedback.get('false_alarms', 0)} false alarms, {feedback.get('confirmed', 0)} confirmed"
                     f"; events kept quiet: {quiet or 'none'}")
    event = snapshot.get("last_event")
    if event:
        when = event.get("ended_at") or event.get("started_at") or "?"
        lines.append(f"last event: {event.get('label', '?')} ({event.get('type', '?')}) on {event.get('source', '?')}"
                     f" at {when}, score {event.get('score', '?')}")
    else:
        lines.append("last event: none yet")
    return "\n".join(lines)


def exit_code(snapshot: dict[str, Any]) -> int:
    """0 when every enabled source listens, every hub is connected and every task runs; 3 when something is degraded."""
    failed = any(figures.get("state") in ("failed", "stalled") for figures in snapshot.get("sources", {}).values())
    failed = failed or any(figures.get("state") in ("restarting", "failed") for figures in snapshot.get("tasks", {}).values())
    disconnected = any(
        isinstance(figures, dict) and figures.get("connected") is False for figures in snapshot.get("sinks", {}).values()
    )
    return 3 if failed or disconnected else 0


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"
