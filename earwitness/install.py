"""`earwitness install-service`: the systemd unit and the default config, nothing else.

* `<prefix>/etc/systemd/system/earwitness.service`: the shipped unit with `ExecStart=`
  pointing at the `earwitness` of the installation this runs from (a virtual environment,
  say). An existing unit is replaced (that is how an upgrade or a moved venv is picked up).
* `<prefix>/etc/earwitness/config.yaml`: the example config, only if there is none yet;
  an existing config is never touched.

It prints the systemctl commands to run instead of running them. `--dry-run` prints
everything (the unit in full) and writes nothing; nothing is ever written outside PREFIX.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

UNIT_NAME = "earwitness.service"
UNIT_DIR = Path("etc/systemd/system")
CONFIG_PATH = Path("etc/earwitness/config.yaml")
SYSTEMCTL_COMMANDS = (
    "systemctl daemon-reload",
    "systemctl enable --now earwitness",
    "systemctl status earwitness",
    "journalctl -u earwitness -f",
    "earwitness status",
)


def packaged_text(name: str) -> str:
    """A file shipped in the package (`earwitness/data/`): the unit template, the example config."""
    return (resources.files("earwitness") / "data" / name).read_text(encoding="utf-8")


def entry_point() -> list[str]:
    """The command that runs this installation's `earwitness`: the script beside the interpreter, else `python -m`."""
    script = Path(sys.executable).parent / "earwitness"  # not resolved: a venv's python is a symlink
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "earwitness"]


def render_unit(template: str, command: list[str]) -> str:
    """The template with ExecStart= running `command` directly (no PATH search through /usr/bin/env)."""
    lines = []
    for line in template.splitlines():
        if line.startswith("Environment=PATH="):
            continue  # only the template's `/usr/bin/env earwitness` needs it
        if line.startswith("ExecStart="):
            arguments = shlex.split(line[len("ExecStart="):])
            if arguments[:2] == ["/usr/bin/env", "earwitness"]:
                arguments = arguments[2:]
            line = "ExecStart=" + " ".join(_quote(part) for part in [*command, *arguments])
        lines.append(line)
    return "\n".join(lines) + "\n"


def _quote(word: str) -> str:
    """systemd's quoting: double quotes around words with spaces; `%` doubled (specifiers), `$` left alone."""
    word = word.replace("%", "%%")
    return f'"{word}"' if any(c in word for c in " \t\"'\\") else word


@dataclass
class Step:
    path: Path
    content: str
    mode: int
    replace: bool
    """False: leave an existing file alone (the config)."""

    def describe(self) -> str:
        if not self.path.exists():
            return f"create {self.path}"
        if not self.replace:
            return f"keep {self.path} (exists; never overwritten)"
        if self.path.read_text(encoding="utf-8", errors="replace") == self.content:
            return f"keep {self.path} (unchanged)"
        return f"replace {self.path}"

    @property
    def writes(self) -> bool:
        return self.describe().startswith(("create", "replace"))


def plan(prefix: Path, command: list[str] | None = None) -> list[Step]:
    unit = render_unit(packaged_text(UNIT_NAME), command or entry_point())
    return [
        Step(prefix / UNIT_DIR / UNIT_NAME, unit, 0o644, replace=True),
        Step(prefix / CONFIG_PATH, packaged_text("config.example.yaml"), 0o644, replace=False),
    ]


def install_service(prefix: Path = Path("/"), dry_run: bool = False, command: list[str] | None = None,
                    out: Callable[[str], None] = print) -> int:
    prefix = Path(os.path.abspath(prefix))
    steps = plan(prefix, command)
    executable = (command or entry_point())[0]
    if prefix == Path("/") and not dry_run and os.geteuid() != 0:
        out("earwitness: installing the service needs root: run it with sudo (or try --dry-run, or --prefix DIR)")
        return 1
    if executable.startswith(("/home/", "/root/")):
        out(f"warning: {executable} is under /home or /root, which the service cannot see (ProtectHome=yes).")
        out("         Install earwitness in a virtual environment under /opt (see the README) and run install-service from there.")
    heading = "would do (dry run, nothing is written):" if dry_run else "installing:"
    out(heading)
    for step in steps:
        out(f"  {step.describe()}")
    if dry_run:
        unit = steps[0]
        out(f"\n--- {unit.path} ---")
        out(unit.content.rstrip("\n"))
        out("---")
    else:
        for step in steps:
            if not step.writes:
                continue
            step.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = step.path.with_name(step.path.name + ".tmp")
            temporary.write_text(step.content, encoding="utf-8")
            os.chmod(temporary, step.mode)
            os.replace(temporary, step.path)
    out("")
    out("then run:" if not dry_run else "then you would run:")
    for line in SYSTEMCTL_COMMANDS:
        if line.startswith("earwitness "):
            line = " ".join(_quote(word) for word in (command or entry_point())) + line[len("earwitness"):]
        out(f"  sudo {line}")
    if prefix != Path("/"):
        out(f"(the files go under {prefix}: copy them to / or point your packaging at them first)")
    out(f"Edit {prefix / CONFIG_PATH} first (sources, hubs); `earwitness config check` validates it,"
        " and `systemctl reload earwitness` applies changes.")
    return 0
