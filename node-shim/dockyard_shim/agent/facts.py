"""What a node agent tells the cluster about its machine: the DockyardNode's status.

Capacity is what the machine has (CPUs the process may run on, MemTotal, the kernel's
pid_max); the scheduler subtracts what it places. A test may pretend to be a smaller
machine (`capacity=`), as three agents on one machine do.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from typing import Any

from dockyard_common.version import version
from dockyard_shim.cgroups import detect


def machine_capacity() -> dict[str, Any]:
    """`{"cpu": "4", "memory": "16323456Ki", "pids": 4194304}` for this machine."""
    memory_kib = 0
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
                break
    with open("/proc/sys/kernel/pid_max", encoding="ascii") as pid_max:
        pids = int(pid_max.read())
    return {"cpu": str(len(os.sched_getaffinity(0))), "memory": f"{memory_kib}Ki",
            "pids": pids}


def node_status(*, address: str = "", capacity: Mapping[str, Any] | None = None
                ) -> dict[str, Any]:
    """The status a registering agent writes (phase Ready)."""
    return {
        "phase": "Ready",
        "capacity": dict(capacity) if capacity is not None else machine_capacity(),
        "cgroupVersion": detect().version,
        "kernelVersion": platform.release(),
        "runtimeVersion": f"dockyard {version()}",
        "architecture": _ARCHITECTURES.get(platform.machine(), platform.machine()),
        "address": address,
    }


# uname's machine names as OCI platforms name them.
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
