"""`dockyard up` and `dockyard down`: run a set of manifests on this machine, no cluster.

Thin on purpose: read the files, let the standalone core (`dockyard_api.converge`)
decide, check what only the machine can tell (images present, host paths there), then
carry out the actions through the node daemon and print one line for each.

Nothing changes when any manifest is invalid, an image is missing or a name is taken: all
of that is found before the first action. Once actions run, a failing one is reported and
the others still run (as `docker rm a b` does); the exit status is then 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import click

from dockyard_api.converge import (
    Action,
    Create,
    DesiredContainer,
    Manifests,
    ManifestSetError,
    ObservedContainer,
    Plan,
    Remove,
    Replace,
    SourcedProblem,
    Start,
    desire,
    load_manifests,
    plan_down,
    plan_up,
)
from dockyard_cli.client import connect
from dockyard_cli.images import open_store
from dockyard_shim.agent.actions import carry_out, prepare_volumes
from dockyard_shim.daemon.client import Client, DaemonError
from dockyard_shim.daemon.paths import state_root
from dockyard_shim.errors import ShimError

_SUFFIXES = (".yaml", ".yml", ".json")
_WOULD = {Create: "would create", Replace: "would replace", Start: "would start",
          Remove: "would remove"}

_files_option = click.option(
    "-f", "--filename", "paths", multiple=True, required=True, metavar="PATH",
    type=click.Path(exists=True, path_type=Path),
    help="A manifest file, or a directory of them (*.yaml, *.yml, *.json); repeatable. All "
         "the files form one set: a Container may use an Image or Volume of another file.")
_recursive_option = click.option(
    "-R", "--recursive", is_flag=True,
    help="Also read the directories under a directory given with -f (as kubectl -R).")
_timeout_option = click.option(
    "-t", "--timeout", type=float, default=0.0, show_default=True, metavar="SECONDS",
    help="Before removing a running container, send SIGTERM and wait this long; 0 kills it "
         "at once (SIGKILL).")


@click.command("up")
@_files_option
@_recursive_option
@click.option("--prune", is_flag=True,
              help="Also remove the containers `up` made for Container objects that are no "
                   "longer in the manifests, within the namespaces the manifests use.")
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
@_timeout_option
def up(paths: tuple[Path, ...], recursive: bool, prune: bool, dry_run: bool,
       timeout: float) -> None:
    """Run the Containers of manifests on this machine, like `kubectl apply` with no cluster.

    Creates what is missing, replaces what changed (remove, then create), starts what
    should run and does not, and leaves the rest alone: running `up` twice changes nothing
    the second time. Containers are named NAMESPACE.NAME (namespace `default` when the
    manifest names none); Image and Volume objects of the same files are used by them.
    A Volume is the node volume NAMESPACE.NAME (see `dockyard volume ls`), made before
    its first container and kept by `down`. Containers the manifests no longer describe
    stay unless you pass --prune. Other kinds (Stage, Promotion…) are checked and skipped.
    Only local images run: load or import them first.

    \b
    Examples:
      dockyard up -f examples/standalone
      dockyard up -f web.yaml -f volumes.yaml --dry-run
      dockyard up -f app/ --prune
    """
    manifests = _read(paths, recursive)
    root = _state_root()
    try:
        desired = desire(manifests)
        client = connect(autostart=not dry_run)
        plan = plan_up(desired, _observe(client), namespaces=manifests.namespaces,
                       prune=prune)
    except ManifestSetError as e:
        _refuse(e.problems)
    missing = _missing_on_machine(plan, manifests, root)
    if missing:
        _refuse(missing)
    _skipped(manifests)
    if not dry_run:
        _prepare_volumes(plan)
    _carry_out(client, plan, dry_run=dry_run, timeout=timeout, terse=(Create,))
    if plan.unpruned:
        click.echo(f"note: not in the manifests, kept (remove with --prune): "
                   f"{', '.join(plan.unpruned)}", err=True)


@click.command("down")
@_files_option
@_recursive_option
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
@_timeout_option
def down(paths: tuple[Path, ...], recursive: bool, dry_run: bool, timeout: float) -> None:
    """Remove the containers of manifests from this machine: undo `dockyard up`.

    Removes exactly the containers of the Container objects in the manifests (forcibly,
    unless --timeout gives them time to stop); one that is not there is fine. Containers
    made by hand are never touched, and the data of local Volumes is kept.

    \b
    Examples:
      dockyard down -f examples/standalone
      dockyard down -f web.yaml --timeout 10
    """
    manifests = _read(paths, recursive)
    try:
        client = connect(autostart=not dry_run)
        plan = plan_down(manifests, _observe(client))
    except ManifestSetError as e:
        _refuse(e.problems)
    _skipped(manifests)
    _carry_out(client, plan, dry_run=dry_run, timeout=timeout, terse=(Remove,))


# Reading ---------------------------------------------------------------------------------

def _manifest_files(paths: Iterable[Path], recursive: bool) -> Iterator[Path]:
    """The files named, and the manifest files of the directories named, sorted."""
    for path in paths:
        if path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            yield from sorted(p for p in found if p.suffix in _SUFFIXES and p.is_file())
        else:
            yield path


def _read(paths: tuple[Path, ...], recursive: bool) -> Manifests:
    files = []
    for path in _manifest_files(paths, recursive):
        try:
            files.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as e:
            _refuse([SourcedProblem(str(path), "", f"cannot read the file: {e}")])
    if not files:
        _fail(f"no manifest files (*.yaml, *.yml, *.json) in {', '.join(map(str, paths))}")
    try:
        return load_manifests(files)
    except ManifestSetError as e:
        _refuse(e.problems)


def _state_root() -> Path:
    # Resolved: bind sources are absolute, and a link in the root must not move them later.
    return state_root().resolve()


def _observe(client: Client) -> list[ObservedContainer]:
    return [ObservedContainer.from_record(record)
            for record in client.call("GET", "/containers/json?all=1")]


def _refuse(problems: Sequence[SourcedProblem]) -> NoReturn:
    """Print every problem and exit 1: nothing has changed yet."""
    for problem in problems:
        click.echo(f"Error: {problem}", err=True)
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    _fail(f"nothing was changed ({count})")


def _fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(1)


def _skipped(manifests: Manifests) -> None:
    for what in manifests.ignored:
        click.echo(f"skipped {what}: standalone mode runs Containers with their Images and "
                   "Volumes", err=True)


# What only the machine can tell ------------------------------------------------------------

def _to_create(plan: Plan) -> list[DesiredContainer]:
    return [a.desired for a in plan.actions if isinstance(a, Create | Replace)]


def _missing_on_machine(plan: Plan, manifests: Manifests, root: Path
                        ) -> list[SourcedProblem]:
    """Missing images and host paths, found before a container is removed to be replaced."""
    problems = []
    refs = {p.key: ("spec.image" if p.resource.spec.image else "spec.imageRef")
            for p in manifests.containers}
    try:
        with open_store() as store:
            for want in _to_create(plan):
                image = str(want.config["image"])
                try:
                    store.get(image)
                except ShimError as e:
                    problems.append(SourcedProblem(
                        want.source, refs[want.key],
                        f"{e}: load or import it first (dockyard load -i FILE, or dockyard "
                        "import ROOTFS.tar NAME); no registry is used"))
    except OSError:
        pass  # the store is unreadable from here: the daemon still names a missing image
    for want in _to_create(plan):
        for volume in want.volumes:
            path = Path(volume.get("host_path") or "/")
            if volume["kind"] == "hostPath" and not path.is_dir():
                problems.append(SourcedProblem(
                    want.source, "spec.volumeMounts",
                    f"the hostPath {path} of volume {volume['name']} does not exist on this "
                    "machine: create it first"))
    return problems


def _prepare_volumes(plan: Plan) -> None:
    """Make the node volumes the containers to create need (each once; kept by `down`)."""
    try:
        prepare_volumes(_state_root(), _to_create(plan))
    except ShimError as e:
        _fail(str(e))


def _carry_out(client: Client, plan: Plan, *, dry_run: bool, timeout: float,
               terse: tuple[type[Action], ...]) -> None:
    failed = 0
    for action in plan.actions:
        line = _line(action, dry_run, terse)
        if dry_run or not action.changes:
            click.echo(line)
            continue
        try:
            carry_out(client, action, timeout=timeout)
        except DaemonError as e:
            click.echo(f"Error: {action.name}: {e.message}", err=True)
            failed += 1
            continue
        click.echo(line)
    if failed:
        _fail(f"{failed} of {sum(a.changes for a in plan.actions)} changes failed")


def _line(action: Action, dry_run: bool, terse: tuple[type[Action], ...]) -> str:
    verb = _WOULD.get(type(action), action.verb) if dry_run else action.verb
    if isinstance(action, terse):
        return f"{verb} {action.name}"
    return f"{verb} {action.name}: {action.reason}"
