"""`dockyard agent`: run the node agent, which runs this node's share of the cluster."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import click

from dockyard_shim.agent.converging import AgentConfig
from dockyard_shim.daemon.paths import socket_file, state_root


@click.command("agent")
@click.option("--node", default=lambda: os.environ.get("DOCKYARD_NODE_NAME") or
              socket.gethostname(), show_default="$DOCKYARD_NODE_NAME, else the host name",
              help="This node's name in the cluster: its DockyardNode and its Lease.")
@click.option("--lease-namespace", default="dockyard-system", show_default=True,
              help="The namespace of the node's Lease (the operator's namespace).")
@click.option("--renew-every", type=click.FloatRange(min=0.1), default=10.0,
              show_default=True, metavar="SECONDS",
              help="How often the Lease is renewed (the kubelet's default).")
@click.option("--lease-seconds", type=click.IntRange(min=1), default=40, show_default=True,
              help="The Lease's duration, written into it for readers.")
@click.option("--poll-every", type=click.FloatRange(min=0.05), default=1.0,
              show_default=True, metavar="SECONDS",
              help="The longest time between two looks at the node's containers: how "
                   "soon an exit shows in a Container's status.")
@click.option("--cpus", default=None, metavar="QUANTITY",
              help="The cpu this node offers (default: the CPUs this process may use).")
@click.option("--memory", default=None, metavar="QUANTITY",
              help="The memory this node offers (default: MemTotal).")
@click.option("--pids", type=click.IntRange(min=1), default=None,
              help="The processes this node offers (default: the kernel's pid_max).")
@click.option("--address", default=lambda: os.environ.get("DOCKYARD_TRANSFER_LISTEN", ""),
              show_default="$DOCKYARD_TRANSFER_LISTEN",
              help="HOST:PORT where other nodes pull this node's volumes.")
@click.option("--metrics-listen", default="", metavar="HOST:PORT",
              help="Serve Prometheus metrics on /metrics there (default: not served).")
def command(*, node: str, lease_namespace: str, renew_every: float, lease_seconds: int,
            poll_every: float, cpus: str | None, memory: str | None, pids: int | None,
            address: str, metrics_listen: str) -> None:
    """Run the node agent: this node's part of a Dockyard cluster.

    It registers the node (a DockyardNode) and renews its Lease, watches the Container
    objects bound to this node, and makes the node daemon ($DOCKYARD_HOST, state in
    $DOCKYARD_ROOT) run exactly those, reporting their state in each Container's status.
    On start it first kills the containers it made whose Container was moved to another
    node meanwhile. It reaches the API server in-cluster (service account) or through
    the kubeconfig ($KUBECONFIG, else ~/.kube/config). The node daemon must be running
    (`dockyard shim`).

    \b
    Example:
      dockyard agent --node worker-1
    """
    import kopf  # noqa: PLC0415 -- only this command needs it

    from dockyard_shim.agent.app import registry  # noqa: PLC0415

    capacity = None
    if cpus or memory or pids:
        from dockyard_shim.agent.facts import machine_capacity  # noqa: PLC0415

        capacity = {**machine_capacity(), **{k: v for k, v in
                                              (("cpu", cpus), ("memory", memory),
                                               ("pids", pids)) if v is not None}}
    # kopf logs every watch event's handler at info: the agent's own lines say what it did.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    config = AgentConfig(node=node, root=state_root(), socket=socket_file(),
                         namespace=lease_namespace, renew_every=renew_every,
                         lease_seconds=lease_seconds, poll_every=poll_every,
                         capacity=capacity, address=address, metrics_listen=metrics_listen)
    asyncio.run(kopf.operator(registry=registry(config), clusterwide=True, standalone=True))
