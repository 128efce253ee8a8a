"""`dockyard load | import | images | rmi | tag`: the node's local images, the Docker way.

Until the daemon exists these commands open the store directly under $DOCKYARD_ROOT
(default /var/lib/dockyard), which needs root like the rest of the runtime. `open_store` is
the one place that knows this: swap it for a client of the daemon's API later and the
commands stay as they are. Errors print one line on stderr and exit 1.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from dockyard_cli.reporting import confirmed, reported
from dockyard_shim.daemon.paths import state_root
from dockyard_shim.daemon.storage import images_in_use, open_images
from dockyard_shim.errors import ShimError
from dockyard_shim.images import ImageRecord, ImageStore, parse_reference


@contextmanager
def open_store() -> Iterator[ImageStore]:
    """The image store of this node (today: opened in-process; later: the daemon's)."""
    snapshotter, store = open_images(state_root())
    with snapshotter, store:
        yield store


@contextmanager
def _local_file(name: str) -> Iterator[Path]:
    """`name` as a path; `-` spools standard input to a temporary file first."""
    if name != "-":
        yield Path(name)
        return
    with tempfile.NamedTemporaryFile(prefix="dockyard-stdin-", suffix=".tar") as spool:
        stdin = sys.stdin.buffer
        while chunk := stdin.read(1 << 20):
            spool.write(chunk)
        spool.flush()
        yield Path(spool.name)


def _familiar(name: str) -> str:
    return parse_reference(name).familiar()


_unpack_option = click.option(
    "--unpack/--no-unpack", default=True, show_default=True,
    help="Unpack the layers into snapshots now (needs root), so containers start at once.")


@click.command("load")
@click.option("-i", "--input", "source", default="-", metavar="FILE", show_default=True,
              help="Archive to read: an OCI image layout tar or a `docker save` tar, "
                   "optionally gzip-compressed; '-' reads standard input.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@_unpack_option
@reported
def load(source: str, quiet: bool, unpack: bool) -> None:
    """Load images from an archive, like `docker load`.

    Every blob is checked against its digest before it is stored, and a multi-platform
    image is loaded for this machine's platform only. Names in the archive move to the
    loaded images.

    \b
    Examples:
      dockyard load -i busybox.tar
      docker save busybox | dockyard load
      skopeo copy docker://alpine oci-archive:alpine.tar:alpine:3 && dockyard load -i alpine.tar
    """
    with _local_file(source) as path, open_store() as store:
        records = store.load(path, unpack=unpack)
    if quiet:
        return
    for record in records:
        for name in record.names or ():
            click.echo(f"Loaded image: {_familiar(name)}")
        if not record.names:
            click.echo(f"Loaded image ID: {record.id}")


@click.command("import")
@click.argument("file", metavar="FILE")
@click.argument("name", metavar="NAME[:TAG]")
@_unpack_option
@reported
def import_(file: str, name: str, unpack: bool) -> None:
    """Make a one-layer image from a root filesystem tar, like `docker import`.

    FILE is a tar (plain or gzip) of a whole root filesystem, or '-' for standard input.
    The image gets this machine's platform and no command: give one when you run it.
    Prints the new image's id.

    \b
    Examples:
      dockyard import rootfs.tar mybase:1.0
      docker export some-container | dockyard import - snapshot
    """
    with _local_file(file) as path, open_store() as store:
        record = store.import_rootfs(path, name, unpack=unpack)
    click.echo(record.id)


@click.command("images")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@click.option("-q", "--quiet", is_flag=True, help="Print image ids only, one per line.")
@reported
def images(fmt: str, quiet: bool) -> None:
    """List the images on this machine, like `docker images`.

    An image with several names shows once per name; an image without a name (replaced by
    a newer load of its name) shows as <none>.

    \b
    Examples:
      dockyard images
      dockyard images -q
      dockyard images --format json
    """
    with open_store() as store:
        records = store.list()
    if quiet:
        for record in records:
            click.echo(record.short_id)
    elif fmt == "json":
        click.echo(json.dumps([_as_json(r) for r in records], indent=2))
    else:
        rows = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
        now = datetime.now(UTC)
        for record in records:
            for repository, tag in _repo_tags(record):
                rows.append((repository, tag, record.short_id,
                             _ago(record.created or record.loaded, now),
                             _human_size(record.size)))
        widths = [max(len(row[n]) for row in rows) for n in range(4)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            click.echo("   ".join([*cells, row[4]]))


def _repo_tags(record: ImageRecord) -> list[tuple[str, str]]:
    if not record.names:
        return [("<none>", "<none>")]
    pairs = []
    for name in record.names:
        ref = parse_reference(name)
        pairs.append((ref.familiar_repository(), ref.tag or "<none>"))
    return pairs


def _as_json(record: ImageRecord) -> dict[str, Any]:
    return {"id": record.id, "names": list(record.names),
            "repoTags": [_familiar(n) for n in record.names],
            "manifestDigest": record.manifest_digest,
            "created": record.created.isoformat() if record.created else None,
            "loaded": record.loaded.isoformat(), "size": record.size}


def _ago(then: datetime, now: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400),
                       ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "Less than a minute ago"


def _human_size(size: int) -> str:
    # Decimal units, as `docker images` prints them.
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.3g}{unit}"
        value /= 1000
    return f"{value:.3g}TB"


@click.command("rmi")
@click.argument("refs", nargs=-1, required=True, metavar="IMAGE...")
@click.option("-f", "--force", is_flag=True,
              help="Remove an image given by id even when it has several names; untag an "
                   "image a container uses (the image stays for the container).")
@reported
def rmi(refs: tuple[str, ...], force: bool) -> None:
    """Remove images, like `docker rmi`.

    An IMAGE given by name loses that name; the image itself is deleted when no name is
    left, and its blobs and unpacked layers are collected unless another image shares them.
    An image a container was created from is not deleted: remove the container first
    (with --force the image only loses its names). Given by id, the image is deleted with
    all its names, which needs --force when it has more than one.

    \b
    Examples:
      dockyard rmi busybox
      dockyard rmi -f 3f57d9401f8d
    """
    failed = False
    in_use = images_in_use(state_root())
    with open_store() as store:
        for ref in refs:  # like docker: go on with the others, fail at the end
            try:
                report = store.remove(ref, force=force, in_use=in_use)
            except ShimError as e:
                click.echo(f"Error: {e}", err=True)
                failed = True
                continue
            for name in report.untagged:
                click.echo(f"Untagged: {_familiar(name)}")
            for image_id in report.deleted:
                click.echo(f"Deleted: {image_id}")
            for chain in report.snapshots_kept:
                click.echo(f"Kept layer {chain}: a container still uses it", err=True)
    if failed:
        raise SystemExit(1)


@click.command("tag")
@click.argument("source", metavar="SOURCE")
@click.argument("target", metavar="TARGET")
@reported
def tag(source: str, target: str) -> None:
    """Give the image SOURCE (a name or an id) the name TARGET, like `docker tag`.

    If another image had that name, it moves here.

    \b
    Examples:
      dockyard tag busybox registry.example.com/tools/busybox:1.36
      dockyard tag 3f57d9401f8d myimage:dev
    """
    with open_store() as store:
        store.tag(source, target)


@click.group("image")
def image() -> None:
    """Manage images (more image commands are top-level: images, rmi, tag, pull...)."""


@image.command("prune")
@click.option("-a", "--all", "all_images", is_flag=True,
              help="Remove every image no container uses, not only unnamed ones.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@reported
def prune(all_images: bool, force: bool) -> None:
    """Remove unused images and free what nothing references, like `docker image prune`.

    Deletes unnamed images (with -a, every image) that no container was created from,
    then every blob and unpacked layer that no image references. A layer a container is
    built on is never removed.
    """
    what = "all images without a container" if all_images else "all dangling images"
    if not confirmed(f"This will remove {what}.", force=force):
        return
    root = state_root()
    in_use = images_in_use(root)
    with open_store() as store:
        report = store.prune(in_use, all_images=all_images)
    for name in report.untagged:
        click.echo(f"Untagged: {_familiar(name)}")
    for image_id in report.deleted:
        click.echo(f"Deleted: {image_id}")
    freed = len(report.blobs_removed) + len(report.snapshots_removed)
    click.echo(f"Removed {len(report.blobs_removed)} blob(s) and "
               f"{len(report.snapshots_removed)} layer snapshot(s)" if freed else
               "Nothing else to free")


commands: list[click.Command] = [load, import_, images, rmi, tag, image]
"""The commands to register on the `dockyard` group."""
