"""`earwitness feedback`: verdicts on events, and the examples they left, through the running daemon's status socket.

`list`, `forget` and `clear` also work on the state directory while the daemon is stopped; a verdict needs
the daemon, which keeps the recent events' embeddings in memory only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from earwitness.config import Config
from earwitness.core.feedback import VERDICTS, FeedbackError
from earwitness.detectors.suppression import SuppressionStore

ACTIONS = ("list", "forget", "clear")


def add_parser(commands: Any, add_config_argument: Any) -> None:
    feedback = commands.add_parser(
        "feedback", help="tell the device an event was a false alarm (or confirm it); list or forget what it learnt",
        description="`earwitness feedback EVENT_ID` marks an event as a false alarm: later sounds like it at that "
                    "source do not raise that label. `--verdict confirmed` keeps it as a real one that no false alarm "
                    "may cover. `feedback list`, `feedback forget EXAMPLE_ID` and `feedback clear` show and undo what "
                    "was learnt (also while the daemon is stopped). Exit status: 0 done, 1 refused or no daemon, 2 bad use.",
    )
    feedback.add_argument("target", metavar="EVENT_ID|list|forget|clear",
                          help="an event's id (from its message), or one of list, forget, clear")
    feedback.add_argument("example", nargs="?", metavar="EXAMPLE_ID", help="for `forget`: the example's id (see `list`)")
    feedback.add_argument("--verdict", choices=VERDICTS, default="false_alarm", help="default: false_alarm")
    add_config_argument(feedback)
    feedback.add_argument("--socket", type=Path, metavar="PATH", help="the daemon's status socket (as for `status`)")
    feedback.add_argument("--json", action="store_true", help="print the answer as JSON")


def request_of(args: argparse.Namespace) -> dict[str, Any]:
    """The status socket request for the command line; ValueError for a bad one."""
    target = args.target
    if target == "forget":
        if not args.example:
            raise ValueError("`feedback forget` needs the example's id (see `earwitness feedback list`)")
        return {"command": "feedback", "action": "forget", "example": args.example}
    if args.example:
        raise ValueError(f"unexpected argument {args.example!r}")
    if target in ("list", "clear"):
        return {"command": "feedback", "action": target}
    return {"command": "feedback", "action": "verdict", "id": target, "verdict": args.verdict}


def run(args: argparse.Namespace, config: Config | None, socket_paths: list[Path]) -> int:
    from earwitness.daemon.status import StatusUnavailable, ask

    try:
        request = request_of(args)
    except ValueError as error:
        print(f"earwitness: {error}", file=sys.stderr)
        return 2
    try:
        _path, answer = ask(socket_paths, request, timeout_s=15.0)
    except StatusUnavailable as error:
        if request["action"] == "verdict":
            print(f"earwitness: a verdict needs the running daemon, which keeps the recent events: {error}", file=sys.stderr)
            return 1
        return offline(request, config, args.json)
    if not answer.get("ok"):
        print(f"earwitness: {answer.get('error', 'the daemon refused the request')}", file=sys.stderr)
        return 1
    show(request, answer, args.json)
    return 0


def offline(request: dict[str, Any], config: Config | None, as_json: bool) -> int:
    """list, forget or clear on the state directory, the daemon being stopped."""
    state_dir = (config or Config()).resolved_state_dir()
    store = SuppressionStore.in_state_dir(state_dir)
    try:
        if request["action"] == "list":
            answer: dict[str, Any] = {"examples": [e.summary() for e in store.examples()]}
        elif request["action"] == "forget":
            answer = {"forgotten": store.forget(request["example"]).summary()}
        else:
            answer = {"cleared": store.clear()}
    except FeedbackError as error:
        print(f"earwitness: {error}", file=sys.stderr)
        return 1
    if not as_json:
        print(f"(no daemon running: {state_dir})")
    show(request, answer, as_json)
    return 0


def show(request: dict[str, Any], answer: dict[str, Any], as_json: bool) -> None:
    answer = {k: v for k, v in answer.items() if k != "ok"}
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    action = request["action"]
    if action == "verdict":
        example = answer["example"]
        what = ("a false alarm: alike sounds there no longer raise it" if example["verdict"] == "false_alarm"
                else "confirmed: no false alarm will cover sounds like it")
        print(f"event {request['id']} ({example['label']} at {example['source']}) noted as {what}; example {example['id']}")
        if answer.get("evicted"):
            print(f"the oldest examples were dropped to make room: {', '.join(answer['evicted'])}")
    elif action == "list":
        examples = answer["examples"]
        if not examples:
            print("no feedback examples")
        for e in examples:
            heard = ", ".join(str(t.get("name")) for t in e.get("top_labels", [])[:3])
            print(f"{e['id']}  {e['verdict']:<11}  {e['source']}  {e['label']}  {e['created_at']}  event {e['event_id']}"
                  + (f"  ({heard})" if heard else ""))
    elif action == "forget":
        print(f"forgot example {answer['forgotten']['id']} ({answer['forgotten']['label']} at {answer['forgotten']['source']})")
    else:
        print(f"cleared {answer['cleared']} feedback examples")
