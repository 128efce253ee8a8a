"""The container's filesystem plan: what is mounted, created and hidden, as data.

`plan` returns the mounts (relative to the new root), device nodes and symlinks that make
up what a Docker container sees: /proc, a tmpfs /dev with the minimal device set, /dev/pts,
/dev/shm, /dev/mqueue, a read-only /sys, and runc's masked and read-only paths. Performing
the plan happens in `dockyard_shim.runtime.spawn`, inside the container's mount namespace.

Pure data: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from dockyard_shim.mounts import Mount

# Docker's default masked paths (files get /dev/null bound over them, directories an empty
# read-only tmpfs) and read-only paths: kernel interfaces a container must not read or write.
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


@dataclass(frozen=True)
class Device:
    """A character device node to create in the container's /dev."""

    path: str
    major: int
    minor: int
    mode: int = 0o666


DEVICES = (
    Device("/dev/null", 1, 3), Device("/dev/zero", 1, 5), Device("/dev/full", 1, 7),
    Device("/dev/random", 1, 8), Device("/dev/urandom", 1, 9), Device("/dev/tty", 5, 0),
)
SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
)


@dataclass(frozen=True)
class Plan:
    """Everything set up inside the new root before the process starts."""

    mounts: tuple[Mount, ...]
    devices: tuple[Device, ...]
    symlinks: tuple[tuple[str, str], ...]
    masked: tuple[str, ...]
    readonly: tuple[str, ...]


TTY_GID = 5
"""The `tty` group of Debian, Alpine and Docker's /dev/pts: terminals are its."""


def plan(*, new_netns: bool, cgroup_v2: bool, tty_gid: int = TTY_GID) -> Plan:
    """The standard container filesystem, as Docker sets it up.

    `new_netns`: sysfs can be mounted fresh only in a network namespace of the container's
    own; with the host's network the host /sys is bound read-only instead, as runc does.
    `cgroup_v2`: in a cgroup namespace the container's own cgroup2 tree is mounted
    read-only at /sys/fs/cgroup (cgroup v1 hierarchies are not shown yet).
    `tty_gid`: the node's gid of the container's tty group (another with a user namespace).
    """
    nosuid_nodev_noexec = ("nosuid", "nodev", "noexec")
    mounts = [
        Mount("proc", "proc", "/proc", nosuid_nodev_noexec),
        Mount("tmpfs", "tmpfs", "/dev", ("nosuid", "strictatime", "mode=755", "size=65536k")),
        Mount("devpts", "devpts", "/dev/pts",
              ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
               f"gid={tty_gid}")),
        Mount("tmpfs", "shm", "/dev/shm",  # noqa: S108 -- the container's own /dev/shm
              (*nosuid_nodev_noexec, "mode=1777", "size=65536k")),
        Mount("mqueue", "mqueue", "/dev/mqueue", nosuid_nodev_noexec),
        Mount("sysfs", "sysfs", "/sys", ("ro", *nosuid_nodev_noexec)) if new_netns
        else Mount("bind", "/sys", "/sys", ("rbind", "ro", *nosuid_nodev_noexec, "rslave")),
    ]
    if cgroup_v2:
        mounts.append(Mount("cgroup2", "cgroup", "/sys/fs/cgroup",
                            ("ro", *nosuid_nodev_noexec, "relatime")))
    return Plan(tuple(mounts), DEVICES, SYMLINKS, MASKED_PATHS, READONLY_PATHS)
