"""Bridge networking for containers: a bridge, addresses, veth pairs and published ports.

The node namespace is the namespace of the calling thread: the host's for the daemon, a
private one in tests; nothing here names the host. Over netlink (pyroute2), never `ip`.

- `NetworkConfig`: the bridge name (`dockyard0`), subnet (10.88.0.0/16) and MTU.
- `ensure_bridge(config)` at daemon start: the bridge, its gateway address, up.
  `remove_bridge(config)` undoes it (`dockyard down`, tests).
- `remove_orphans(config, state_dir, known)` at daemon start, after `ensure_bridge` and
  before any attach: veths and addresses of containers that are not running any more.
- `attach(config, state_dir, container_id, pid) -> Attachment` from spawn's `connect(pid)`
  hook; `detach(config, state_dir, container_id)` when the container stopped or is removed.
- `Ipam`: the address book behind attach and detach (one SQLite file in `state_dir`).
- `PortForwarder`: a published port, relayed in the daemon's event loop.

These calls block for a few milliseconds of netlink work; they are safe to call from an
event loop's thread, but the daemon may prefer `asyncio.to_thread`. Errors are the shim's
categories (`dockyard_shim.errors`). Everything else in this package is private.

Imports `kernel`, `db` and `errors` from the shim (and pyroute2, lazily: its import costs
a quarter of a second); the runtime and the daemon import this package.
"""

from dockyard_shim.network.attachment import Attachment, Orphans, attach, detach, remove_orphans
from dockyard_shim.network.bridge import ensure_bridge, remove_bridge
from dockyard_shim.network.config import (
    DEFAULT_BRIDGE,
    DEFAULT_MTU,
    DEFAULT_SUBNET,
    NetworkConfig,
    host_veth_name,
)
from dockyard_shim.network.ipam import Ipam
from dockyard_shim.network.ports import PortForwarder, PortProtocol

__all__ = [
    "DEFAULT_BRIDGE", "DEFAULT_MTU", "DEFAULT_SUBNET", "Attachment", "Ipam", "NetworkConfig",
    "Orphans", "PortForwarder", "PortProtocol", "attach", "detach", "ensure_bridge",
    "host_veth_name", "remove_bridge", "remove_orphans",
]
