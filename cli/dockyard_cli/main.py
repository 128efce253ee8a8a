"""Entry point of the `dockyard` command: global options and lazily loaded commands.

Commands are imported only when invoked, so `dockyard run` does not pay for importing
the API models (pydantic) that `dockyard validate` needs, and vice versa.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from dockyard_common import configure_logging

_CONTAINERS = ("run", "create", "start", "ps", "logs", "stop", "kill", "rm", "wait",
               "inspect", "stats", "pause", "unpause")
COMMANDS: dict[str, str] = {
    **{name: f"dockyard_cli.containers:{name}" for name in _CONTAINERS},
    "exec": "dockyard_cli.containers:exec_",
    "load": "dockyard_cli.images:load",
    "import": "dockyard_cli.images:import_",
    "images": "dockyard_cli.images:images",
    "rmi": "dockyard_cli.images:rmi",
    "tag": "dockyard_cli.images:tag",
    "shim": "dockyard_cli.shim:command",
    "up": "dockyard_cli.up:up",
    "down": "dockyard_cli.up:down",
    "validate": "dockyard_cli.validate:command",
    "explain": "dockyard_cli.explain:command",
    "crd": "dockyard_cli.crd:group",
    "version": "dockyard_cli.version:command",
}
"""Command name -> `module:attribute` of its click command."""


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: Any = getattr(importlib.import_module(module), attribute)
        return command  # type: ignore[no-any-return]


@click.group("dockyard", cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="Least severe log level to print.")
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default="auto",
              show_default=True,
              help="Log rendering: JSON lines, or readable lines; auto picks readable on a "
                   "terminal and JSON otherwise.")
def cli(log_level: str, log_format: str) -> None:
    """Dockyard: containers the Docker way, declared as Kubernetes resources.

    \b
    Run containers on this machine, like docker:
      dockyard import rootfs.tar busybox:latest   make an image from a root filesystem
      dockyard run --rm busybox echo hello        run a command in a new container
      dockyard ps -a                              list containers
    Work with the Kubernetes API:
      dockyard validate examples/        check manifests the way the API server will
      dockyard explain container.spec    read the documentation of any field
      dockyard crd generate              write the CRDs from the API models
    """
    configure_logging(level=log_level, fmt=log_format, lazy=True)  # type: ignore[arg-type]


def main() -> None:
    cli(prog_name="dockyard")
