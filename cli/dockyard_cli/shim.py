"""`dockyard shim`: run the node daemon (the keeper and its server) in the foreground."""

from __future__ import annotations

import asyncio
import sys

import click

from dockyard_shim.daemon.keeper import Keeper, lock_root
from dockyard_shim.daemon.paths import socket_path, state_root
from dockyard_shim.errors import ShimError


@click.command("shim")
def command() -> None:
    """Run the node daemon: the container runtime behind a local API.

    It listens on $DOCKYARD_HOST (default /run/dockyard/dockyard.sock) and keeps its state
    in $DOCKYARD_ROOT (default /var/lib/dockyard); its containers' cgroups sit under
    $DOCKYARD_CGROUP_PARENT (default dockyard). Other commands start it on demand, so
    you rarely run it yourself. Containers keep running when it stops, and even when it
    is killed their exit codes are kept; a restarted daemon finds them all again.
    """
    root = state_root()
    try:
        lock_root(root)  # held for the life of this process and inherited by the server
    except ShimError as e:
        raise click.ClickException(str(e)) from e
    sys.exit(Keeper(root, _serve).run())


def _serve() -> int:
    """The server process: open the node and serve until SIGTERM."""
    from dockyard_shim.daemon.node import open_node  # noqa: PLC0415 -- in the child only
    from dockyard_shim.daemon.server import serve  # noqa: PLC0415

    node = open_node(state_root(), fork_server=True)
    try:
        asyncio.run(serve(node, socket_path()))
    finally:
        node.close()
    return 0
