"""`dockyard shim`: run the node daemon in the foreground."""

from __future__ import annotations

import asyncio
import os

import click

from dockyard_shim.daemon.node import open_node
from dockyard_shim.daemon.paths import socket_path, state_root
from dockyard_shim.daemon.server import lock_root, serve
from dockyard_shim.errors import ShimError


@click.command("shim")
def command() -> None:
    """Run the node daemon: the container runtime behind a local API.

    It listens on $DOCKYARD_HOST (default /run/dockyard/dockyard.sock) and keeps its state
    in $DOCKYARD_ROOT (default /var/lib/dockyard). Other commands start it on demand, so
    you rarely run it yourself. Containers keep running when it stops; a restarted daemon
    finds them again.
    """
    root = state_root()
    try:
        lock = lock_root(root)
    except ShimError as e:
        raise click.ClickException(str(e)) from e
    node = open_node(root)
    try:
        asyncio.run(serve(node, socket_path()))
    finally:
        node.close()
        os.close(lock)
