"""`dockyard volume create | ls | inspect | rm | prune`: the node's volumes, the Docker way.

The commands open the volume store under $DOCKYARD_ROOT directly, as the image commands
do; which volumes are in use is read from the container records, so a volume a container
refers to (running or not) is never removed, with or without a daemon.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click

from dockyard_cli.flags import FlagError, parse_size
from dockyard_cli.reporting import confirmed, reported
from dockyard_shim.daemon.paths import state_root
from dockyard_shim.daemon.storage import open_volumes, volumes_in_use
from dockyard_shim.errors import NotFoundError, ShimError
from dockyard_shim.volumes import Kind, VolumeRecord, VolumeStore
from dockyard_shim.volumes.importing import import_volume
from dockyard_shim.volumes.remote import pull_volume, read_token
from dockyard_shim.volumes.transfer import TransferStats, export_volume


def open_store() -> VolumeStore:
    return open_volumes(state_root())


@click.group("volume")
def volume() -> None:
    """Manage volumes: data that outlives containers, mounted with -v NAME:/path.

    \b
    Kinds:
      local     a directory under the state root (the default)
      hostPath  a directory of this machine (--host-path), under DOCKYARD_HOST_PATHS
      tmpfs     memory (--tmpfs-size), emptied when no running container uses it
      provider  a directory a storage container exports (--provider CONTAINER:/PATH)
    """


def _size(_: click.Context, __: click.Parameter, text: str | None) -> int | None:
    try:
        return parse_size(text) if text else None
    except FlagError as e:
        raise click.BadParameter(str(e)) from None


def _labels(_: click.Context, __: click.Parameter, items: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key:
            raise click.BadParameter(f"{item!r}: write KEY=VALUE")
        labels[key] = value if eq else ""
    return labels


@volume.command("create")
@click.argument("name", required=False)
@click.option("--host-path", metavar="PATH",
              help="Make a hostPath volume: this existing directory of the machine.")
@click.option("--shared", is_flag=True,
              help="hostPath only: the path is on storage every node mounts (NFS, CephFS).")
@click.option("--tmpfs-size", metavar="SIZE", callback=_size,
              help="Make a tmpfs volume of at most SIZE (64m, 1g).")
@click.option("--tmpfs-mode", metavar="OCTAL", default="1777", show_default=True,
              help="tmpfs only: the permission bits of its root.")
@click.option("--provider", metavar="CONTAINER:/PATH",
              help="Make a provider volume: the directory PATH that the storage container "
                   "CONTAINER exports (what it mounts there later reaches every consumer).")
@click.option("-l", "--label", "labels", metavar="KEY=VALUE", multiple=True,
              callback=_labels, help="Set metadata on the volume (repeatable).")
@reported
def create(*, name: str | None, host_path: str | None, shared: bool, tmpfs_size: int | None,
           tmpfs_mode: str, provider: str | None, labels: dict[str, str]) -> None:
    """Create a volume; print its name. Without NAME, it gets a random one.

    Creating a volume that exists with the same settings only prints its name.

    \b
    Examples:
      dockyard volume create pgdata
      dockyard volume create --host-path /srv/media media
      dockyard volume create --tmpfs-size 64m scratch
      dockyard volume create --provider ceph:/export cephfs
    """
    if sum(bool(kind) for kind in (host_path, tmpfs_size, provider)) > 1:
        raise click.UsageError("a volume is one kind: --host-path, --tmpfs-size or --provider")
    try:
        mode = int(tmpfs_mode, 8)
    except ValueError:
        raise click.BadParameter(f"{tmpfs_mode!r} is not octal, such as 1777",
                                 param_hint="--tmpfs-mode") from None
    if host_path:
        wanted = VolumeRecord(name="", kind=Kind.HOST_PATH, host_path=host_path, shared=shared)
    elif tmpfs_size:
        wanted = VolumeRecord(name="", kind=Kind.TMPFS, size_bytes=tmpfs_size, mode=mode)
    elif provider:
        container, _, path = provider.partition(":")
        if not container or not path.startswith("/"):
            raise click.BadParameter(f"{provider!r}: write CONTAINER:/PATH, such as "
                                     "ceph:/export", param_hint="--provider")
        wanted = VolumeRecord(name="", kind=Kind.PROVIDER, provider=container,
                              provider_path=path)
    else:
        wanted = VolumeRecord(name="", shared=shared)  # --shared alone: the store says no
    with open_store() as store:
        if name is None and wanted.kind is Kind.LOCAL and not shared:
            record = store.create_anonymous(labels)
        else:
            record = store.create(wanted.with_(name=name or "", labels=labels))
    click.echo(record.name)


@volume.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Print volume names only.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@click.option("--dangling", is_flag=True, help="Only volumes no container refers to.")
@reported
def ls(quiet: bool, fmt: str, dangling: bool) -> None:
    """List volumes, like `docker volume ls`."""
    with open_store() as store:
        records = store.all()
        if dangling:
            used = volumes_in_use(state_root())
            records = [r for r in records if r.name not in used]
        if quiet:
            for record in records:
                click.echo(record.name)
        elif fmt == "json":
            click.echo(json.dumps([_as_json(store, r) for r in records], indent=2))
        else:
            rows = [("KIND", "VOLUME NAME")] + [(r.kind.value, r.name) for r in records]
            width = max(len(kind) for kind, _ in rows)
            for kind, name in rows:
                click.echo(f"{kind.ljust(width)}   {name}")


@volume.command("inspect")
@click.argument("names", nargs=-1, required=True)
@reported
def inspect(names: tuple[str, ...]) -> None:
    """Print everything known about volumes, as JSON (with the bytes a local one uses)."""
    with open_store() as store:
        found = [_as_json(store, store.get(name), usage=True) for name in names]
    click.echo(json.dumps(found, indent=2))


@volume.command("rm")
@click.option("-f", "--force", is_flag=True, help="No error for volumes that do not exist.")
@click.argument("names", nargs=-1, required=True)
@reported
def rm(force: bool, names: tuple[str, ...]) -> None:
    """Remove volumes and their data. A volume any container refers to is kept: remove
    the container first (or use `dockyard rm -v` for its anonymous volumes)."""
    in_use = volumes_in_use(state_root())
    failed = False
    with open_store() as store:
        for name in names:  # each on its own, as Docker: one refusal does not stop the rest
            try:
                store.remove(name, in_use=in_use)
            except NotFoundError as e:
                if not force:
                    click.echo(f"Error: {e}", err=True)
                    failed = True
                    continue
            except ShimError as e:
                click.echo(f"Error: {e}", err=True)
                failed = True
                continue
            click.echo(name)
    if failed:
        raise SystemExit(1)


@volume.command("prune")
@click.option("-a", "--all", "all_volumes", is_flag=True,
              help="Remove every unused volume, not only anonymous ones.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@reported
def prune(all_volumes: bool, force: bool) -> None:
    """Remove unused volumes, like `docker volume prune`: anonymous ones, or with -a
    every volume no container refers to. Their data is deleted."""
    what = "all volumes not used by a container" if all_volumes else \
        "all anonymous volumes not used by a container"
    if not confirmed(f"This will remove {what}.", force=force):
        return
    in_use = volumes_in_use(state_root())
    with open_store() as store:
        removed = store.prune(in_use=in_use, all_volumes=all_volumes)
    click.echo("Deleted Volumes:" if removed else "Nothing to delete")
    for name in removed:
        click.echo(name)


@volume.command("export")
@click.argument("name")
@click.option("-o", "--output", metavar="FILE", default="-", show_default=True,
              help="Where to write the archive; '-' is standard output.")
@reported
def export(name: str, output: str) -> None:
    """Write a volume's data as a tar stream with the sha256 of every file.

    The archive holds the tree under data/ and, last, manifest.json with each file's
    digest and size; `dockyard volume import` checks them all.

    \b
    Examples:
      dockyard volume export pgdata > pgdata.tar
      dockyard volume export pgdata | ssh other dockyard volume import pgdata
    """
    if output == "-" and sys.stdout.isatty():
        raise click.UsageError("the archive is binary: redirect standard output, or use -o")
    with open_store() as store:
        source = store.export_source(name)
        with _output(output) as out:
            stats = export_volume(source, out)
    _summary("exported", stats)


@volume.command("import")
@click.argument("name")
@click.option("-i", "--input", "source", metavar="FILE", default="-", show_default=True,
              help="The archive to read (from `volume export`); '-' is standard input.")
@reported
def import_(name: str, source: str) -> None:
    """Make a new local volume NAME from an archive of `dockyard volume export`.

    Every file is checked against the archive's manifest before the volume can be used;
    an archive that is damaged or cut short leaves NAME unusable (remove it and import
    again).
    """
    with open_store() as store:
        if source == "-":
            stats = import_volume(store, name, sys.stdin.buffer)
        else:
            with open(source, "rb") as stream:
                stats = import_volume(store, name, stream)
    _summary("imported", stats)


@volume.command("pull")
@click.argument("name")
@click.option("--from", "source", required=True, metavar="http://HOST:PORT",
              help="The peer shim's transfer listener (its DOCKYARD_TRANSFER_LISTEN).")
@click.option("--remote", "remote_name", default="", metavar="NAME",
              help="The volume's name on the peer (default: NAME).")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="DOCKYARD_TRANSFER_TOKEN_FILE", required=True,
              help="The token this node shares with its peers "
                   "(default: $DOCKYARD_TRANSFER_TOKEN_FILE).")
@reported
def pull(name: str, source: str, remote_name: str, token_file: Path) -> None:
    """Copy a volume from another node's shim into the new local volume NAME.

    The request is signed with the shared token (which never travels) and the data is
    checked file by file, and as a whole against the sender's signature, before NAME can
    be used. If the transfer breaks off, NAME stays unusable: pull again, and it resumes
    (the files already here whole are not sent again when the peer still has them so).

    \b
    Examples:
      dockyard volume pull pgdata --from http://10.0.0.5:7459
      dockyard volume pull pgdata-copy --remote pgdata --from http://node-a:7459
    """
    with open_store() as store:
        stats = pull_volume(store, name, source, read_token(token_file),
                            remote_name=remote_name)
    _summary("pulled", stats)


def _summary(verb: str, stats: TransferStats) -> None:
    resumed = (f" ({stats.kept_files} files, {stats.kept_bytes} bytes of them were here "
               "from the broken attempt before)" if stats.kept_files else "")
    click.echo(f"{verb} {stats.files} files, {stats.bytes} bytes{resumed}, "
               f"manifest sha256:{stats.digest}", err=True)


@contextmanager
def _output(name: str) -> Iterator[IO[bytes]]:
    if name == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with open(name, "wb") as out:
        yield out


def _as_json(store: VolumeStore, record: VolumeRecord, *, usage: bool = False) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "Name": record.name, "Kind": record.kind.value, "Driver": "local", "Scope": "local",
        "CreatedAt": datetime.fromtimestamp(record.created_at, UTC).isoformat(),
        "Labels": record.labels, "Anonymous": record.anonymous,
        "Mountpoint": str(store.root / record.name / "_data"),
    }
    if record.kind is Kind.HOST_PATH:
        shown |= {"Mountpoint": record.host_path, "Shared": record.shared}
    if record.kind is Kind.TMPFS:
        shown |= {"SizeLimit": record.size_bytes, "Mode": f"{record.mode:o}"}
    if record.kind is Kind.PROVIDER:
        shown |= {"Provider": record.provider, "ExportPath": record.provider_path}
    if usage:
        shown["UsageBytes"] = store.usage(record)
    return shown


commands: list[click.Command] = [volume]
