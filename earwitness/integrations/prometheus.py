"""An optional Prometheus endpoint: the status figures as counters and gauges (text format 0.0.4, written
by prometheus_client, so that values are exact: 1234567 windows is `1.234567e+06`, never a rounded `1.23457e+06`).

Off by default; when enabled it listens on 127.0.0.1:9720 unless configured otherwise.
It runs on the daemon's event loop, so it reads the figures between two windows,
never while a pipeline updates them.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import structlog

from earwitness import __version__
from earwitness.config import PrometheusConfig
from earwitness.core.health import Health
from earwitness.core.observers import DaemonObserver, RunningDaemon

log = structlog.get_logger(__name__)

STATES = ("starting", "listening", "stalled", "disabled", "failed", "ended")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render_metrics(health: Health, device_id: str) -> str:
    """The figures in the Prometheus text exposition format, values exact (prometheus_client's exposition)."""
    from prometheus_client import generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import CollectorRegistry

    families: list[GaugeMetricFamily | CounterMetricFamily] = []

    def family(name: str, kind: str, help_text: str, label_names: list[str], samples: list[tuple[list[str], float]]) -> None:
        metric = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, help_text, labels=label_names)
        for values, value in samples:
            metric.add_metric([str(v) for v in values], value)
        families.append(metric)

    family("earwitness_info", "gauge", "Version and device of the running daemon.", ["version", "device"],
           [([__version__, device_id], 1)])
    sources = health.snapshot()["sources"]
    family("earwitness_source_state", "gauge", "1 for the state each source is in (listening, disabled, failed, ...).",
           ["source", "location", "state"],
           [([name, s["location"], state], 1 if s["state"] == state else 0) for name, s in sources.items() for state in STATES])
    family("earwitness_windows_total", "counter", "Analysis windows processed.", ["source"],
           [([name], s["windows"]) for name, s in sources.items()])
    family("earwitness_windows_per_second", "gauge", "Windows processed per second over the last 10 s.", ["source"],
           [([name], s["windows_per_second"]) for name, s in sources.items()])
    family("earwitness_dropped_frames_total", "counter", "Audio frames dropped because the pipeline fell behind.",
           ["source"], [([name], s["dropped_frames"]) for name, s in sources.items()])
    family("earwitness_inference_seconds", "gauge", "Detector time per window (exponential moving average).", ["source"],
           [([name], s["inference_ms"] / 1000) for name, s in sources.items()])
    sinks = dict(health.sinks)  # one atomic copy: hubs update their figures from their own threads
    hubs = {name: figures for name, figures in sinks.items() if isinstance(figures, dict) and "connected" in figures}
    family("earwitness_hub_connected", "gauge", "1 while the hub (MQTT broker) is connected.", ["hub"],
           [([name], 1 if f.get("connected") else 0) for name, f in hubs.items()])
    for key, name, kind, help_text in (
        ("outbox", "earwitness_hub_outbox_messages", "gauge", "Messages waiting in the hub's outbox."),
        ("outbox_in_memory", "earwitness_hub_outbox_in_memory_messages", "gauge",
         "Messages the outbox keeps in memory only, because its file cannot be written (full disk)."),
        ("outbox_write_failures", "earwitness_hub_outbox_write_failures_total", "counter",
         "Writes of the outbox's file that failed (full disk, I/O error); the alerts were kept in memory."),
    ):
        family(name, kind, help_text, ["hub"],
               [([hub], f[key]) for hub, f in hubs.items() if isinstance(f.get(key), (int, float))])
    feedback = dict(health.feedback)
    family("earwitness_feedback_suppressed_events_total", "counter",
           "Events that false-alarm feedback kept quiet (logged, not sent).", ["source", "label"],
           [([source, label], count) for source, labels in feedback.get("suppressed", {}).items()
            for label, count in labels.items()])
    family("earwitness_feedback_examples", "gauge", "Feedback examples kept, by verdict.", ["verdict"],
           [([verdict], feedback.get(key, 0)) for verdict, key in (("false_alarm", "false_alarms"), ("confirmed", "confirmed"))])
    event = health.last_event
    if event:
        moment = event.get("ended_at") or event.get("started_at")
        try:
            stamp = datetime.fromisoformat(str(moment).replace("Z", "+00:00")).timestamp()
        except ValueError:
            stamp = None
        if stamp is not None:
            family("earwitness_last_event_timestamp_seconds", "gauge", "When the last event started or ended.",
                   ["label", "source"], [([event.get("label", ""), event.get("source", "")], stamp)])

    class Figures:
        def collect(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Figures())
    return generate_latest(registry).decode()


class PrometheusExporter(DaemonObserver):
    """Serves GET /metrics over HTTP/1.1 (one request per connection)."""

    def __init__(self, config: PrometheusConfig) -> None:
        self._config = config
        self._server: asyncio.Server | None = None
        self._daemon: RunningDaemon | None = None

    @property
    def port(self) -> int | None:
        """The port it listens on (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            return None
        return self._server.sockets[0].getsockname()[1]

    async def start(self, daemon: RunningDaemon) -> None:
        self._daemon = daemon
        try:
            self._server = await asyncio.start_server(self._answer, self._config.host, self._config.port)
        except OSError as error:
            log.error("cannot serve Prometheus metrics", host=self._config.host, port=self._config.port, error=str(error))
            return
        log.info("Prometheus metrics", url=f"http://{self._config.host}:{self.port}/metrics")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5.0)
            while await asyncio.wait_for(reader.readline(), 5.0) not in (b"\r\n", b"\n", b""):
                pass  # the headers are not needed
            parts = request.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            if method not in ("GET", "HEAD"):
                status, body, kind = "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
            elif path in ("/metrics", "/"):
                assert self._daemon is not None
                body = render_metrics(self._daemon.health, self._daemon.device_id).encode()
                status, kind = "200 OK", CONTENT_TYPE
            else:
                status, body, kind = "404 Not Found", b"see /metrics\n", "text/plain"
            head = f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + (body if method != "HEAD" else b""))
            await asyncio.wait_for(writer.drain(), 5.0)
        except (OSError, asyncio.TimeoutError, UnicodeDecodeError):
            pass
        except Exception:
            log.exception("metrics request failed")
        finally:
            writer.close()
