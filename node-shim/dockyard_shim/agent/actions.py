"""Carry out a convergence plan's actions through the node daemon.

Shared by `dockyard up` and the node agent: both decide with `dockyard_api.converge` and
act here, so a container is created, replaced, started and removed the same way whoever
asked. Every call may raise `DaemonError`; a container that went away meanwhile counts as
removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from dockyard_api.converge import Action, Create, DesiredContainer, Remove, Replace, Start
from dockyard_shim.daemon.client import Client, DaemonError
from dockyard_shim.daemon.storage import open_volumes
from dockyard_shim.errors import ShimError
from dockyard_shim.volumes import VolumeRecord


def carry_out(client: Client, action: Action, *, timeout: float = 0.0) -> None:
    """Do what `action` says; `timeout` is how long a running container gets to stop
    before it is killed (0: killed at once)."""
    if isinstance(action, Create):
        create(client, action.desired)
    elif isinstance(action, Replace):
        remove(client, action.container_id, timeout)
        create(client, action.desired)
    elif isinstance(action, Start):
        start(client, action.container_id)
    elif isinstance(action, Remove):
        remove(client, action.container_id, timeout)
    elif action.changes:  # pragma: no cover -- a new kind of action must be carried out here
        raise AssertionError(f"no way to carry out {action!r}")


def create(client: Client, desired: DesiredContainer) -> None:
    created = client.call("POST", "/containers/create", dict(desired.config))
    client.call("POST", f"/containers/{created['Id']}/start")


def start(client: Client, container_id: str) -> None:
    try:
        client.call("POST", f"/containers/{container_id}/start")
    except DaemonError:
        # The daemon's restart policy may have started it first: then it runs, as wanted.
        if client.call("GET", f"/containers/{container_id}/json")["status"] != "running":
            raise


def remove(client: Client, container_id: str, timeout: float = 0.0) -> None:
    try:
        if timeout > 0:
            record = client.call("GET", f"/containers/{container_id}/json")
            if record["status"] in ("running", "paused"):
                client.call("POST", f"/containers/{container_id}/stop?t={timeout}",
                            timeout=timeout + 60)
        client.call("DELETE", f"/containers/{container_id}?force=1")
    except DaemonError as e:
        if not e.message.startswith("no such container"):
            raise  # else it went away meanwhile: what removing it wanted


def prepare_volumes(root: Path, desired: Iterable[DesiredContainer]) -> None:
    """Make the node volumes `desired` need (one that exists with the same settings is
    kept); ShimError names the one that cannot be made."""
    with open_volumes(root) as store:
        for want in desired:
            for volume in want.volumes:
                try:
                    store.create(VolumeRecord.from_json(dict(volume)))
                except ShimError as e:
                    raise type(e)(f"{want.name}: volume {volume['name']}: {e}") from e
