"""User namespaces (`--userns auto`): root in the container is not root on the node.

A container started with a user namespace runs as a block of subordinate ids of the node:
its uid 0 is, say, host uid 231072, its uid 1000 is 232072, and an id outside the block is
nobody (65534). Root that escapes its mounts or its namespaces is an unprivileged user of
the node, owns none of the node's files and holds no capability outside.

Where the ids come from. As Docker's `--userns-remap` and Podman's `--userns=auto`, from
the node's subordinate id ranges (`/etc/subuid`, `/etc/subgid`, see subuid(5)) of the user
`dockyard`. Each container gets a block of its own (65536 ids by default), so two
containers never share an id on the node either; the block is kept in the container's
record and freed when the container is removed.

How the namespace is made and joined (`spawn`, `exec`). The runtime makes the namespace,
with its id maps, before init starts (`create_namespace`): a child process unshares it,
the runtime writes the child's uid_map and gid_map through the verified procfs
(`procfs.write_verified`) and keeps the namespace open as a descriptor. init does
everything else as today, as root of the node: its other namespaces stay owned by the
node's user namespace, so nothing inside can reconfigure them (no mount, no routing, no
hostname, whatever capability it holds inside). Only the ownership of what it makes changes:
it works as the container's root (`setup_identity`), and the image's layers and the
volumes are mounted idmapped (`mounts.clone_tree`), so a file the image says belongs to
root appears as root inside and stays uid 0 on disk (`diff` and `commit` see the
image's own ids). Last, after pivot_root and just before the capabilities are dropped,
init joins the user namespace (`join`); an `exec` joins it after the other namespaces.

Requires idmapped mounts on the filesystems of the layers and volumes (Linux 5.12+;
ext4, xfs, btrfs, tmpfs since 6.3) and overlayfs over idmapped layers (Linux 5.19+).
"""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard_shim.errors import FailedPreconditionError, InvalidArgumentError
from dockyard_shim.kernel import Kernel
from dockyard_shim.kernel import consts as k
from dockyard_shim.runtime import procfs

OWNER = "dockyard"
"""The user whose subordinate ids containers run as."""
BLOCK = 65536
"""Ids per container: the 16-bit id space images are built for."""
MODES = ("host", "auto")


@dataclass(frozen=True)
class IdMap:
    """Container ids 0..size-1 are host uids uid..uid+size-1 and gids gid..gid+size-1."""

    uid: int
    gid: int
    size: int = BLOCK

    def to_json(self) -> dict[str, int]:
        return {"uid": self.uid, "gid": self.gid, "size": self.size}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IdMap:
        return cls(int(data["uid"]), int(data["gid"]), int(data["size"]))

    def host_uid(self, uid: int) -> int:
        return self.uid + uid

    def host_gid(self, gid: int) -> int:
        return self.gid + gid


def validate_mode(mode: str) -> None:
    if mode not in MODES:
        raise InvalidArgumentError(
            f"--userns {mode!r}: say `auto` (a user namespace of the container's own, its "
            "root mapped to subordinate ids of the node) or `host` (the node's ids, the "
            "default)")


# ------------------------------------------------------------------- subordinate ids


@dataclass(frozen=True)
class SubordinateIds:
    """Where the node lists its subordinate ids (subuid(5)); the files are read at each
    allocation, so an edit takes effect without a restart."""

    subuid: Path = Path("/etc/subuid")
    subgid: Path = Path("/etc/subgid")
    owner: str = OWNER

    def allocate(self, taken: Iterable[IdMap], size: int = BLOCK) -> IdMap:
        """A block of `size` uids and gids that no map in `taken` overlaps."""
        held = list(taken)
        uid = _first_fit(self._ranges(self.subuid), [(m.uid, m.size) for m in held], size)
        gid = _first_fit(self._ranges(self.subgid), [(m.gid, m.size) for m in held], size)
        if uid is None or gid is None:
            path = self.subuid if uid is None else self.subgid
            raise FailedPreconditionError(
                f"--userns auto: no free block of {size} ids is left in {self.owner}'s "
                f"ranges in {path} ({len(held)} containers hold one each): add a range, or "
                "remove containers that run with a user namespace")
        return IdMap(uid, gid, size)

    def _ranges(self, path: Path) -> list[tuple[int, int]]:
        found = parse_ranges(_read(path), self.owner)
        if not found:
            raise FailedPreconditionError(
                f"--userns auto: {path} gives user {self.owner} no subordinate ids: add a "
                f"line `{self.owner}:100000:{BLOCK * 100}` to /etc/subuid and to "
                f"/etc/subgid (ids 100000 and up for 100 containers; choose ids no user "
                "of this node has)")
        return found


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def parse_ranges(text: str, owner: str) -> list[tuple[int, int]]:
    """`owner`'s (first id, count) ranges in a subuid(5) file; the owner may be named by
    name or by uid. Lines that are not `OWNER:START:COUNT` with numbers are skipped, as
    shadow-utils skips them."""
    try:
        owner_uid = str(pwd.getpwnam(owner).pw_uid)
    except KeyError:
        owner_uid = None
    ranges = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (owner, owner_uid):
            continue
        if not (fields[1].isdigit() and fields[2].isdigit()):
            continue
        start, count = int(fields[1]), int(fields[2])
        if start > 0 and count > 0:  # 0: never hand out the node's root
            ranges.append((start, count))
    return ranges


