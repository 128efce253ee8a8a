"""`dockyard pull | push | save | login`: images between this node, registries and files.

Transport is skopeo's; see `dockyard_shim.images.distribution`. On a terminal, pull and
push show each layer as it goes; with JSON logs (`--log-format json`, or any output that
is not a terminal) they print only their result.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from dockyard_cli.images import open_store
from dockyard_cli.reporting import reported
from dockyard_common import for_machines
from dockyard_shim.images import distribution
from dockyard_shim.images.transport import login as registry_login


def _layer_progress(known: set[str]) -> Callable[[str], None]:
    """Turns skopeo's lines into Docker's: `6b81e3ef2592: Already exists` or `Copying`."""
    quiet = for_machines()

    def show(line: str) -> None:
        if quiet:
            return
        words = line.split()
        if len(words) >= 3 and words[0] == "Copying" and words[2].startswith("sha256:"):
            digest = words[2]
            state = "Already exists" if digest in known else f"Copying {words[1]}"
            click.echo(f"{digest.removeprefix('sha256:')[:12]}: {state}", err=True)

    return show


@click.command("pull")
@click.argument("ref", metavar="NAME[:TAG|@DIGEST]")
@reported
def pull(ref: str) -> None:
    """Pull an image from a registry, for this node's platform, like `docker pull`.

    Layers this node has already are neither downloaded nor unpacked again. A registry on
    a loopback address may use plain HTTP; credentials come from Docker's config.json
    (see `dockyard login`).

    \b
    Examples:
      dockyard pull busybox
      dockyard pull 127.0.0.1:5000/team/app:1.2
    """
    with open_store() as store:
        known = {str(d) for d in store.content.list()}
        record = distribution.pull(store, ref, progress=_layer_progress(known))
    click.echo(f"Digest: {record.manifest_digest}", err=True)
    click.echo(record.names[0] if record.names else record.id)


@click.command("push")
@click.argument("image", metavar="IMAGE")
@click.argument("target", metavar="[REGISTRY/]REPOSITORY[:TAG]", required=False)
@reported
def push(image: str, target: str | None) -> None:
    """Push an image to a registry, like `docker push` (with TARGET, under that name).

    \b
    Examples:
      dockyard push 127.0.0.1:5000/team/app:1.2
      dockyard push app:dev 127.0.0.1:5000/team/app:1.2
    """
    with open_store() as store:
        known: set[str] = set()  # a push shows every layer it sends as copying
        pushed = distribution.push(store, image, target, progress=_layer_progress(known))
    click.echo(str(pushed))


@click.command("save")
@click.option("-o", "--output", required=True, metavar="FILE",
              help="Archive to write (an OCI image layout tar).")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@reported
def save(output: str, images: tuple[str, ...]) -> None:
    """Save images to an OCI image-layout tar, like `docker save`.

    `dockyard load`, `docker load` and `skopeo copy oci-archive:` read it back. Images
    given by name keep that name in the archive.
    """
    with open_store() as store:
        distribution.save(store, list(images), Path(output))


@click.command("login")
@click.argument("registry", metavar="REGISTRY")
@click.option("-u", "--username", required=True, help="User name at the registry.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from standard input (else it is asked for).")
@reported
def login(registry: str, username: str, password_stdin: bool) -> None:
    """Log in to a registry; the credentials go to Docker's config.json.

    The registry checks them first. Pull and push use them, as `docker` does.
    """
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True)
    written = registry_login(registry, username, password)
    click.echo(f"Login succeeded (credentials in {written})")

