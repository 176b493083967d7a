"""script/ha-check's driver: earwitness against a real Home Assistant, checked through HA's own API.

Runs in the Home Assistant venv (it uses HA's aiohttp, and HA's discovery schemas). Starts
mosquitto, Home Assistant (a fresh config folder) and the earwitness daemon (the project's
.venv) with two sources, `door` (a file that ends) and `kitchen` (the same glass break,
looped); onboards HA and adds the MQTT integration over its REST API; then checks, every
wait with a time limit. The entities it expects are those the daemon announced (the retained
discovery configs on the broker), so entities added later are checked too.

    ha_check.py --project DIR --work DIR
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

DEVICE = "ha-check"
DISCOVERY = "homeassistant"
CLIP = "clips/glass_break/assaf__1_10_wav.flac"
"""A real glass break (../shared/data) that the shipped classifier finds."""
HA_START_S = 420.0
"""HA's first start on a slow machine (it writes its storage and loads the integrations)."""
HA_INSTALL_S = 600.0
"""A REST call that makes HA install an integration's requirements first (the MQTT flow, on a fresh venv)."""
STATELESS = ("event", "button")
"""Domains whose state is the time they last fired: `unknown` until then is right."""


class CheckFailed(Exception):
    pass


class Report:
    """Prints each check as it ends; remembers the failures."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.began = time.monotonic()

    def ok(self, what: str, detail: str = "") -> None:
        print(f"ok    {time.monotonic() - self.began:6.1f}s  {what}" + (f"  ({detail})" if detail else ""), flush=True)

    def fail(self, what: str, detail: str) -> None:
        self.failures.append(what)
        print(f"FAIL  {time.monotonic() - self.began:6.1f}s  {what}: {detail}", flush=True)

    def step(self, what: str) -> None:
        print(f"..    {time.monotonic() - self.began:6.1f}s  {what}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `predicate` until it is truthy; CheckFailed after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


# --- the processes -------------------------------------------------------------------------


class Processes:
    """mosquitto, Home Assistant and the daemon: started in the work folder, stopped at the end."""

    def __init__(self, project: Path, work: Path) -> None:
        self.project, self.work = project, work
        self.mqtt_port, self.ha_port = free_port(), free_port()
        self.mosquitto: subprocess.Popen[bytes] | None = None
        self.ha: subprocess.Popen[bytes] | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_runs = 0
        self.config_path = work / "earwitness.yaml"

    def start_mosquitto(self) -> None:
        conf = self.work / "mosquitto.conf"
        lines = [f"listener {self.mqtt_port} 127.0.0.1", "allow_anonymous true", f"log_dest file {self.work}/mosquitto.log"]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        self.mosquitto = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def start_ha(self) -> None:
        config = self.work / "ha"
        config.mkdir(exist_ok=True)
        if not (config / "configuration.yaml").exists():
            # The integrations the check needs, on a free port: onboarding, auth, the REST and websocket APIs.
            (config / "configuration.yaml").write_text(
                "homeassistant:\n  name: earwitness check\n  time_zone: UTC\n"
                f"http:\n  server_host: 127.0.0.1\n  server_port: {self.ha_port}\n"
                "api:\nconfig:\nonboarding:\nlogger:\n  default: warning\n")
        log = (self.work / "hass.out").open("ab")
        # HA installs what its core integrations need (the frontend, ...) into this venv on its first start.
        self.ha = subprocess.Popen([sys.executable, "-m", "homeassistant", "-c", str(config)],
                                   stdout=log, stderr=subprocess.STDOUT)

    def write_config(self, sources: list[dict[str, Any]]) -> None:
        config = {
            "device_id": DEVICE,
            "state_dir": str(self.work / "state"),
            "sources": sources,
            "outputs": {"jsonl": {"enabled": True, "path": "-"}},
            "captions": {"backend": "template"},
            "guard": {"enabled": True, "hub": "home", "arming_delay_s": 0.5},  # armed by hand: an alarm panel
            "hubs": [{"name": "home", "host": "127.0.0.1", "port": self.mqtt_port, "reconnect_min_s": 0.2,
                      "reconnect_max_s": 1.0, "discovery": {"enabled": True, "prefix": DISCOVERY},
                      "allow_remote_control": True}],
        }
        partial = self.config_path.with_suffix(".partial")
        partial.write_text(json.dumps(config, indent=1))  # JSON is YAML
        partial.replace(self.config_path)

    def start_daemon(self) -> None:
        self.daemon_runs += 1
        name = f"daemon-{self.daemon_runs}"
        env = {**os.environ, "RUNTIME_DIRECTORY": str(self.work), "STATE_DIRECTORY": str(self.work / "state")}
        self.daemon = subprocess.Popen(
            [str(self.project / ".venv/bin/python"), "-m", "earwitness", "run", "--config", str(self.config_path)],
            stdout=(self.work / f"{name}.out").open("w"), stderr=(self.work / f"{name}.err").open("w"), env=env,
            cwd=self.project)

    def daemon_logs(self) -> list[dict[str, Any]]:
        lines = []
        for line in (self.work / f"daemon-{self.daemon_runs}.err").read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def check_alive(self) -> None:
        output = self.work / "hass.out"
        if output.exists() and "Activating recovery mode" in output.read_text(errors="replace"):
            raise CheckFailed(f"Home Assistant started in recovery mode; see {output}")
        for name, process in (("mosquitto", self.mosquitto), ("Home Assistant", self.ha), ("earwitness", self.daemon)):
            if process is not None and process.poll() is not None:
                raise CheckFailed(f"{name} exited ({process.returncode}); its output is in {self.work}")

    @staticmethod
    def stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 60.0) -> float:
        """Signal a process and wait for it; the seconds it took."""
        if process is None or process.poll() is not None:
            return 0.0
        began = time.monotonic()
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return time.monotonic() - began

    def stop_all(self) -> None:
        for process in (self.daemon, self.ha, self.mosquitto):
            self.stop(process, timeout=30.0)

    def retained_configs(self) -> dict[str, dict[str, Any]]:
        """The discovery configs retained on the broker, as HA reads them: topic -> payload."""
        result = subprocess.run(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.mqtt_port), "-t", f"{DISCOVERY}/#", "-v",
             "--retained-only", "-W", "3"], capture_output=True, text=True, timeout=10)
        configs = {}
        for line in result.stdout.splitlines():
            topic, _, payload = line.partition(" ")
            if topic.endswith("/config") and payload.strip():
                configs[topic] = json.loads(payload)
        return configs


# --- Home Assistant's API ------------------------------------------------------------------


class HomeAssistant:
    """HA's REST and websocket APIs; keeps every entity's latest state from `state_changed` events."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session, self.base = session, f"http://127.0.0.1:{port}"
        self.token = ""
        self.states: dict[str, dict[str, Any]] = {}
        self.changes: list[tuple[float, dict[str, Any]]] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def up(self) -> bool:
        try:
            async with self.session.get(f"{self.base}/api/onboarding", timeout=aiohttp.ClientTimeout(total=3)) as reply:
                return reply.status in (200, 401)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def onboard(self) -> None:
        client_id = f"{self.base}/"
        user = {"client_id": client_id, "name": "Check", "username": "check", "password": "earwitness-check",
                "language": "en"}
        code = (await self._post("/api/onboarding/users", user))["auth_code"]
        async with self.session.post(f"{self.base}/auth/token", data={
                "grant_type": "authorization_code", "code": code, "client_id": client_id}) as reply:
            reply.raise_for_status()
            self.token = (await reply.json())["access_token"]
        await self.connect()
        self.token = await self.call("auth/long_lived_access_token", client_name="ha-check", lifespan=1)

    async def add_mqtt(self, port: int) -> dict[str, Any]:
        flow = await self._post("/api/config/config_entries/flow", {"handler": "mqtt"})
        return await self._post(f"/api/config/config_entries/flow/{flow['flow_id']}", {"broker": "127.0.0.1", "port": port})

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with self.session.post(f"{self.base}{path}", json=body, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=HA_INSTALL_S)) as reply:
                if reply.status >= 300:
                    raise CheckFailed(f"POST {path} answered {reply.status}: {(await reply.text())[:300]}")
                return await reply.json()
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise CheckFailed(f"POST {path} got no answer: {type(error).__name__}: {error}") from None

    async def connect(self) -> None:
        if self._ws is not None:
            await self.close()
        self._ws = await self.session.ws_connect(f"{self.base}/api/websocket", timeout=30)
        await asyncio.wait_for(self._ws.receive_json(), 30)  # auth_required
        await self._ws.send_json({"type": "auth", "access_token": self.token})
        answer = await asyncio.wait_for(self._ws.receive_json(), 30)
        if answer.get("type") != "auth_ok":
            raise CheckFailed(f"websocket auth failed: {answer}")
        self._reader = asyncio.create_task(self._read())
        await self.call("subscribe_events", event_type="state_changed")
        for state in await self.call("get_states"):
            self.states[state["entity_id"]] = state

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        self._ws = self._reader = None

    async def call(self, kind: str, **fields: Any) -> Any:
        assert self._ws is not None
        number = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[number] = future
        await self._ws.send_json({"id": number, "type": kind, **fields})
        answer = await asyncio.wait_for(future, 30)
        if not answer.get("success", True):
            raise CheckFailed(f"{kind} failed: {answer.get('error')}")
        return answer.get("result")

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if data.get("type") == "event":
                new = data["event"]["data"].get("new_state")
                entity = data["event"]["data"]["entity_id"]
                if new is None:
                    self.states.pop(entity, None)
                else:
                    self.states[entity] = new
                self.changes.append((time.monotonic(), {"entity_id": entity, "state": new and new["state"]}))
            elif data.get("id") in self._pending:
                self._pending.pop(data["id"]).set_result(data)

    def state(self, entity_id: str) -> str | None:
        state = self.states.get(entity_id)
        return None if state is None else str(state["state"])

    async def service(self, domain: str, service: str, entity_id: str) -> None:
        await self.call("call_service", domain=domain, service=service, target={"entity_id": entity_id})


