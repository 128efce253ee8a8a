"""The cgroup v1 driver: one directory per controller hierarchy for each cgroup.

Layout: `<mount of controller>/<parent>/<name>` for each controller the driver uses
(memory, cpu, cpuacct, pids, freezer), and in the devices hierarchy; controllers co-mounted
in one hierarchy (the common `cpu,cpuacct`) share one directory. Mount points come from the
caller (see `detect`), never from a hard-coded list. cpuset and blkio are left out: a cpuset
child is unusable until its cpus and mems are filled in.

Devices: a cgroup is created with Docker's default device rules (`devices`), written
before any process can join it, so a container keeping CAP_MKNOD still cannot open a disk,
/dev/mem or /dev/kmsg through a node it makes. The devices hierarchy is a policy, not a
resource: it is not among `controllers` (no `Limits` field needs it) and a host without it
gets no device rules (every supported kernel has it).

Files (Documentation/admin-guide/cgroup-v1/): `memory.limit_in_bytes` and, when the
kernel accounts swap, `memory.memsw.limit_in_bytes` set to the same value (memory and
swap together, as the v2 driver's `memory.swap.max` 0; see there for why);
`cpu.cfs_period_us` and `cpu.cfs_quota_us` (-1 for no quota), `cpu.shares`, `pids.max`;
usage from `memory.usage_in_bytes`, `cpuacct.usage` (ns), `pids.current`, and the
`oom_kill` line of `memory.oom_control` (Linux 4.13+). Freezing polls `freezer.state`
until it reads FROZEN. v1 has no cgroup.kill, so kill_all freezes, signals every process
and thaws, until the cgroup is empty.

A process can be in different cgroups in different hierarchies; `pids` is the union, so
`kill_all` also reaches a process someone moved in only partway.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Final

from dockyard_shim.cgroups.base import (
    CPU_PERIOD_US,
    CPU_SHARES_DEFAULT,
    DEFAULT_PARENT,
    DELETE_TIMEOUT,
    FREEZE_TIMEOUT,
    KILL_TIMEOUT,
    Cgroup,
    CgroupDriver,
    Limits,
    Stats,
    check_controllers,
    check_name,
)
from dockyard_shim.cgroups.devices import v1_writes
from dockyard_shim.cgroups.fs import (
    CgroupDir,
    CgroupFs,
    kill_until_empty,
    make_dirs,
    parse_keyed,
    parse_pids,
    remove_dir,
    wait_until,
    write_pid,
)
from dockyard_shim.errors import AlreadyExistsError, NotFoundError, UnavailableError

CONTROLLERS: Final = ("memory", "cpu", "cpuacct", "pids", "freezer")
"""The v1 controllers the driver uses, each in the hierarchy that carries it."""
DEVICES: Final = "devices"
"""The device cgroup's hierarchy: every cgroup is in it too, with the default rules."""

# The kernel reports "no limit" as its page counter maximum in bytes (PAGE_COUNTER_MAX *
# PAGE_SIZE: 9223372036854771712 with 4 KiB pages); no real limit comes near 2**62.
_UNLIMITED_FLOOR = 2**62
_MEMORY = "memory.limit_in_bytes"
_MEMSW = "memory.memsw.limit_in_bytes"


