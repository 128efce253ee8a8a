"""Volumes: data that outlives containers, bind-mounted into them with zero overhead.

- `VolumeRecord`, `Kind`: what a volume is (local, hostPath, tmpfs, provider).
- `VolumeStore`: the node's volumes (create, get, list, remove, prune, where the data is).
- `HostPaths`: which host directories containers may have (the node's allowlist, and the
  paths refused whatever it says).

Imports `kernel`, `db`, `background` and `errors` from the shim; the runtime and the CLI import it.
"""

from dockyard_shim.volumes.model import (
    HostPaths,
    Kind,
    VolumeRecord,
    check_name,
    check_subpath,
    volumes_in_use,
)
from dockyard_shim.volumes.store import VolumeStore

__all__ = ["HostPaths", "Kind", "VolumeRecord", "VolumeStore", "check_name", "check_subpath",
           "volumes_in_use"]
