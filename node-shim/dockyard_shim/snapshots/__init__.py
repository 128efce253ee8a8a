"""Snapshots: copy-on-write filesystem states for image layers and container rootfs.

The containerd model: `prepare` an active snapshot on a committed parent, write into it,
`commit` it under a name (a layer's chain id) or `remove` it; `view` for read-only looks.
Mounts come back as data for the caller to perform. `Snapshotter` is the contract,
`OverlaySnapshotter` the overlayfs implementation with SQLite metadata.

Imports only `mounts` and `errors` from the shim: it never mounts, unpacks or pulls.
"""

from dockyard_shim.snapshots.api import Info, Kind, SnapshotKey, Snapshotter, Usage
from dockyard_shim.snapshots.overlay import PAGE_SIZE, OverlaySnapshotter

__all__ = ["PAGE_SIZE", "Info", "Kind", "OverlaySnapshotter", "SnapshotKey", "Snapshotter",
           "Usage"]
