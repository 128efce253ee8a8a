"""Entry point of the `dockyard` command: global options and the command groups."""

from __future__ import annotations

import click

from dockyard_cli import crd, explain, validate, version
from dockyard_common import configure_logging


@click.group("dockyard", context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="Least severe log level to print.")
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default="auto",
              show_default=True,
              help="Log rendering: JSON lines, or readable lines; auto picks readable on a "
                   "terminal and JSON otherwise.")
def cli(log_level: str, log_format: str) -> None:
    """Dockyard: containers the Docker way, declared as Kubernetes resources.

    \b
    Start here:
      dockyard validate examples/        check manifests the way the API server will
      dockyard explain container.spec    read the documentation of any field
      dockyard crd generate              write the CRDs from the API models
    """
    configure_logging(level=log_level, fmt=log_format)  # type: ignore[arg-type]


cli.add_command(version.command)
cli.add_command(crd.group)
cli.add_command(validate.command)
cli.add_command(explain.command)


def main() -> None:
    cli(prog_name="dockyard")
