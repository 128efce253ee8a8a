"""Published ports: one userland forwarder per `-p` mapping of each running container.

Kept in step with the containers (after every API request, exit and restart): a running
bridge container with published ports has its forwarders listening; any other has none.
The ports actually bound (a host port 0 means "any free one") are written to the
container's bundle as `ports.json`, which `inspect` shows. Forwarders live in the daemon's
event loop, like docker-proxy in dockerd's, and are started again by a new daemon.
"""

from __future__ import annotations

import json
from pathlib import Path

from dockyard_common import get_logger
from dockyard_shim.errors import ShimError
from dockyard_shim.network import PortForwarder
from dockyard_shim.runtime.runtime import Runtime
from dockyard_shim.runtime.state import ContainerRecord, Status

log = get_logger(__name__)


class PublishedPorts:
    """The forwarders of every running container that publishes ports."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._active: dict[str, list[PortForwarder]] = {}

    async def sync(self, records: list[ContainerRecord] | None = None) -> None:
        """Start forwarders for new publishing containers, stop those of gone ones.

        `records` are the node's containers when the caller has read them already.
        """
        records = self._runtime.store.all() if records is None else records
        wanted = {r.id: r for r in records
                  if r.status in (Status.RUNNING, Status.PAUSED) and r.ip_address
                  and r.config.get("ports")}
        for container_id in set(self._active) - set(wanted):
            await self._stop(container_id)
        for container_id, record in wanted.items():
            if container_id not in self._active:
                await self._start(record)

    async def _start(self, record: ContainerRecord) -> None:
        forwarders: list[PortForwarder] = []
        bound = []
        self._active[record.id] = forwarders
        for port in record.config["ports"]:
            forwarder = PortForwarder(
                container_ip=record.ip_address, container_port=port["container_port"],
                host_ip=port["host_ip"], host_port=port["host_port"],
                protocol=port["protocol"])
            try:
                host_port = await forwarder.start()
            except ShimError as e:
                log.warning("cannot publish a port", container=record.name, error=str(e))
                continue
            forwarders.append(forwarder)
            bound.append({**port, "host_port": host_port})
        (Path(record.bundle) / "ports.json").write_text(json.dumps(bound))

    async def _stop(self, container_id: str) -> None:
        for forwarder in self._active.pop(container_id, []):
            await forwarder.stop()

    async def close(self) -> None:
        for container_id in list(self._active):
            await self._stop(container_id)
