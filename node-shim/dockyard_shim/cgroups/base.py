"""The cgroups interface: value types, the driver and handle contracts, unit conversions.

A `CgroupDriver` owns one kind of cgroup filesystem (v1's one-hierarchy-per-controller or
v2's unified tree) and hands out `Cgroup` handles for `<parent>/<name>`, where `parent`
(default `dockyard`) is a directory the driver keeps for Dockyard's containers. Every
driver keeps the same contract, which one conformance suite checks against both:

- `create` makes the cgroup (and its parent) and refuses a name in use; `load` finds an
  existing one after a daemon restart; `exists` and `names` inspect without side effects.
- `Limits` is the whole desired state: `set_limits` writes every limit, and a `None` field
  restores the kernel's default (unlimited, or the default weight). So the same call
  creates and updates.
- `delete` is idempotent: deleting a deleted cgroup is not an error. Any other operation on
  a cgroup that is gone raises `NotFoundError`.
- A limit the host cannot enforce (its controller is missing) raises `UnavailableError`
  naming the controller; a limit the kernel refuses raises `InvalidArgumentError` naming
  the `Limits` field and the value.

Paths are relative to the mount points handed to the driver; a driver never reads the
caller's own cgroup, so it behaves the same inside and outside a cgroup namespace.

Value types and conversions here are pure data; the abstract classes do no I/O.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final

from dockyard_shim.errors import InvalidArgumentError, UnavailableError

DEFAULT_PARENT: Final = "dockyard"
"""The directory, under each hierarchy's mount point, that holds Dockyard's cgroups."""

CPU_PERIOD_US: Final = 100_000
"""The CFS period every driver writes: 100 ms, the kernel's and Docker's default."""

CPU_SHARES_MIN: Final = 2
CPU_SHARES_MAX: Final = 262_144
CPU_SHARES_DEFAULT: Final = 1024
CPU_WEIGHT_MIN: Final = 1
CPU_WEIGHT_MAX: Final = 10_000
CPU_WEIGHT_DEFAULT: Final = 100

FREEZE_TIMEOUT: Final = 5.0
KILL_TIMEOUT: Final = 5.0
DELETE_TIMEOUT: Final = 2.0

# One path component of a cgroup name. A leading dot or a slash could collide with the
# kernel's interface files or climb out of the parent; container ids and names fit easily.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True, slots=True)
class Limits:
    """The resource limits of one cgroup; `None` means unlimited (or the default weight).

    `memory_bytes` caps memory and swap together: a container never swaps beyond its
    limit (see the drivers). `cpu_millis` is a CFS quota in thousandths of a CPU over a
    100 ms period (500 = half a CPU). `cpu_shares` is a relative weight in cgroup v1 units
    (2..262144, default 1024), converted for v2 by `cpu_shares_to_weight`. `pids_max`
    caps the tasks (processes and threads) in the cgroup.
    """

    memory_bytes: int | None = None
    cpu_millis: int | None = None
    cpu_shares: int | None = None
    pids_max: int | None = None

    def __post_init__(self) -> None:
        _check_int("memory_bytes", self.memory_bytes, 1, 2**63 - 1)
        # The kernel caps a CFS quota at roughly 2**44 us; 1e9 millicores is far above any
        # machine and keeps the quota an int64.
        _check_int("cpu_millis", self.cpu_millis, 1, 10**9)
        _check_int("cpu_shares", self.cpu_shares, CPU_SHARES_MIN, CPU_SHARES_MAX)
        _check_int("pids_max", self.pids_max, 1, 2**31 - 1)

    @property
    def cpu_quota_us(self) -> int | None:
        """The CFS quota in microseconds per `CPU_PERIOD_US` (500 millis -> 50000)."""
        if self.cpu_millis is None:
            return None
        return self.cpu_millis * CPU_PERIOD_US // 1000


@dataclass(frozen=True, slots=True)
class Stats:
    """What a cgroup uses now, as the kernel counts it.

    A field is `None` when this host gives the driver no controller to count it with
    (the memory controller missing, for example); `memory_limit_bytes` is also `None`
    when memory is unlimited. `memory_bytes` includes the page cache, as the kernel's
    usage counters do. `pids_current` counts tasks (threads included), like `pids.max`.
    """

    memory_bytes: int | None
    memory_limit_bytes: int | None
    cpu_usage_ns: int | None
    pids_current: int
    oom_kills: int | None


def cpu_shares_to_weight(shares: int) -> int:
    """Convert v1 `cpu.shares` (2..262144) to v2 `cpu.weight` (1..10000).

    The formula of opencontainers/cgroups (runc PR #4785) and crun (issue #1721), adopted
    after kubernetes/kubernetes#131216: a quadratic in log2(shares) through the three
    points that matter, so min maps to min, max to max and the default 1024 to the
    default 100. The older linear formula, `1 + (shares - 2) * 9999 // 262142`, mapped
    1024 to 39, starving containers next to processes at the v2 default weight.
    """
    if shares <= CPU_SHARES_MIN:
        return CPU_WEIGHT_MIN
    if shares >= CPU_SHARES_MAX:
        return CPU_WEIGHT_MAX
    exponent_of_2 = math.log2(shares)
    exponent = (exponent_of_2**2 + 125 * exponent_of_2) / 612.0 - 7.0 / 34.0
    return min(CPU_WEIGHT_MAX, math.ceil(10**exponent))


def check_name(name: str, what: str = "cgroup name") -> str:
    """Return `name` if it is one safe path component, else raise InvalidArgumentError."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise InvalidArgumentError(
            f"{what} {name!r} is not allowed: use 1 to 128 letters, digits, '_', '.' or '-',"
            " starting with a letter or digit"
        )
    return name


