"""Cgroups for the node shim: one interface, a v1 and a v2 driver, and host detection.

Use `detect()` for the driver that fits this host, then `create`, `load`, `exists` and
`names` on it; a `Cgroup` handle applies `Limits`, adds processes, reports `Stats`, counts
OOM kills, freezes, kills and deletes. Errors are the shim's categories
(`dockyard_shim.errors`). Everything else in this package is private.
"""

from __future__ import annotations

from dockyard_shim.cgroups.base import (
    DEFAULT_PARENT,
    Cgroup,
    CgroupDriver,
    Limits,
    Stats,
    cpu_shares_to_weight,
)
from dockyard_shim.cgroups.detect import (
    CgroupMount,
    CgroupMounts,
    detect,
    driver_for,
    parse_mountinfo,
)
from dockyard_shim.cgroups.fs import CgroupFs
from dockyard_shim.cgroups.v1 import V1Cgroup, V1Driver
from dockyard_shim.cgroups.v2 import V2Cgroup, V2Driver

__all__ = [
    "DEFAULT_PARENT",
    "Cgroup",
    "CgroupDriver",
    "CgroupFs",
    "CgroupMount",
    "CgroupMounts",
    "Limits",
    "Stats",
    "V1Cgroup",
    "V1Driver",
    "V2Cgroup",
    "V2Driver",
    "cpu_shares_to_weight",
    "detect",
    "driver_for",
    "parse_mountinfo",
]