class V1Driver(CgroupDriver):
    """Cgroups in the v1 hierarchies mounted at `hierarchies` (controller -> mount)."""

    version = 1

    def __init__(
        self,
        hierarchies: Mapping[str, Path | str],
        parent: str = DEFAULT_PARENT,
        fs: CgroupFs | None = None,
    ) -> None:
        super().__init__(parent)
        self.hierarchies: Final = {
            controller: Path(mount) for controller, mount in hierarchies.items()
            if controller in CONTROLLERS
        }
        if not self.hierarchies:
            raise UnavailableError(
                "no cgroup v1 hierarchy carries any of " + ", ".join(CONTROLLERS)
            )
        devices = hierarchies.get(DEVICES)
        self.devices_mount: Final = None if devices is None else Path(devices)
        self.fs: Final = fs if fs is not None else CgroupFs()

    def __repr__(self) -> str:
        return f"V1Driver({self.mounts()!r}, parent={self.parent!r})"

    @property
    def controllers(self) -> frozenset[str]:
        return frozenset(self.hierarchies)

    def mounts(self) -> list[Path]:
        """The distinct hierarchy mount points in use, each once: the controllers', then
        the devices hierarchy's."""
        extra = [] if self.devices_mount is None else [self.devices_mount]
        return list(dict.fromkeys([*self.hierarchies.values(), *extra]))

    def create(self, name: str) -> V1Cgroup:
        if self.exists(name):
            raise AlreadyExistsError(f"cgroup {self.parent}/{name} exists already")
        for mount in self.mounts():
            make_dirs(self.fs, mount, self.parent)
            try:
                self.fs.mkdir(mount / self.parent / name)
            except FileExistsError as e:
                raise AlreadyExistsError(f"cgroup {self.parent}/{name} exists already") from e
            except OSError as e:
                raise UnavailableError(f"cannot create cgroup {self.parent}/{name}: {e}") from e
        cgroup = V1Cgroup(self, name)
        cgroup.restrict_devices()
        return cgroup

    def load(self, name: str) -> V1Cgroup:
        check_name(name)
        missing = [mount for mount in self.mounts()
                   if not self.fs.is_dir(mount / self.parent / name)]
        if len(missing) == len(self.mounts()):
            raise NotFoundError(f"cgroup {self.parent}/{name} does not exist")
        # A crash between the mkdirs of `create` leaves some hierarchies without the
        # directory; complete them so every operation sees the whole cgroup.
        for mount in missing:
            make_dirs(self.fs, mount, f"{self.parent}/{name}")
        cgroup = V1Cgroup(self, name)
        if self.devices_mount in missing:
            cgroup.restrict_devices()  # a device cgroup made now starts with the parent's
        return cgroup

    def exists(self, name: str) -> bool:
        check_name(name)
        return any(self.fs.is_dir(mount / self.parent / name) for mount in self.mounts())

    def names(self) -> list[str]:
        found: set[str] = set()
        for mount in self.mounts():
            found.update(self.fs.subdirs(mount / self.parent))
        return sorted(found)

    def delete_parent(self) -> None:
        for mount in self.mounts():
            parent = CgroupDir(self.fs, mount / self.parent, self.parent)
            remove_dir(self.fs, parent.path, self.parent, partial(_has_procs, parent), 0.0)


