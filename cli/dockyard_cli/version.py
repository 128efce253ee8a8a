"""`dockyard version`: what is installed."""

from __future__ import annotations

import json
import platform

import click

from dockyard_api import API_VERSION
from dockyard_common import version


@click.command("version")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output format.")
def command(fmt: str) -> None:
    """Print the Dockyard version and the API version it serves."""
    info = {"version": version(), "apiVersion": API_VERSION,
            "python": platform.python_version()}
    if fmt == "json":
        click.echo(json.dumps(info))
    else:
        click.echo(f"dockyard {info['version']} (API {API_VERSION}, Python {info['python']})")
