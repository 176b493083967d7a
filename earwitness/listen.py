"""`earwitness listen`: the installer's live view of what a source hears.

It shows, a few times a second, the input level, the AudioSet classes the model hears best (from the
distilled head), each label's score against its threshold (and whether it is switched off there), and
events as they happen. It attaches to the running daemon (through the status socket, read four times a
second), or with `--input` runs the pipeline itself on a microphone, a file or stdin. `rich` draws it
and is imported only here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from earwitness.config import Config, SourceConfig

if TYPE_CHECKING:
    from rich.console import RenderableType

REFRESH_S = 0.25
EVENTS_SHOWN = 8
BAR_WIDTH = 30
LEVEL_FLOOR_DBFS = -90.0


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "█" * filled + "·" * (width - filled)


def render(source: str, hearing: dict[str, Any] | None, events: list[dict[str, Any]], note: str) -> RenderableType:
    """One frame of the view, from a source's `hearing` figures and the recent event messages."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    if hearing is None:
        return Group(Text(f"{source}: nothing heard yet ({note})", style="yellow"))
    level = float(hearing.get("level_dbfs", LEVEL_FLOOR_DBFS))
    head = Text.assemble((f"{source}  ", "bold"), f"level {level:6.1f} dBFS  ",
                         (bar((level - LEVEL_FLOOR_DBFS) / -LEVEL_FLOOR_DBFS, 20), "cyan"), f"   {note}")
    heard = Text("hears: " + (", ".join(f"{t['name']} {t['score']:.2f}" for t in hearing.get("top_labels", []))
                              or "(no AudioSet head in this model)"))
    labels = Table(box=None, pad_edge=False)
    for column in ("label", "score", "", "threshold", ""):
        labels.add_column(column)
    for label, figures in hearing.get("labels", {}).items():
        score, threshold = float(figures["score"]), figures.get("threshold")
        over = threshold is not None and score >= threshold
        state = "off" if not figures.get("on", True) else ("EVENT" if over else "")
        labels.add_row(label, f"{score:.4f}", Text(bar(score), style="red" if over else "green"),
                       "-" if threshold is None else f"{threshold:.4f}", Text(state, style="bold red" if over else "dim"))
    recent = Table(box=None, pad_edge=False, title="events", title_justify="left")
    for column in ("when", "change", "label", "score", "id"):
        recent.add_column(column)
    for event in events[-EVENTS_SHOWN:]:
        recent.add_row(str(event.get("ended_at") or event.get("started_at") or ""), str(event.get("type", "")),
                       str(event.get("label", "")), f"{event.get('score', 0):.3f}", str(event.get("id", "")))
    return Group(head, heard, labels, recent if events else Text("no events yet", style="dim"))


def attach(socket_paths: list[Path], source: str | None, once: bool = False) -> int:
    """Follow the running daemon's source (the first one if none is named) until Ctrl-C; `once`: one frame."""
    from rich.live import Live

    from earwitness.daemon.status import StatusUnavailable, fetch_status

    events: deque[dict[str, Any]] = deque(maxlen=EVENTS_SHOWN)
    with Live(refresh_per_second=1 / REFRESH_S, transient=False) as live:
        while True:
            try:
                path, snapshot = fetch_status(socket_paths)
            except StatusUnavailable as error:
                live.console.print(f"earwitness: {error}", style="red")
                return 1
            sources = snapshot.get("sources", {})
            name = source or next(iter(sources), None)
            if name is None or name not in sources:
                live.console.print(f"earwitness: the daemon has no source {name!r}; it has {', '.join(sources) or 'none'}",
                                   style="red")
                return 1
            event = snapshot.get("last_event")
            if event and event.get("source") == name and event not in events:
                events.append(event)
            figures = sources[name]
            live.update(render(name, figures.get("hearing"), list(events), f"{figures.get('state')} (daemon, {path})"))
            if once:
                return 0
            time.sleep(REFRESH_S)


def standalone(config: Config, source: SourceConfig) -> int:
    """Run the pipeline here on `source` (no daemon, no sinks) and show what it hears until it ends or Ctrl-C."""
    from rich.live import Live

    from earwitness.app import build_pipeline
    from earwitness.core.events import EventChange
    from earwitness.core.health import SourceStats
    from earwitness.daemon.sources import SourceUnavailable, open_source

    events: deque[dict[str, Any]] = deque(maxlen=EVENTS_SHOWN)
    stats = SourceStats(source.name, source.location)

    def keep(change: EventChange) -> None:
        events.append(change.message())

    async def run(live: Live) -> None:
        audio = open_source(source, True, config.windows.hop_s)
        pipeline = build_pipeline(config, source, keep, stats)
        shown_at = 0.0
        try:
            async with contextlib.aclosing(audio.chunks()) as chunks:
                async for chunk in chunks:
                    pipeline.process(chunk, audio.captured_at)
                    if time.monotonic() - shown_at >= REFRESH_S:
                        shown_at = time.monotonic()
                        live.update(render(source.name, stats.hearing, list(events), source.input))
        finally:
            pipeline.finish()
            live.update(render(source.name, stats.hearing, list(events), f"{source.input} (ended)"))

    with Live(refresh_per_second=1 / REFRESH_S, transient=False) as live:
        try:
            asyncio.run(run(live))
        except SourceUnavailable as error:
            live.console.print(f"earwitness: {error}", style="red")
            return 1
        except KeyboardInterrupt:
            return 0
    return 0
