"""The cgroup v2 driver: one unified tree, one directory per cgroup.

Layout: `<mount>/<parent>/<name>`, the mount usually `/sys/fs/cgroup`. A v2 child only
gets the controllers its parent enables in `cgroup.subtree_control`, so `create` enables
memory, cpu and pids on every level from the mount down to the parent, only those the
level offers in `cgroup.controllers` (a controller bound to a v1 hierarchy is not
offered; the limits that need it are then refused as unavailable, not silently dropped).

Files (Documentation/admin-guide/cgroup-v2.rst): `memory.max` and `memory.swap.max`,
`cpu.max` ("QUOTA PERIOD", `max` for no quota), `cpu.weight`, `pids.max`, with `max`
for unlimited; usage from `memory.current`, `cpu.stat` (`usage_usec`, a core file that
needs no controller), `pids.current`, `memory.events` (`oom_kill`). Freezing and killing
use the core files `cgroup.freeze`, `cgroup.events` and `cgroup.kill` (Linux 5.14+;
older kernels fall back to signalling every process).

Swap: a memory limit sets `memory.swap.max` to 0, so the limit is memory and swap
together. Docker's default would allow as much swap again (memory-swap = 2 x memory);
we follow Kubernetes instead (kubelet's default NoSwap behaviour), because a Container's
`resources.memory` is a Kubernetes-style limit: the container is OOM-killed at the limit
rather than slowed by swapping first. The v1 driver matches it with memsw.

Devices: every cgroup gets Docker's default device rules as an eBPF program
(`devices.bpf_program`, attached by `bpf`) before any process joins it; a kernel that
cannot load it fails the create rather than run a container without device rules.

This driver does not talk to systemd: on a systemd host, the parent is a plain directory
beside systemd's slices, as with runc's cgroupfs driver.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Final

from dockyard_shim.cgroups.base import (
    CPU_PERIOD_US,
    CPU_WEIGHT_DEFAULT,
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
    cpu_shares_to_weight,
)
from dockyard_shim.cgroups.devices import bpf_program
from dockyard_shim.cgroups.fs import (
    CgroupDir,
    CgroupFs,
    kill_until_empty,
    make_dirs,
    parse_int,
    parse_keyed,
    parse_pids,
    remove_dir,
    wait_until,
    write_pid,
)
from dockyard_shim.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    NotFoundError,
    UnavailableError,
)

CONTROLLERS: Final = ("memory", "cpu", "pids")
"""The controllers the driver enables for its cgroups, in the order it writes them."""

_MAX = "max"


class V2Driver(CgroupDriver):
    """Cgroups in the unified hierarchy mounted at `mount`."""

    version = 2

    def __init__(
        self,
        mount: Path | str = Path("/sys/fs/cgroup"),
        parent: str = DEFAULT_PARENT,
        fs: CgroupFs | None = None,
    ) -> None:
        super().__init__(parent)
        self.mount: Final = Path(mount)
        self.fs: Final = fs if fs is not None else CgroupFs()

    def __repr__(self) -> str:
        return f"V2Driver(mount={str(self.mount)!r}, parent={self.parent!r})"

    @property
    def controllers(self) -> frozenset[str]:
        offered = CgroupDir(self.fs, self.mount, "/").read("cgroup.controllers").split()
        return frozenset(offered) & frozenset(CONTROLLERS)

    def create(self, name: str) -> V2Cgroup:
        check_name(name)
        if self.exists(name):
            raise AlreadyExistsError(f"cgroup {self.parent}/{name} exists already")
        level = self.mount
        for component in self.parent.split("/"):
            self._delegate(level)
            level = make_dirs(self.fs, level, component)
        self._delegate(level)
        try:
            self.fs.mkdir(level / name)
        except FileExistsError as e:
            raise AlreadyExistsError(f"cgroup {self.parent}/{name} exists already") from e
        except OSError as e:
            raise UnavailableError(f"cannot create cgroup {self.parent}/{name}: {e}") from e
        try:
            # Before any process can join: the device cgroup of v2 is an eBPF program.
            self.fs.attach_device_program(level / name, bpf_program())
        except BaseException:
            self.fs.rmdir(level / name)
            raise
        return V2Cgroup(self, name)

    def load(self, name: str) -> V2Cgroup:
        if not self.exists(name):
            raise NotFoundError(f"cgroup {self.parent}/{name} does not exist")
        return V2Cgroup(self, name)

    def exists(self, name: str) -> bool:
        return self.fs.is_dir(self.mount / self.parent / check_name(name))

    def names(self) -> list[str]:
        return self.fs.subdirs(self.mount / self.parent)

    def delete_parent(self) -> None:
        parent = CgroupDir(self.fs, self.mount / self.parent, self.parent)
        remove_dir(self.fs, parent.path, self.parent, lambda: _populated(parent), 0.0)

    def _delegate(self, path: Path) -> None:
        """Enable our controllers for the children of `path`, those it offers and lacks."""
        relative = path.relative_to(self.mount)
        level = CgroupDir(self.fs, path, "/" if relative == Path() else f"/{relative}")
        offered = level.read("cgroup.controllers").split()
        enabled = level.read("cgroup.subtree_control").split()
        wanted = [c for c in CONTROLLERS if c in offered and c not in enabled]
        if not wanted:
            return
        text = " ".join(f"+{controller}" for controller in wanted)
        try:
            self.fs.write(path / "cgroup.subtree_control", text)
        except OSError as e:
            if e.errno == errno.EBUSY:
                # The "no internal processes" rule: only a cgroup without processes of
                # its own may hand controllers to its children (cgroup-v2.rst).
                raise FailedPreconditionError(
                    f"cannot enable {text!r} in {path}: it holds processes of its own;"
                    " choose a parent without processes"
                ) from e
            raise level.error(e, "cgroup.subtree_control") from e


class V2Cgroup(Cgroup):
    """One cgroup in the unified hierarchy."""

    def __init__(self, driver: V2Driver, name: str) -> None:
        super().__init__(name, driver.parent)
        self.dir: Final = CgroupDir(driver.fs, driver.mount / driver.parent / name, self.path)

    def enabled_controllers(self) -> frozenset[str]:
        """The controllers the kernel gives this cgroup (its `cgroup.controllers`)."""
        return frozenset(self.dir.read("cgroup.controllers").split())

    def set_limits(self, limits: Limits) -> None:
        enabled = self.enabled_controllers()
        check_controllers(limits, enabled, self.path)
        if "memory" in enabled:
            memory = limits.memory_bytes
            self.dir.write("memory.max", _limit(memory), field="memory_bytes", value=memory)
            # Absent when the kernel does not account swap (swapaccount=0, no CONFIG).
            if self.dir.has("memory.swap.max"):
                swap = _MAX if memory is None else "0"
                self.dir.write("memory.swap.max", swap, field="memory_bytes", value=memory)
        if "cpu" in enabled:
            quota = limits.cpu_quota_us
            self.dir.write(
                "cpu.max", f"{_limit(quota)} {CPU_PERIOD_US}",
                field="cpu_millis", value=limits.cpu_millis,
            )
            shares = limits.cpu_shares
            weight = CPU_WEIGHT_DEFAULT if shares is None else cpu_shares_to_weight(shares)
            self.dir.write("cpu.weight", str(weight), field="cpu_shares", value=shares)
        if "pids" in enabled:
            pids = limits.pids_max
            self.dir.write("pids.max", _limit(pids), field="pids_max", value=pids)

    def add_process(self, pid: int) -> None:
        write_pid(self.dir, pid)

    def join_files(self) -> list[Path]:
        return [self.dir.path / "cgroup.procs"]

    def pids(self) -> list[int]:
        return sorted(parse_pids(self.dir.read("cgroup.procs")))

    def stats(self) -> Stats:
        current = self.dir.read_optional("memory.current")
        limit = self.dir.read_optional("memory.max")
        pids = self.dir.read_optional("pids.current")
        usage_usec = parse_keyed(self.dir.read("cpu.stat")).get("usage_usec")
        return Stats(
            memory_bytes=None if current is None else parse_int(current, "memory.current"),
            memory_limit_bytes=(
                None if limit in (None, _MAX) else parse_int(str(limit), "memory.max")
            ),
            cpu_usage_ns=None if usage_usec is None else usage_usec * 1000,
            # Without the pids controller, count the tasks as pids.current would (runc).
            pids_current=(
                len(self.dir.read("cgroup.threads").split()) if pids is None
                else parse_int(pids, "pids.current")
            ),
            oom_kills=self._oom_kills(),
        )

    def oom_kills(self) -> int:
        kills = self._oom_kills()
        if kills is None:
            raise UnavailableError(
                f"the memory cgroup controller is not available for cgroup {self.path}:"
                " no memory.events to count OOM kills in"
            )
        return kills

    def _oom_kills(self) -> int | None:
        events = self.dir.read_optional("memory.events")
        return None if events is None else parse_keyed(events).get("oom_kill", 0)

    def freeze(self, timeout: float = FREEZE_TIMEOUT) -> None:
        self.dir.write("cgroup.freeze", "1")
        # The write only asks; the kernel reports "frozen 1" in cgroup.events once every
        # task has stopped.
        if not wait_until(self.is_frozen, timeout):
            self.thaw()
            raise UnavailableError(f"cgroup {self.path} did not freeze within {timeout:g}s")

    def thaw(self) -> None:
        self.dir.write("cgroup.freeze", "0")

    def is_frozen(self) -> bool:
        return parse_keyed(self.dir.read("cgroup.events")).get("frozen") == 1

    def kill_all(self, timeout: float = KILL_TIMEOUT) -> None:
        if self.dir.has("cgroup.kill"):
            # One write kills every task, even frozen ones, with no fork race (5.14+).
            self.dir.write("cgroup.kill", "1")
            if not wait_until(lambda: not _populated(self.dir), timeout):
                raise UnavailableError(
                    f"cgroup {self.path} still has processes {timeout:g}s after cgroup.kill"
                )
        else:
            kill_until_empty(self.path, self.pids, self._try_freeze, self.thaw, timeout)
        self.thaw()

    def _try_freeze(self) -> None:
        self.freeze(timeout=1.0)

    def delete(self, timeout: float = DELETE_TIMEOUT) -> None:
        remove_dir(self.dir.fs, self.dir.path, self.path, lambda: _populated(self.dir), timeout)


def _limit(value: int | None) -> str:
    return _MAX if value is None else str(value)


def _populated(directory: CgroupDir) -> bool:
    return parse_keyed(directory.read("cgroup.events")).get("populated") == 1