def check_parent(parent: str) -> str:
    """Return `parent` if every `/`-separated component is a safe name."""
    for component in parent.split("/"):
        check_name(component, "cgroup parent component")
    return parent


def _check_int(field: str, value: int | None, low: int, high: int) -> None:
    if value is None:
        return
    # bool is an int in Python; `True` bytes of memory is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{field} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise InvalidArgumentError(f"{field}={value} is out of range {low}..{high}")


class Cgroup(ABC):
    """A handle on one cgroup, `<parent>/<name>`, in every hierarchy its driver uses.

    A handle holds no kernel state: two handles for the same name act on the same cgroup,
    and a handle outlives a restart of the daemon if it is re-made with `load`.
    """

    def __init__(self, name: str, parent: str) -> None:
        self.name: Final = name
        self.path: Final = f"{parent}/{name}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"

    @abstractmethod
    def set_limits(self, limits: Limits) -> None:
        """Write every limit in `limits`; a `None` field restores the kernel default.

        Controllers are written one after another; if the kernel refuses one, those
        written before it stay applied (as in runc) and the error names the refused field.
        """

    @abstractmethod
    def add_process(self, pid: int) -> None:
        """Move process `pid` (all its threads) into this cgroup.

        Raises NotFoundError when there is no such process (or no such cgroup).
        """

    @abstractmethod
    def join_files(self) -> list[Path]:
        """The files a single-threaded process writes "0" to, in turn, to move itself in.

        How a container's first process joins its cgroup before exec. With v1 these are
        the `tasks` files: moving just the calling thread spares the kernel its global
        threadgroup lock, whose first use after an idle spell waits for an RCU grace period
        (about 12 ms). A freshly forked process has a single thread.
        """

    @abstractmethod
    def pids(self) -> list[int]:
        """The processes in this cgroup, sorted; exited ones (zombies) are not listed."""

    @abstractmethod
    def stats(self) -> Stats:
        """Usage counters and the memory limit now."""

    @abstractmethod
    def oom_kills(self) -> int:
        """How many processes the OOM killer has killed in this cgroup so far.

        Raises UnavailableError naming `memory` when the memory controller is missing.
        """

    @abstractmethod
    def freeze(self, timeout: float = FREEZE_TIMEOUT) -> None:
        """Stop every process and return once the kernel reports the cgroup frozen.

        If it is not frozen within `timeout` seconds, it is thawed again and
        UnavailableError is raised, so a failed pause never leaves a half-frozen cgroup.
        """

    @abstractmethod
    def thaw(self) -> None:
        """Let the processes run again; thawing a thawed cgroup does nothing."""

    @abstractmethod
    def is_frozen(self) -> bool:
        """Whether the kernel reports this cgroup frozen."""

    @abstractmethod
    def kill_all(self, timeout: float = KILL_TIMEOUT) -> None:
        """SIGKILL every process and return once the cgroup is empty; it is left thawed.

        Raises UnavailableError if processes remain after `timeout` seconds.
        """

    @abstractmethod
    def delete(self, timeout: float = DELETE_TIMEOUT) -> None:
        """Remove the cgroup from every hierarchy; deleting a missing cgroup is a no-op.

        Exiting processes keep a cgroup busy for a moment, so removal is retried while
        the kernel still shows it populated, for up to `timeout` seconds; after that, or
        when it holds child cgroups, FailedPreconditionError is raised (kill_all first).
        """


class CgroupDriver(ABC):
    """Creates, finds and lists the cgroups under one parent, on one kind of cgroupfs."""

    version: ClassVar[int]
    """1 for the v1 hierarchies, 2 for the unified hierarchy."""

    def __init__(self, parent: str) -> None:
        self.parent: Final = check_parent(parent)

    @property
    @abstractmethod
    def controllers(self) -> frozenset[str]:
        """The controllers this driver can use here: some of memory, cpu, pids (and, for
        v1, cpuacct and freezer)."""

    @abstractmethod
    def create(self, name: str) -> Cgroup:
        """Create `<parent>/<name>` (and the parent); AlreadyExistsError if it exists."""

    @abstractmethod
    def load(self, name: str) -> Cgroup:
        """The existing cgroup `<parent>/<name>`; NotFoundError if there is none."""

    @abstractmethod
    def exists(self, name: str) -> bool:
        """Whether `<parent>/<name>` exists."""

    @abstractmethod
    def names(self) -> list[str]:
        """The names of the cgroups under the parent, sorted."""

    @abstractmethod
    def delete_parent(self) -> None:
        """Remove the (last component of the) parent itself, for uninstalls and tests.

        A no-op when it is missing; FailedPreconditionError while it still has cgroups.
        """


def required_controllers(limits: Limits) -> dict[str, list[str]]:
    """The controllers needed to enforce the fields of `limits` that are set, each with
    the fields (`name=value`) that need it."""
    needed: dict[str, list[str]] = {}
    for controller, field in (("memory", "memory_bytes"), ("cpu", "cpu_millis"),
                              ("cpu", "cpu_shares"), ("pids", "pids_max")):
        value = getattr(limits, field)
        if value is not None:
            needed.setdefault(controller, []).append(f"{field}={value}")
    return needed


def check_controllers(limits: Limits, available: frozenset[str], label: str) -> None:
    """Raise UnavailableError naming each controller `limits` needs that is missing.

    Checked before anything is written, so a refused request changes nothing.
    """
    needed = required_controllers(limits)
    missing = sorted(set(needed) - available)
    if missing:
        fields = ", ".join(f for controller in missing for f in needed[controller])
        raise UnavailableError(
            f"the {' and '.join(missing)} cgroup controller{'s are' if len(missing) > 1 else ' is'}"
            f" not available for cgroup {label} on this host, so {fields} cannot be enforced"
        )
