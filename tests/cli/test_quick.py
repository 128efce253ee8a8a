"""The click-free fast path of `dockyard run` reads a command line exactly as the click
command does, and hands everything else to click."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from dockyard_cli import quick
from dockyard_cli.commands import COMMANDS, cli
from dockyard_cli.containers import run


def _click_options(args: list[str]) -> dict[str, Any]:
    with run.make_context("run", list(args)) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("args", [
    ["busybox"],
    ["--rm", "--network", "none", "busybox", "true"],
    ["-d", "--name=web", "-m", "64m", "--cpus", "0.5", "busybox", "httpd", "-f", "-p", "80"],
    ["-e", "A=1", "-eB=2", "--env=C=3", "-v", "/srv:/data:ro", "--volume=/tmp:/t", "busybox"],
    ["--pids-limit", "20", "--read-only", "-w", "/tmp", "-u", "1000:1000", "busybox", "id"],
    ["--restart", "on-failure:3", "--cap-add", "NET_ADMIN", "--cap-drop=ALL", "busybox"],
    ["--network", "bridge", "-p", "127.0.0.1:8080:80/udp", "-p8081:81", "busybox"],
    ["--hostname", "h", "--entrypoint", "/bin/sh -c", "--name", "a", "--name", "b", "busybox"],
    ["--", "busybox", "--rm"],
    ["busybox", "sh", "-c", "echo --name; exit 3"],
])
def test_the_fast_path_reads_a_command_line_as_click_does(args: list[str]) -> None:
    assert quick.parse_run(args) == _click_options(args)


@pytest.mark.parametrize("args", [
    [], ["--help"], ["-h"], ["--rm"], ["--nmae", "x", "busybox"], ["-m", "lots", "busybox"],
    ["--network", "overlay", "busybox"], ["--cpus"], ["--rm=yes", "busybox"],
    ["-dit", "busybox"], ["--pids-limit", "many", "busybox"],
])
def test_anything_unsure_is_left_to_click(args: list[str]) -> None:
    assert quick.parse_run(args) is None


def test_conflicting_flags_and_global_options_are_left_to_click() -> None:
    assert quick.main(["run", "--rm", "--restart", "always", "busybox"]) is None
    assert quick.main(["--log-level", "debug", "run", "busybox"]) is None
    assert quick.main(["ps"]) is None


def test_click_reports_what_the_fast_path_left_alone(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "dockyard"
    result = subprocess.run([str(script), "run", "--nmae", "x", "busybox"],
                            capture_output=True, text=True, check=False,
                            env={"DOCKYARD_HOST": str(tmp_path / "none.sock")})
    assert result.returncode == 2
    assert "No such option '--nmae'" in result.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_listed_short_help_is_each_commands_own(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    assert COMMANDS[name][1] == command.get_short_help_str(limit=1000)