class V1Cgroup(Cgroup):
    """One cgroup, with a directory in each hierarchy its driver uses."""

    def __init__(self, driver: V1Driver, name: str) -> None:
        super().__init__(name, driver.parent)
        self._controllers: Final = driver.controllers
        self._dirs: Final = {
            mount: CgroupDir(driver.fs, mount / driver.parent / name, self.path)
            for mount in driver.mounts()
        }
        self._by_controller: Final = {
            controller: self._dirs[mount] for controller, mount in driver.hierarchies.items()
        }
        self._devices: Final = (None if driver.devices_mount is None
                                else self._dirs[driver.devices_mount])

    @property
    def paths(self) -> list[Path]:
        """The cgroup's directory in each hierarchy."""
        return [directory.path for directory in self._dirs.values()]

    @property
    def hierarchy_dirs(self) -> dict[str, Path]:
        """The cgroup's directory by hierarchy name (`memory`, `cpu,cpuacct`…): the name of
        the hierarchy's mount point, as a container sees it under /sys/fs/cgroup."""
        return {mount.name: directory.path for mount, directory in self._dirs.items()}

    def restrict_devices(self) -> None:
        """Give the cgroup Docker's default device rules (`devices.DEFAULT_RULES`)."""
        if self._devices is None:
            return
        for file, text in v1_writes():
            self._devices.write(file, text)

    def _dir(self, controller: str) -> CgroupDir:
        directory = self._by_controller.get(controller)
        if directory is None:
            raise UnavailableError(
                f"the {controller} cgroup controller is not mounted on this host"
                f" (cgroup {self.path})"
            )
        return directory

    def set_limits(self, limits: Limits) -> None:
        check_controllers(limits, self._controllers, self.path)
        if "memory" in self._controllers:
            self._set_memory(self._dir("memory"), limits.memory_bytes)
        if "cpu" in self._controllers:
            cpu = self._dir("cpu")
            quota = limits.cpu_quota_us
            cpu.write("cpu.cfs_period_us", str(CPU_PERIOD_US),
                      field="cpu_millis", value=limits.cpu_millis)
            cpu.write("cpu.cfs_quota_us", "-1" if quota is None else str(quota),
                      field="cpu_millis", value=limits.cpu_millis)
            shares = limits.cpu_shares
            cpu.write("cpu.shares", str(CPU_SHARES_DEFAULT if shares is None else shares),
                      field="cpu_shares", value=shares)
        if "pids" in self._controllers:
            pids = limits.pids_max
            self._dir("pids").write("pids.max", "max" if pids is None else str(pids),
                                    field="pids_max", value=pids)

    def _set_memory(self, memory: CgroupDir, limit: int | None) -> None:
        target = "-1" if limit is None else str(limit)
        if not memory.has(_MEMSW):
            memory.write(_MEMORY, target, field="memory_bytes", value=limit)
            return
        # The kernel keeps limit_in_bytes <= memsw.limit_in_bytes at every moment (EINVAL
        # otherwise), so a rising limit goes to memsw first and a falling one last.
        rising = limit is None or limit >= memory.read_int(_MEMORY)
        for file in (_MEMSW, _MEMORY) if rising else (_MEMORY, _MEMSW):
            memory.write(file, target, field="memory_bytes", value=limit)

    def add_process(self, pid: int) -> None:
        for directory in self._dirs.values():
            write_pid(directory, pid)

    def join_files(self) -> list[Path]:
        return [directory.path / "tasks" for directory in self._dirs.values()]

    def pids(self) -> list[int]:
        found: set[int] = set()
        for directory in self._dirs.values():
            found |= parse_pids(directory.read("cgroup.procs"))
        return sorted(found)

    def stats(self) -> Stats:
        memory = self._by_controller.get("memory")
        cpuacct = self._by_controller.get("cpuacct")
        pids = self._by_controller.get("pids")
        limit = None if memory is None else memory.read_int(_MEMORY)
        return Stats(
            memory_bytes=None if memory is None else memory.read_int("memory.usage_in_bytes"),
            memory_limit_bytes=None if limit is None or limit >= _UNLIMITED_FLOOR else limit,
            cpu_usage_ns=None if cpuacct is None else cpuacct.read_int("cpuacct.usage"),
            # Without the pids controller, count the tasks as pids.current would (runc).
            pids_current=(
                pids.read_int("pids.current") if pids is not None
                else len(next(iter(self._dirs.values())).read("tasks").split())
            ),
            oom_kills=None if memory is None else self._oom_kills(memory),
        )

    def oom_kills(self) -> int:
        kills = self._oom_kills(self._dir("memory"))
        if kills is None:
            raise UnavailableError(
                "memory.oom_control has no oom_kill counter: the kernel is older than 4.13"
            )
        return kills

    def _oom_kills(self, memory: CgroupDir) -> int | None:
        return parse_keyed(memory.read("memory.oom_control")).get("oom_kill")

    def freeze(self, timeout: float = FREEZE_TIMEOUT) -> None:
        freezer = self._dir("freezer")
        freezer.write("freezer.state", "FROZEN")
        # FREEZING until every task has stopped; only FROZEN means it is done.
        if not wait_until(self.is_frozen, timeout):
            self.thaw()
            raise UnavailableError(f"cgroup {self.path} did not freeze within {timeout:g}s")

    def thaw(self) -> None:
        self._dir("freezer").write("freezer.state", "THAWED")

    def is_frozen(self) -> bool:
        freezer = self._by_controller.get("freezer")
        return freezer is not None and freezer.read("freezer.state") == "FROZEN"

    def kill_all(self, timeout: float = KILL_TIMEOUT) -> None:
        if "freezer" not in self._controllers:
            kill_until_empty(self.path, self.pids, None, None, timeout)
            return
        try:
            kill_until_empty(self.path, self.pids, self._try_freeze, self.thaw, timeout)
        finally:
            self.thaw()

    def _try_freeze(self) -> None:
        self.freeze(timeout=1.0)

    def delete(self, timeout: float = DELETE_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for directory in self._dirs.values():
            remove_dir(directory.fs, directory.path, self.path, partial(_has_procs, directory),
                       max(0.0, deadline - time.monotonic()))


def _has_procs(directory: CgroupDir) -> bool:
    return bool(directory.read("cgroup.procs"))
