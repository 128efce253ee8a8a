"""Platforms (`linux/amd64`, `linux/arm/v7`) and the choice of a manifest from an index.

This node's platform is `linux` plus `os.uname().machine` mapped to the GOARCH names that
OCI uses (x86_64 is amd64, aarch64 is arm64). Matching follows containerd's defaults: the
os and the architecture must be equal; an arm64 `v8` variant is the same as none; a 32-bit
arm node runs its own variant and older ones (v7 runs v6 and v5), preferring the newest.

Pure computation, except `node_platform`, which asks the kernel.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

_MACHINES = {
    "x86_64": ("amd64", None), "amd64": ("amd64", None),
    "aarch64": ("arm64", None), "arm64": ("arm64", None),
    "armv8l": ("arm", "v8"), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
    "i386": ("386", None), "i686": ("386", None),
    "ppc64le": ("ppc64le", None), "s390x": ("s390x", None), "riscv64": ("riscv64", None),
}

T = TypeVar("T")
# An arm variant's number: ASCII digits only (str.isdigit() admits "²", which int() refuses),
# and few of them (int() refuses more than 4300).
_VERSION = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class Platform:
    """An OCI platform: os, architecture and, for some architectures, a variant."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def normalized(self) -> Platform:
        """The same platform as containerd would spell it (`arm64/v8` is `arm64`)."""
        arch, variant = self.architecture.lower(), (self.variant or "").lower() or None
        arch, implied = _MACHINES.get(arch, (arch, variant))
        variant = variant or implied
        if arch == "arm64" and variant == "v8":
            variant = None
        return Platform(self.os.lower(), arch, variant)


def node_platform() -> Platform:
    """The platform of this machine."""
    machine = os.uname().machine
    arch, variant = _MACHINES.get(machine, (machine, None))
    return Platform("linux", arch, variant)


def _rank(want: Platform, have: Platform) -> int | None:
    """How well `have` fits a node of platform `want`: higher is better, None is no fit."""
    want, have = want.normalized(), have.normalized()
    if (want.os, want.architecture) != (have.os, have.architecture):
        return None
    if want.variant == have.variant:
        return 100
    if want.architecture == "arm" and want.variant and have.variant:
        mine, theirs = want.variant.lstrip("v"), have.variant.lstrip("v")
        if _VERSION.fullmatch(mine) and _VERSION.fullmatch(theirs) and int(theirs) <= int(mine):
            return int(theirs)  # an older arm variant runs, the newest of them is best
        return None
    if have.variant is None or (want.architecture == "amd64" and have.variant == "v1"):
        return 50  # no variant given: the baseline of the architecture
    return None


def select(want: Platform, candidates: Sequence[tuple[Platform, T]]) -> T | None:
    """The candidate that best fits `want`; the first among equals; None when none fits."""
    best: tuple[int, T] | None = None
    for platform, value in candidates:
        rank = _rank(want, platform)
        if rank is not None and (best is None or rank > best[0]):
            best = (rank, value)
    return None if best is None else best[1]
