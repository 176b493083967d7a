"""`earwitness train` and `earwitness eval` subcommands (the implementations need the `train` extra)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """Register `train` and `eval` on the CLI's subparsers (imports nothing heavy)."""
    p = commands.add_parser("train", help="train, calibrate and export the classifier model",
                            description="Train EarNet on a corpus (layout of ../shared/data), calibrate its thresholds "
                                        "to a false-alarm budget on the validation groups, export ONNX; writes "
                                        "NAME.pt, NAME.onnx and NAME.json into --out. Needs the `train` extra.")
    p.add_argument("--data", required=True, type=Path, help="corpus dir (manifest.csv, clips/, background/, events/)")
    p.add_argument("--out", required=True, type=Path, help="output dir for NAME.pt/.onnx/.json")
    p.add_argument("--steps", type=int, default=6000, help="training steps of the first round (later rounds: half)")
    p.add_argument("--pool", type=int, default=60000, help="augmented windows made up front (scored by the teacher)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of training; each after the first adds mined hard negatives")
    p.add_argument("--teacher", type=Path, default=None, help="YAMNet dir (default: ../models/yamnet beside --data)")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this model's .pt (same labels; fine-tuning, with its hard negatives mined first)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed of the validation split (default: --seed); keep it to compare models trained with other seeds")
    p.add_argument("--val-fraction", type=float, default=0.25, help="share of each class's groups kept for validation")
    p.add_argument("--workers", type=int, default=2, help="window-making processes (1: in the main process)")
    p.add_argument("--cache-dir", default=".cache", help="decoded-audio cache ('' to disable)")
    p.add_argument("--limit-per-class", type=int, default=None, help="use at most N recordings per class (smoke runs)")
    p.add_argument("--budget-per-24h", type=float, default=1.0, help="false events per 24 h per label (calibration)")
    p.add_argument("--widths", type=_widths, default=None, metavar="W0,...,W4",
                   help="channels of the stem and the blocks (default 24,32,48,64,96); the last is also the embedding's")
    p.add_argument("--elder", type=Path, default=None, metavar="PT",
                   help="a trained, larger EarNet's .pt (same split) whose per-frame probabilities the new one learns too")
    p.add_argument("--name", default="earwitness-v2")
    p.set_defaults(handler=_train)

    e = commands.add_parser("eval", help="measure the classifier on a corpus through the streaming path",
                            description="Stream every recording of DIR through the daemon's pipeline (windows, "
                                        "detector, event tracker); print clip AUC, event recall/precision/F1 and false "
                                        "events per hour per label; the same negatives after silence and over a quiet "
                                        "floor; a synthetic long day at home (false events per 24 h, incident recall, "
                                        "time to alarm); and what still fires. Runs from a plain install; --baseline and --plot "
                                        "need the `train` extra.")
    e.add_argument("--data", required=True, type=Path, help="corpus dir (manifest.csv, clips/, background/, events/)")
    e.add_argument("--model", type=Path, default=None, help="model .json (default: the shipped model)")
    e.add_argument("--out", type=Path, default=None, help="write metrics JSON here (YAMNet's beside it as *.yamnet.json)")
    e.add_argument("--plot", type=Path, default=None, help="write ROC and score-distribution PNGs into this dir")
    e.add_argument("--baseline", choices=["yamnet"], default=None, help="also score the data with YAMNet (ai-edge-litert)")
    e.add_argument("--config", type=Path, default=None, help="daemon config (windows, events); default: built-in defaults")
    e.add_argument("--all-groups", action="store_true", help="also use the groups the model was trained on")
    e.add_argument("--labels", nargs="+", default=None, help="labels to evaluate (default: the model's shipped labels)")
    e.add_argument("--limit", type=int, default=None, help="evaluate N random clips and the event recordings only (smoke runs)")
    e.add_argument("--long-day-hours", type=float, default=24.0, metavar="H",
                   help="hours of the synthetic day at home streamed through the daemon (default 24; 0: none)")
    e.add_argument("--seed", type=int, default=0, help="seed of the onset variants and the long day")
    e.set_defaults(handler=_eval)


def _widths(text: str) -> tuple[int, ...]:
    widths = tuple(int(w) for w in text.split(","))
    if len(widths) != 5 or min(widths) < 1:
        raise argparse.ArgumentTypeError("five positive channel counts, e.g. 16,24,32,48,64")
    return widths


def corpus_problems(data: Path, files: Sequence[tuple[str, Path]] = ()) -> list[str]:
    """What a command could not read, each naming its option: found before a run of minutes, not in its middle."""
    problems = [] if (data / "manifest.csv").is_file() else [
        f"--data {data}: no manifest.csv there (a corpus laid out as ../shared/data)"]
    return problems + [f"{option} {path}: no such file" for option, path in files if not path.is_file()]


def model_problems(model: Path | None, labels: Sequence[str] | None, config: Path | None) -> list[str]:
    """The model to score and the config to stream with, checked as the daemon checks them at a reload."""
    from earwitness.config import load_config
    from earwitness.core.errors import ConfigError
    from earwitness.daemon.resources import check_model

    problems = []
    try:
        check_model(model, labels, "--model", "--labels")
    except ConfigError as error:
        problems.append(str(error))
    try:
        load_config(config)
    except ConfigError as error:
        problems.append(f"--config: {error}")
    return problems


def refused(command: str, problems: list[str]) -> bool:
    """Print the problems as `command`'s errors; True if there were any."""
    for problem in problems:
        print(f"{command}: {problem}", file=sys.stderr)
    return bool(problems)


def _train(args: argparse.Namespace) -> int:
    from earwitness.training.train import train
    from earwitness.training.yamnet import MODEL_FILE, model_dir_or_default

    teacher = model_dir_or_default(args.teacher, args.data) / MODEL_FILE
    files = [(option, path) for option, path in (("--teacher", teacher), ("--init", args.init), ("--elder", args.elder))
             if path is not None]
    if refused("earwitness train", corpus_problems(args.data, files)):
        return 2
    train(args.data, args.out, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
          val_fraction=args.val_fraction, workers=args.workers, cache_dir=args.cache_dir or None,
          limit_per_class=args.limit_per_class, budget_per_24h=args.budget_per_24h, name=args.name,
          pool_size=args.pool, rounds=args.rounds, teacher_dir=args.teacher, init=args.init,
          widths=args.widths, elder=args.elder, split_seed=args.split_seed)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from earwitness.training.evaluate import evaluate
    from earwitness.training.yamnet import MODEL_FILE, default_model_dir

    files = [("--baseline", default_model_dir(args.data) / MODEL_FILE)] if args.baseline else []
    if refused("earwitness eval", corpus_problems(args.data, files) + model_problems(args.model, args.labels, args.config)):
        return 2
    result = evaluate(args.data, args.model, args.out, args.plot, args.baseline, args.config, args.all_groups,
                      args.labels, args.limit, long_day_hours=args.long_day_hours, seed=args.seed)
    return 1 if result["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m earwitness.training.commands")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