# --- the check -----------------------------------------------------------------------------


class Check:
    def __init__(self, processes: Processes, ha: HomeAssistant, data: Path, report: Report) -> None:
        self.p, self.ha, self.data, self.report = processes, ha, data, report
        self.configs: dict[str, dict[str, Any]] = {}
        self.entities: dict[str, dict[str, Any]] = {}
        """unique_id -> {entity_id, component, source, config}"""

    def sources(self, with_door: bool = True) -> list[dict[str, Any]]:
        clip = f"file:{self.data / CLIP}"
        kitchen = {"name": "kitchen", "input": clip, "location": "kitchen", "loop": True}
        door = {"name": "door", "input": clip, "location": "hall", "loop": False}
        return [door, kitchen] if with_door else [kitchen]

    async def run(self) -> None:
        p, ha, report = self.p, self.ha, self.report
        p.start_mosquitto()
        p.start_ha()
        p.write_config(self.sources())
        p.start_daemon()
        report.step(f"mosquitto on {p.mqtt_port}, Home Assistant on {p.ha_port} (first start), earwitness; work folder {p.work}")
        began = time.monotonic()
        await until(lambda: p.check_alive() or ha.up(), HA_START_S, "Home Assistant's HTTP API", interval=1.0)
        report.ok("Home Assistant answers", f"{time.monotonic() - began:.0f} s after start")
        await ha.onboard()
        entry = await ha.add_mqtt(p.mqtt_port)
        if entry.get("type") != "create_entry":
            raise CheckFailed(f"the MQTT config flow did not create an entry: {entry}")
        report.ok("onboarded over REST; MQTT integration added through the config flow")
        await self.entities_and_device()
        await self.attempt("discovery payloads keep every key under HA's schema", self.schemas)
        await self.attempt("a glass break turns the looping source's binary sensor on", self.event)
        await self.attempt("the file that ended: switch off, its sensors unavailable", self.ended)
        await self.attempt("every switch, both ways", self.switches)
        await self.attempt("buttons press without error", self.buttons)
        await self.attempt("alarm panels arm and disarm", self.alarm_panels)
        await self.attempt("states known after Home Assistant restarts", self.ha_restart)
        await self.attempt("a removed source's entities are gone after a reload", self.stale)
        await self.attempt("availability: offline on SIGTERM and through the Last Will on SIGKILL", self.availability)
        await self.attempt("no warning or error about MQTT in Home Assistant's log", self.ha_log)

    async def attempt(self, what: str, check: Callable[[], Awaitable[str]]) -> None:
        try:
            self.p.check_alive()
            detail = await check()
            self.report.ok(what, detail)
        except CheckFailed as error:
            self.report.fail(what, str(error))

    # --- the entities ---

    def expected(self) -> None:
        """The entities the daemon announced: one per retained discovery config."""
        self.configs = self.p.retained_configs()
        self.entities = {}
        for topic, config in self.configs.items():
            component = topic.split("/")[1]
            self.entities[config["unique_id"]] = {"component": component, "config": config, "entity_id": None}

    async def registry(self) -> list[dict[str, Any]]:
        return list(await self.ha.call("config/entity_registry/list"))

    async def entities_and_device(self) -> None:
        await until(lambda: self.p.check_alive() or self.p.retained_configs(), 30, "the daemon's discovery configs")
        await asyncio.sleep(1.0)  # every config of the first announce is on the broker
        self.expected()

        async def all_registered() -> bool:
            by_unique = {e["unique_id"]: e for e in await self.registry() if e["platform"] == "mqtt"}
            for unique_id, entity in self.entities.items():
                if unique_id in by_unique:
                    entity["entity_id"] = by_unique[unique_id]["entity_id"]
                    entity["device_id"] = by_unique[unique_id]["device_id"]
            return all(e["entity_id"] for e in self.entities.values())

        try:
            await until(all_registered, 60, "every announced entity in HA's entity registry", interval=0.5)
        except CheckFailed as error:
            missing = sorted(u for u, e in self.entities.items() if not e["entity_id"])
            raise CheckFailed(f"{error}; missing: {missing}") from None
        devices = [d for d in await self.ha.call("config/device_registry/list")
                   if ["mqtt", f"earwitness_{DEVICE}"] in d["identifiers"]]
        if len(devices) != 1:
            raise CheckFailed(f"expected one earwitness device, HA has {len(devices)}")
        device = devices[0]
        on_device = [e for e in await self.registry() if e["device_id"] == device["id"]]
        if {e["unique_id"] for e in on_device} != set(self.entities):
            raise CheckFailed(f"the device's entities differ from those announced: {sorted(e['unique_id'] for e in on_device)}")
        counts = ", ".join(f"{n} {c}" for c, n in sorted(_count(e["component"] for e in self.entities.values()).items()))
        self.report.ok("every announced entity is in HA, on one device",
                       f"{len(self.entities)} entities: {counts}; device {device['name']!r}, {device['manufacturer']}, "
                       f"{device['model']}, sw {device['sw_version']}")

    def of(self, component: str | None = None, source: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.entities.values()
                if (component is None or e["component"] == component)
                and (source is None or e["config"]["unique_id"].startswith(f"earwitness_{DEVICE}_{source}_"))]

    async def schemas(self) -> str:
        # In a process of its own: importing HA's components makes blocking calls in this event loop raise.
        result = subprocess.run([sys.executable, __file__, "--schemas"], input=json.dumps(self.configs),
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise CheckFailed(result.stdout.strip() or result.stderr.strip()[-2000:])
        return f"{len(self.configs)} configs"

    # --- behaviour ---

    async def event(self) -> str:
        sensors = [e["entity_id"] for e in self.of("binary_sensor", "kitchen") if "command_topic" not in e["config"]
                   and e["config"].get("entity_category") != "diagnostic"]
        on = await until(lambda: next((s for s in sensors if self.ha.state(s) == "on"), None), 90,
                         f"one of {sensors} to turn on")
        events = [e["entity_id"] for e in self.of("event", "kitchen")]
        await until(lambda: all(self.ha.state(e) not in (None, "unknown", "unavailable") for e in events), 30,
                    f"{events} to have fired")
        fired = self.ha.states[events[0]]["attributes"]
        return f"{on} on; {events[0]} fired {fired.get('event_type')!r} label {fired.get('label')!r}"

    async def ended(self) -> str:
        # The microphone switch reads off; what follows the source's own availability reads unavailable.
        # The "Not <label>" buttons and label switches stay usable: they act on the source's settings.
        switch = [e["entity_id"] for e in self.of("switch", "door") if e["config"]["unique_id"].endswith("_sensor")]
        others = [e["entity_id"] for e in self.of(source="door")
                  if any(a.get("topic", "").endswith("/door/availability") for a in e["config"].get("availability", []))]
        if not switch or not others:
            raise CheckFailed(f"the ended source announced no microphone switch ({switch}) or no source-bound entity ({others})")
        await until(lambda: all(self.ha.state(s) == "off" for s in switch)
                    and all(self.ha.state(o) == "unavailable" for o in others), 60, f"{switch} off and {others} unavailable")
        return f"{', '.join(switch)} off; {len(others)} unavailable"

    async def switches(self) -> str:
        timings = []
        for entity in self.of("switch"):
            switch = entity["entity_id"]
            if self.ha.state(switch) != "on":
                continue
            for service, state in (("turn_off", "off"), ("turn_on", "on")):
                began = time.monotonic()
                await self.ha.service("switch", service, switch)
                await until(lambda: self.ha.state(switch) == state, 15, f"{switch} {state}", interval=0.005)  # noqa: B023 (awaited at once)
                timings.append(f"{switch} {state} in {1000 * (time.monotonic() - began):.0f} ms")
        if not timings:
            raise CheckFailed("no switch was on to try")
        return "; ".join(timings)

    async def buttons(self) -> str:
        buttons = [e["entity_id"] for e in self.of("button")]
        for button in buttons:
            await self.ha.service("button", "press", button)
        return f"{len(buttons)} pressed" if buttons else "none announced"

    async def alarm_panels(self) -> str:
        panels = [e["entity_id"] for e in self.of("alarm_control_panel")]
        done = []
        for panel in panels:
            await until(lambda: self.ha.state(panel) == "disarmed", 15, f"{panel} disarmed")  # noqa: B023 (awaited at once)
            await self.ha.service("alarm_control_panel", "alarm_arm_away", panel)
            # the looped glass break at a watched source triggers it once it is armed
            await until(lambda: self.ha.state(panel) in ("armed_away", "triggered"), 15, f"{panel} armed")  # noqa: B023 (awaited at once)
            armed = self.ha.state(panel)
            await self.ha.service("alarm_control_panel", "alarm_disarm", panel)
            await until(lambda: self.ha.state(panel) == "disarmed", 15, f"{panel} disarmed again")  # noqa: B023 (awaited at once)
            done.append(f"{panel}: {armed}, then disarmed")
        return "; ".join(done) if done else "none announced"

    async def ha_restart(self) -> str:
        took = self.p.stop(self.p.ha)
        await self.ha.close()
        self.p.start_ha()
        began = time.monotonic()
        await until(lambda: self.p.check_alive() or self.ha.up(), HA_START_S, "Home Assistant back", interval=0.5)
        self.ha.states.clear()
        await until(self._reconnect, 30, "the websocket API", interval=1.0)
        live = [e for e in self.entities.values() if not e["config"]["unique_id"].startswith(f"earwitness_{DEVICE}_door_")]

        def known() -> bool:
            return all(self.ha.state(e["entity_id"]) not in (None, "unknown", "unavailable")
                       for e in live if e["component"] not in STATELESS)

        try:
            await until(known, 60, "every state known")
        except CheckFailed as error:
            unknown = {e["entity_id"]: self.ha.state(e["entity_id"]) for e in live if e["component"] not in STATELESS}
            raise CheckFailed(f"{error}: {unknown}") from None
        return f"stopped in {took:.1f} s, states known {time.monotonic() - began:.0f} s after the restart"

    async def _reconnect(self) -> bool:
        try:
            await self.ha.connect()
            return True
        except (aiohttp.ClientError, asyncio.TimeoutError, CheckFailed):
            return False

    async def stale(self) -> str:
        door = {e["entity_id"] for e in self.of(source="door")}
        self.p.write_config(self.sources(with_door=False))

        async def gone() -> bool:
            return not door & {e["entity_id"] for e in await self.registry()}

        await until(gone, 60, f"{sorted(door)} removed from HA's entity registry", interval=0.5)
        self.entities = {u: e for u, e in self.entities.items() if e["entity_id"] not in door}
        return f"{len(door)} entities removed"

    async def availability(self) -> str:
        entities = [e["entity_id"] for e in self.entities.values()]

        def all_are(available: bool) -> bool:
            return all((self.ha.state(e) == "unavailable") != available for e in entities)

        took = self.p.stop(self.p.daemon, signal.SIGTERM, 10)
        began = time.monotonic()
        await until(lambda: all_are(False), 10, "every entity unavailable after SIGTERM")
        detail = f"daemon stopped in {took:.1f} s, all unavailable {1000 * (time.monotonic() - began):.0f} ms later"
        self.p.start_daemon()
        await until(lambda: all_are(True), 60, "every entity available again after a restart")
        self.p.stop(self.p.daemon, signal.SIGKILL, 10)
        self.p.daemon = None  # killed on purpose
        began = time.monotonic()
        await until(lambda: all_are(False), 30, "every entity unavailable after SIGKILL (the Last Will)")
        return detail + f"; after SIGKILL {1000 * (time.monotonic() - began):.0f} ms"

    async def ha_log(self) -> str:
        text = (self.p.work / "hass.out").read_text(errors="replace")  # both of HA's runs
        warnings = [line for line in text.splitlines() if re.search(r"\b(WARNING|ERROR)\b", line)]
        bad = [line for line in warnings if re.search(r"mqtt|earwitness", line, re.I)]
        if bad:
            raise CheckFailed("\n        " + "\n        ".join(bad[:20]))
        return f"{len(warnings)} other warnings"


def dropped_keys(configs: dict[str, dict[str, Any]]) -> list[str]:
    """The keys of each discovery config that HA's own discovery schema drops (HA ignores them)."""
    dropped = []
    for topic, config in configs.items():
        component = topic.split("/")[1]
        schema = importlib.import_module(f"homeassistant.components.mqtt.{component}").DISCOVERY_SCHEMA
        lost = sorted(set(config) - set(schema(dict(config))))
        if lost:
            dropped.append(f"{topic}: {lost}")
    return dropped


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    if not (args.data / CLIP).exists():
        print(f"FAIL  the real audio is absent: {args.data / CLIP}", flush=True)
        return 2
    report = Report()
    processes = Processes(args.project.resolve(), args.work.resolve())
    try:
        async with aiohttp.ClientSession() as session:
            ha = HomeAssistant(session, processes.ha_port)
            try:
                await Check(processes, ha, args.data.resolve(), report).run()
            except CheckFailed as error:
                report.fail("stopped", str(error))
            finally:
                await ha.close()
    finally:
        processes.stop_all()
    took = time.monotonic() - report.began
    if report.failures:
        print(f"ha-check FAILED: {len(report.failures)} check(s) in {took:.0f} s; logs in {processes.work}", flush=True)
        return 1
    print(f"ha-check passed in {took:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--schemas"]:
        lost = dropped_keys(json.load(sys.stdin))
        print("; ".join(lost))
        sys.exit(1 if lost else 0)
    sys.exit(asyncio.run(main()))
