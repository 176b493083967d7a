"""The `earwitness` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from earwitness import __version__
from earwitness.config import Config, ConfigError, SourceConfig, default_config_path, load_config
from earwitness.logs import configure_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except BrokenPipeError:
        # The reader went away (`earwitness detect ... | head`): stop quietly, as a shell tool does on SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 128 + signal.SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="earwitness",
        description="On-device acoustic event detection: glass breaking, scratching and unusual sounds.",
    )
    parser.add_argument("--version", action="version", version=f"earwitness {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon: listen, detect, send alerts",
                              description="Listen to the configured sources and send events to the configured sinks "
                                          "until stopped (SIGTERM/SIGINT) or until every file source has ended.")
    _add_config_argument(run)
    run.add_argument("--source", action="append", metavar="SPEC",
                     help="listen to SPEC instead of the configured sources: 'mic', 'mic:DEVICE' (name or index), "
                          "'file:PATH' (paced in real time) or '-' (raw s16le 16 kHz mono on stdin); repeatable")
    run.set_defaults(handler=_run)

    detect = commands.add_parser("detect", help="detect events in audio files, as fast as possible",
                                 description="Print one JSON line per event: source, label, start_s, end_s, score.")
    detect.add_argument("files", nargs="+", metavar="FILE", type=Path, help="audio files (any format soundfile reads)")
    _add_config_argument(detect)
    detect.set_defaults(handler=_detect)

    config = commands.add_parser("config", help="work with configuration files")
    config_commands = config.add_subparsers(title="config commands", metavar="COMMAND")
    check = config_commands.add_parser("check", help="validate config files; print the errors and exit non-zero if one is bad",
                                       description="Validate each file and load what it names (models, TLS, password "
                                                   "and key files), as a reload of the running daemon does.")
    check.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    check.set_defaults(handler=_config_check)

    status = commands.add_parser("status", help="show the running daemon's health: sources, hubs, throughput",
                                 description="Ask the running daemon (through its status socket) for its figures. "
                                             "Exit status: 0 healthy, 3 a source failed or a hub is disconnected, "
                                             "1 no daemon answered.")
    _add_config_argument(status)
    status.add_argument("--socket", type=Path, metavar="PATH", help="the daemon's status socket (default: health.socket "
                        "from the config, else $RUNTIME_DIRECTORY, /run/earwitness, $XDG_RUNTIME_DIR/earwitness)")
    status.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    status.set_defaults(handler=_status)

    from earwitness.feedback_cli import add_parser as add_feedback_parser

    add_feedback_parser(commands, _add_config_argument)
    commands.choices["feedback"].set_defaults(handler=_feedback)

    listen = commands.add_parser(
        "listen", help="live view for an installer: level, what the model hears, scores against thresholds, events",
        description="Attach to the running daemon (through its status socket) and show what a source hears, a few "
                    "times a second; or, with --input, run the pipeline here on a microphone, a file or stdin. "
                    "Ctrl-C to stop.")
    _add_config_argument(listen)
    listen.add_argument("--source", metavar="NAME", help="the daemon's source to follow (default: its first)")
    listen.add_argument("--input", metavar="SPEC", help="no daemon: listen to SPEC here: 'mic', 'mic:DEVICE', "
                        "'file:PATH' (paced in real time) or '-' (raw s16le 16 kHz mono on stdin)")
    listen.add_argument("--socket", type=Path, metavar="PATH", help="the daemon's status socket (as for `status`)")
    listen.add_argument("--once", action="store_true", help="attached: show one frame and exit")
    listen.set_defaults(handler=_listen)

    install = commands.add_parser("install-service", help="install the systemd service and the default config",
                                  description="Install earwitness.service (running this installation's earwitness) and "
                                              "/etc/earwitness/config.yaml from the example if it is absent (an existing "
                                              "config is never overwritten); print the systemctl commands to run.")
    install.add_argument("--dry-run", action="store_true", help="print what would be done; write nothing")
    install.add_argument("--prefix", type=Path, default=Path("/"), metavar="PREFIX",
                         help="install under PREFIX instead of / (for packaging or a staging root)")
    install.set_defaults(handler=_install_service)

    devices = commands.add_parser("devices", help="list audio input devices")
    devices.set_defaults(handler=_devices)

    bench = commands.add_parser("bench", help="measure speed, CPU, memory and latency, beside YAMNet",
                                description="Print a table of figures (and write them as JSON with --json); "
                                            "needs mosquitto for the listening part.")
    bench.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")
    bench.add_argument("--data", type=Path, default=Path("../shared/data"), metavar="DIR",
                       help="corpus with glass-break clips for the latency scene (default: ../shared/data)")
    bench.add_argument("--yamnet", type=Path, default=Path("../shared/models/yamnet/yamnet.tflite"), metavar="PATH",
                       help="YAMNet TFLite model to compare with (needs ai-edge-litert)")
    bench.add_argument("--windows", type=int, default=1000, help="windows timed per model figure (default: 1000)")
    bench.add_argument("--listen-s", type=float, default=90.0, help="seconds of audio played to `run`, one event every 4 s (default: 90)")
    bench.set_defaults(handler=_bench)

    from earwitness.training.commands import add_parsers as add_training_commands

    add_training_commands(commands)  # train, eval (their implementations need the `train` extra)
    return parser


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="PATH",
                        help="YAML config (default: $EARWITNESS_CONFIG, then /etc/earwitness/config.yaml, "
                             "then built-in defaults)")


def _load(args: argparse.Namespace) -> tuple[Config, Path | None] | None:
    path = args.config or default_config_path()
    try:
        return load_config(path), path
    except ConfigError as error:
        print(f"earwitness: invalid config\n{error}", file=sys.stderr)
        return None


def parse_source_spec(spec: str, index: int, total: int) -> SourceConfig:
    """A `--source` SPEC as a source config, named after what it reads."""
    if spec == "-":
        name = "stdin"
        return SourceConfig(name=name, input="-")
    if spec == "mic" or spec.startswith("mic:"):
        device = spec[4:] or None
        return SourceConfig(name="mic" if total == 1 else f"mic{index}", input="mic", device=device)
    if spec.startswith("file:"):
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(spec[5:]).stem) or "file"
        return SourceConfig(name=stem if total == 1 else f"{stem}{index}", input=spec)
    raise ValueError(f"unknown source {spec!r}: use 'mic', 'mic:DEVICE', 'file:PATH' or '-'")


def _run(args: argparse.Namespace) -> int:
    from earwitness import app

    loaded = _load(args)
    if loaded is None:
        return 2
    config, path = loaded
    configure_logging(config.log_level)
    override = None
    if args.source:
        try:
            override = [parse_source_spec(spec, i, len(args.source)) for i, spec in enumerate(args.source, 1)]
        except ValueError as error:
            print(f"earwitness: {error}", file=sys.stderr)
            return 2
    try:
        daemon = app.build_daemon(config, path, realtime=True, source_override=override)
    except ConfigError as error:
        print(f"earwitness: invalid config\n{error}", file=sys.stderr)
        return 2
    return asyncio.run(daemon.run())


def _detect(args: argparse.Namespace) -> int:
    from earwitness.core.events import EventChange, SourceInfo
    from earwitness.daemon.pipeline import Pipeline
    from earwitness.daemon.sources import SourceUnavailable, read_audio_blocks
    from earwitness.detectors import build_detectors

    loaded = _load(args)
    if loaded is None:
        return 2
    config, _path = loaded
    configure_logging("warning" if config.log_level == "info" else config.log_level)
    status = 0

    def print_ended(change: EventChange) -> None:
        if change.type == "end":
            event = change.event
            print(json.dumps({"source": event.source.name, "label": event.label, "start_s": round(event.start_s, 3),
                              "end_s": round(event.end_s or event.start_s, 3), "score": round(event.score, 4)}),
                  flush=True)

    for file in args.files:
        source = SourceInfo(str(file), config.sources[0].location)
        pipeline = Pipeline(source, config, build_detectors(config.detectors), print_ended)
        try:
            for block in read_audio_blocks(file, block_s=1.0):
                pipeline.process(block)
        except SourceUnavailable as error:
            print(f"earwitness: {error}", file=sys.stderr)
            status = 1
        finally:
            pipeline.finish()
    return status


def _config_check(args: argparse.Namespace) -> int:
    from earwitness.daemon.resources import check_resources

    status = 0
    for path in args.paths:
        try:
            config = load_config(path)
            check_resources(config, str(path))
        except ConfigError as error:
            print(error, file=sys.stderr)
            status = 1
            continue
        names = ", ".join(f"{s.name} ({s.input}, {'on' if s.enabled and config.sensors_enabled else 'off'})" for s in config.sources)
        print(f"{path}: OK; sources: {names}")
    return status


def _status(args: argparse.Namespace) -> int:
    from earwitness.daemon.status import StatusUnavailable, client_socket_paths, exit_code, fetch_status, format_status

    configured = args.socket
    if configured is None and (args.config or default_config_path()):
        loaded = _load(args)
        if loaded is None:
            return 2
        configured = loaded[0].health.socket
    try:
        path, snapshot = fetch_status(client_socket_paths(configured))
    except StatusUnavailable as error:
        print(f"earwitness: {error}", file=sys.stderr)
        return 1
    print(json.dumps(snapshot, indent=2) if args.json else format_status(snapshot, path))
    return exit_code(snapshot)


def _feedback(args: argparse.Namespace) -> int:
    from earwitness import feedback_cli
    from earwitness.daemon.status import client_socket_paths

    config = None
    if args.config or default_config_path():
        loaded = _load(args)
        if loaded is None:
            return 2
        config = loaded[0]
    configured = args.socket or (config.health.socket if config is not None else None)
    return feedback_cli.run(args, config, client_socket_paths(configured))


def _listen(args: argparse.Namespace) -> int:
    from earwitness import listen

    loaded = _load(args)
    if loaded is None:
        return 2
    config = loaded[0]
    if args.input:
        try:
            source = parse_source_spec(args.input, 1, 1)
        except ValueError as error:
            print(f"earwitness: {error}", file=sys.stderr)
            return 2
        configure_logging("warning")
        return listen.standalone(config, source)
    from earwitness.daemon.status import client_socket_paths

    return listen.attach(client_socket_paths(args.socket or config.health.socket), args.source, args.once)


def _install_service(args: argparse.Namespace) -> int:
    from earwitness.install import install_service

    return install_service(prefix=args.prefix, dry_run=args.dry_run)


def _bench(args: argparse.Namespace) -> int:
    from earwitness import bench

    if args.windows < 1 or args.listen_s < 2 * bench.WARM_UP_S:
        # The listening figures are taken after a warm-up, so there must be audio past it.
        print(f"earwitness bench: --windows must be at least 1 and --listen-s at least {2 * bench.WARM_UP_S:g} "
              f"(the first {bench.WARM_UP_S:g} s are a warm-up)", file=sys.stderr)
        return 2
    configure_logging("warning")
    bench.main(args.json, args.data, args.yamnet, args.windows, args.listen_s)
    return 0


def _devices(args: argparse.Namespace) -> int:
    from earwitness.daemon.sources import SourceUnavailable, import_sounddevice

    try:
        sounddevice = import_sounddevice()
        devices = list(sounddevice.query_devices())
        default_input = sounddevice.default.device[0]
    except SourceUnavailable as error:
        print(f"earwitness: {error}", file=sys.stderr)
        return 1
    inputs = [(i, d) for i, d in enumerate(devices) if d["max_input_channels"] > 0]
    if not inputs:
        print("no audio input devices found (is a microphone connected, and is the user in the 'audio' group?)")
        return 1
    for index, device in inputs:
        marker = "*" if index == default_input else " "
        print(f"{marker} {index:3d}  {device['name']}  ({device['max_input_channels']} ch, {device['default_samplerate']:.0f} Hz)")
    print("* default input; use the index or (part of) the name as a source's 'device'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