def _first_fit(ranges: list[tuple[int, int]], taken: list[tuple[int, int]],
               size: int) -> int | None:
    """The lowest start of `size` free ids inside one of `ranges`, or None."""
    held = sorted(taken)
    for start, count in sorted(ranges):
        position, end = start, start + count
        for first, length in held:
            if position + size <= first:
                break
            position = max(position, first + length)
        if position + size <= end:
            return position
    return None


# ------------------------------------------------------------------ the namespace


def create_namespace(kernel: Kernel, id_map: IdMap) -> int:
    """A new user namespace with `id_map`, as a descriptor (close-on-exec) that `join`
    and `mounts.clone_tree` take. The namespace lives as long as a descriptor of it or a
    process in it does."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:  # holds the new namespace until the maps are written and it is open
        try:
            os.close(ready_r)
            os.close(done_w)
            kernel.unshare(k.CLONE_NEWUSER)
            os.write(ready_w, b"u")
            os.read(done_r, 1)  # EOF: the parent has it open, or gave up
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"u":
            raise FailedPreconditionError("cannot make a user namespace: the kernel refused "
                                          "unshare(CLONE_NEWUSER)")
        proc = procfs.open_procfs(kernel, "/", f"proc/{child}")
        try:
            procfs.write_verified(kernel, proc, "uid_map",
                                  f"0 {id_map.uid} {id_map.size}\n".encode())
            procfs.write_verified(kernel, proc, "gid_map",
                                  f"0 {id_map.gid} {id_map.size}\n".encode())
            return os.open("ns/user", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
        finally:
            os.close(proc)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(child, 0)


def setup_identity(kernel: Kernel, id_map: IdMap) -> None:
    """Act as the container's root while the root filesystem is built: what init makes
    (device nodes, mount points, the tmpfs of /dev and the volumes) is then owned by it,
    and writes through the idmapped layers are possible at all (an id the mapping cannot
    express is refused with EOVERFLOW). Only the effective ids change, and the
    capabilities the change drops are raised again from the permitted set: init is
    still fully privileged on the node until it `join`s."""
    os.setegid(id_map.gid)
    os.seteuid(id_map.uid)
    _, permitted, inheritable = kernel.capget()
    kernel.capset(permitted, permitted, inheritable)


@contextlib.contextmanager
def as_node_root(kernel: Kernel, id_map: IdMap | None) -> Iterator[None]:
    """Undo `setup_identity` for a moment: the node's root again (its real and saved ids
    still are), with every permitted capability effective again as the kernel restores
    them; the container's root after."""
    if id_map is None:
        yield
        return
    os.seteuid(0)
    os.setegid(0)
    try:
        yield
    finally:
        setup_identity(kernel, id_map)


def join(kernel: Kernel, userns_fd: int) -> None:
    """Enter the container's user namespace: from here on this process holds capabilities
    only inside it. Its ids become the container's in `drop_privileges`, which sets them
    all (as for an exec'd process, which joins it with its other namespaces)."""
    kernel.setns(userns_fd, k.CLONE_NEWUSER)


def layer_dirs(options: tuple[str, ...]) -> list[str]:
    """The directories to map of an overlay mount's options: each lower dir, and the one
    directory holding both the upper and the work dir (overlayfs wants those two on one
    mount)."""
    values = dict(option.split("=", 1) for option in options if "=" in option)
    dirs = [d for d in values.get("lowerdir", "").split(":") if d]
    upper, work = values.get("upperdir"), values.get("workdir")
    if upper and work:
        parent = os.path.dirname(upper.rstrip("/"))
        if parent != os.path.dirname(work.rstrip("/")):
            raise InvalidArgumentError(
                f"the snapshot's upper dir {upper} and work dir {work} are not siblings: "
                "they cannot be mapped as one mount for a user namespace")
        dirs.append(parent)
    return dirs
