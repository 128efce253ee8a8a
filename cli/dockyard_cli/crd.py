"""`dockyard crd`: generate, check and print the CustomResourceDefinitions."""

from __future__ import annotations

from pathlib import Path

import click

from dockyard_api import BY_KIND
from dockyard_api import crd as crds
from dockyard_common import get_logger

log = get_logger(__name__)


@click.group("crd")
def group() -> None:
    """The CustomResourceDefinitions generated from the API models."""


@group.command("generate")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Repository root to write crds/ and the chart into.")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 and list the files that differ from the models.")
def generate(root: Path, check: bool) -> None:
    """Write crds/*.yaml and charts/dockyard/crds/*.yaml from the models.

    Run it after changing a model and commit the result; the test suite fails while the
    files on disk differ from what the models generate.
    """
    if check:
        stale = crds.stale(root)
        for path in stale:
            click.echo(f"stale: {path}", err=True)
        if stale:
            raise click.ClickException(
                f"{len(stale)} generated file(s) differ from the models: run "
                "`dockyard crd generate` and commit the result")
        click.echo(f"{len(crds.generated_files())} generated files are up to date")
        return
    changed = crds.write(root)
    for path in changed:
        log.info("wrote", path=path)
    click.echo(f"{len(changed)} file(s) written, "
               f"{len(crds.generated_files()) - len(changed)} already up to date")


@group.command("print")
@click.argument("kinds", nargs=-1, metavar="[KIND]...")
def print_(kinds: tuple[str, ...]) -> None:
    """Print CRDs as YAML (all, or the named kinds), for `kubectl apply -f -`."""
    wanted = kinds or tuple(BY_KIND)
    lookup = {name.lower(): cls for name, cls in BY_KIND.items()}
    for name in wanted:
        cls = lookup.get(name.lower())
        if cls is None:
            raise click.BadParameter(f"unknown kind {name!r}: use one of {', '.join(BY_KIND)}",
                                     param_hint="KIND")
        click.echo("---\n" + crds.render(crds.crd(cls)), nl=False)
