"""The device cgroup policy: which device nodes a container may create, read and write.

Docker's default, as data: everything is denied, then a container may `mknod` any
character or block device (so an image can carry device nodes) but open only the
harmless ones: null, zero, full, random, urandom, tty, console, ptmx, the pseudo
terminals (major 136) and tun. A process that keeps CAP_MKNOD (in Docker's default set)
can create `/dev/sda`'s node, but opening it fails with EPERM: the device cgroup, not the
missing node, is what keeps the host's disks, memory (`/dev/mem`) and kernel log
(`/dev/kmsg`) out of reach.

The v1 driver writes these rules to `devices.deny` and `devices.allow`
(Documentation/admin-guide/cgroup-v1/devices.rst). Pure data; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

WILDCARD: Final = -1


@dataclass(frozen=True, slots=True)
class DeviceRule:
    """Allow `access` (some of r, w, m) on devices of `kind` (`c`har, `b`lock or `a`ll)
    with `major`:`minor`; WILDCARD matches any number."""

    kind: Literal["a", "b", "c"]
    major: int
    minor: int
    access: str

    def v1_line(self) -> str:
        """The rule as `devices.allow` takes it: `c 1:3 rwm`, `b *:* m`."""
        if self.kind == "a":
            return "a"
        major = "*" if self.major == WILDCARD else str(self.major)
        minor = "*" if self.minor == WILDCARD else str(self.minor)
        return f"{self.kind} {major}:{minor} {self.access}"


DEFAULT_RULES: Final = (
    DeviceRule("c", WILDCARD, WILDCARD, "m"),   # mknod of any node; opening is another matter
    DeviceRule("b", WILDCARD, WILDCARD, "m"),
    DeviceRule("c", 1, 3, "rwm"),                # /dev/null
    DeviceRule("c", 1, 5, "rwm"),                # /dev/zero
    DeviceRule("c", 1, 7, "rwm"),                # /dev/full
    DeviceRule("c", 1, 8, "rwm"),                # /dev/random
    DeviceRule("c", 1, 9, "rwm"),                # /dev/urandom
    DeviceRule("c", 5, 0, "rwm"),                # /dev/tty
    DeviceRule("c", 5, 1, "rwm"),                # /dev/console
    DeviceRule("c", 5, 2, "rwm"),                # /dev/ptmx
    DeviceRule("c", 136, WILDCARD, "rwm"),       # /dev/pts/*
    DeviceRule("c", 10, 200, "rwm"),             # /dev/net/tun, as Docker allows it
)
"""Docker's default device cgroup (moby's DefaultLinuxSpec), after `deny a`."""


def v1_writes(rules: tuple[DeviceRule, ...] = DEFAULT_RULES) -> list[tuple[str, str]]:
    """The (file, text) writes that give a fresh v1 devices cgroup exactly `rules`: first
    everything denied (a child starts with its parent's list, usually `a *:* rwm`), then
    each rule allowed, one write each (the kernel parses one rule per write)."""
    return [("devices.deny", "a"), *(("devices.allow", rule.v1_line()) for rule in rules)]
