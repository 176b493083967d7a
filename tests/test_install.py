"""`earwitness install-service`: what it writes, and that it writes nowhere else.

The command runs in a subprocess with a Python audit hook that records every file
system change the interpreter makes (opening for writing, mkdir, rename, chmod, ...).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from earwitness.install import packaged_text, render_unit

REPO = Path(__file__).resolve().parent.parent

AUDITED = r"""
import json, os, sys
changes = []
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
CHANGING = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.chmod", "os.chown",
            "os.symlink", "os.link", "os.truncate", "os.utime", "shutil.copyfile", "shutil.move", "shutil.rmtree"}

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & WRITE_FLAGS
        if writing and isinstance(path, (str, bytes, os.PathLike)):
            changes.append([event, os.path.abspath(os.fsdecode(path))])
    elif event in CHANGING and args and isinstance(args[0], (str, bytes, os.PathLike)):
        changes.append([event, os.path.abspath(os.fsdecode(args[0]))])

sys.addaudithook(hook)
from earwitness.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
print("\n@@CHANGES@@" + json.dumps(changes))
sys.exit(code)
"""


def install(tmp_path: Path, *args: str) -> tuple[int, str, list[tuple[str, str]]]:
    result = subprocess.run([sys.executable, "-c", AUDITED, "install-service", *args], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    output, _, changes = result.stdout.partition("\n@@CHANGES@@")
    assert changes, result.stderr
    return result.returncode, output, [tuple(change) for change in json.loads(changes)]


def test_dry_run_writes_nothing_and_prints_everything(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    code, output, changes = install(tmp_path, "--dry-run", "--prefix", str(prefix))
    assert code == 0
    assert changes == []
    assert not prefix.exists()
    assert f"create {prefix}/etc/systemd/system/earwitness.service" in output
    assert f"create {prefix}/etc/earwitness/config.yaml" in output
    assert "Type=notify" in output and "ExecStart=" in output  # the unit in full
    assert "systemctl enable --now earwitness" in output


def test_install_writes_only_under_its_prefix_and_never_overwrites_the_config(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    code, output, changes = install(tmp_path, "--prefix", str(prefix))
    assert code == 0, output
    assert changes and all(Path(path).is_relative_to(prefix) for _, path in changes), changes
    unit = (prefix / "etc/systemd/system/earwitness.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    command = exec_start.split("=", 1)[1].split()
    assert command[-3:] == ["run", "--config", "/etc/earwitness/config.yaml"]
    assert os.access(command[0], os.X_OK) and Path(command[0]).parent == Path(sys.executable).parent
    assert "Environment=PATH=" not in unit
    config = prefix / "etc/earwitness/config.yaml"
    assert config.read_text() == (REPO / "config/earwitness.yaml").read_text()

    config.write_text("device_id: mine\n")
    code, output, changes = install(tmp_path, "--prefix", str(prefix))
    assert code == 0
    assert config.read_text() == "device_id: mine\n"
    assert "never overwritten" in output
    assert all(Path(path).is_relative_to(prefix / "etc/systemd") for _, path in changes) or changes == []


def test_render_unit_runs_the_given_command() -> None:
    unit = render_unit(packaged_text("earwitness.service"), ["/opt/ear witness/bin/python", "-m", "earwitness"])
    assert 'ExecStart="/opt/ear witness/bin/python" -m earwitness run --config /etc/earwitness/config.yaml' in unit


def test_the_package_ships_the_unit_and_the_example_config() -> None:
    assert packaged_text("earwitness.service") == (REPO / "systemd/earwitness.service").read_text()
    assert packaged_text("config.example.yaml") == (REPO / "config/earwitness.yaml").read_text()
