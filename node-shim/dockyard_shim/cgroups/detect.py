"""Which cgroup driver fits this host, decided from /proc/self/mountinfo.

`parse_mountinfo` turns the file's text into data (the cgroup mounts, nothing else) and is
pure, so every layout is unit-tested from sample texts; `detect` reads the file and builds
the driver. The layouts, in systemd's words:

- unified: cgroup2 at /sys/fs/cgroup (every controller there) -> the v2 driver;
- hybrid: v1 hierarchies, plus a cgroup2 tree (usually /sys/fs/cgroup/unified) that
  carries few or no controllers -> the v1 driver, because memory, cpu and pids are bound
  to v1 and the kernel lets a controller serve only one hierarchy;
- legacy: v1 hierarchies only -> the v1 driver.

A v1 hierarchy's controllers are read from its super options (`rw,cpu,cpuacct`), never
assumed from its mount point's name, so co-mounted `cpu,cpuacct` and separate `cpu` and
`cpuacct` mounts both work. Named hierarchies (`name=systemd`) carry no controller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from dockyard_shim.cgroups.base import DEFAULT_PARENT, CgroupDriver
from dockyard_shim.cgroups.fs import CgroupFs
from dockyard_shim.cgroups.v1 import V1Driver
from dockyard_shim.cgroups.v2 import V2Driver
from dockyard_shim.errors import UnavailableError

CGROUP_ROOT: Final = "/sys/fs/cgroup"

Layout = Literal["unified", "hybrid", "legacy", "none"]

# Mount options of a v1 cgroup that are not controllers (mount(2) and cgroup v1 options).
_NOT_CONTROLLERS = frozenset({
    "rw", "ro", "noprefix", "clone_children", "xattr", "cpuset_v2_mode",
    "favordynmods", "nofavordynmods", "none", "all",
})
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class CgroupMount:
    """One cgroup filesystem mount: where, which version, what it carries."""

    mount_point: str
    version: Literal[1, 2]
    controllers: frozenset[str] = field(default_factory=frozenset)
    """v1: the controllers bound to the hierarchy; v2: empty (read cgroup.controllers)."""
    name: str | None = None
    """v1 named hierarchy (`name=systemd`), else None."""
    root: str = "/"
    """The hierarchy path mounted there (not `/` inside a cgroup namespace or a bind)."""


@dataclass(frozen=True, slots=True)
class CgroupMounts:
    """The cgroup mounts of a mount namespace, in mountinfo order."""

    mounts: tuple[CgroupMount, ...]

    @property
    def unified(self) -> CgroupMount | None:
        """The cgroup2 mount: the one at /sys/fs/cgroup if any, else the first."""
        v2 = [mount for mount in self.mounts if mount.version == 2]
        for mount in v2:
            if mount.mount_point == CGROUP_ROOT:
                return mount
        return v2[0] if v2 else None

    def hierarchies(self) -> dict[str, str]:
        """Each v1 controller's mount point; the first mount of a hierarchy wins."""
        found: dict[str, str] = {}
        for mount in self.mounts:
            if mount.version == 1:
                for controller in sorted(mount.controllers):
                    found.setdefault(controller, mount.mount_point)
        return found

    @property
    def layout(self) -> Layout:
        unified = self.unified
        if unified is not None and unified.mount_point == CGROUP_ROOT:
            return "unified"
        if self.hierarchies():
            return "hybrid" if unified is not None else "legacy"
        # cgroup2 mounted somewhere else and no v1 controller: still a unified host.
        return "unified" if unified is not None else "none"


def parse_mountinfo(text: str) -> CgroupMounts:
    """The cgroup mounts in the text of /proc/<pid>/mountinfo (proc(5)).

    A line is `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE
    SUPER_OPTIONS`; the optional fields vary in number, so the line is split at ` - `.
    """
    mounts: list[CgroupMount] = []
    for line in text.splitlines():
        before, separator, after = line.partition(" - ")
        if not separator:
            continue
        fields, tail = before.split(), after.split()
        if len(fields) < 6 or len(tail) < 2:
            continue
        fstype, super_options = tail[0], tail[2] if len(tail) > 2 else ""
        root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        if fstype == "cgroup2":
            mounts.append(CgroupMount(mount_point, 2, root=root))
        elif fstype == "cgroup":
            options = super_options.split(",")
            names = [o.removeprefix("name=") for o in options if o.startswith("name=")]
            controllers = frozenset(
                o for o in options if o not in _NOT_CONTROLLERS and "=" not in o
            )
            mounts.append(CgroupMount(
                mount_point, 1, controllers, names[0] if names else None, root
            ))
    return CgroupMounts(tuple(mounts))


def _unescape(text: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as octal escapes.
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def driver_for(
    mounts: CgroupMounts, parent: str = DEFAULT_PARENT, fs: CgroupFs | None = None
) -> CgroupDriver:
    """The driver for `mounts` (no I/O until the driver is used)."""
    layout, unified = mounts.layout, mounts.unified
    if layout == "unified" and unified is not None:
        return V2Driver(Path(unified.mount_point), parent, fs)
    if layout in ("hybrid", "legacy"):
        return V1Driver({c: Path(m) for c, m in mounts.hierarchies().items()}, parent, fs)
    raise UnavailableError("no cgroup filesystem is mounted: mount cgroup2 at /sys/fs/cgroup")


def detect(parent: str = DEFAULT_PARENT, mountinfo: str | None = None) -> CgroupDriver:
    """The driver that fits this host, from /proc/self/mountinfo (or the text given)."""
    if mountinfo is None:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            mountinfo = f.read()
    return driver_for(parse_mountinfo(mountinfo), parent)
