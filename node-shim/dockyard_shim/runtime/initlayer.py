"""The init layer: the mount points every container of an image needs, made once per image.

A container mounts /proc, /dev and /sys and binds /etc/hostname, /etc/hosts and
/etc/resolv.conf; an image may lack those paths. Made in the container's own writable
layer they would show in its `diff` and in a `commit`, where Docker shows nothing: Docker
makes them in an init layer between the image and the container, and so do we, but once
per image rather than once per container (they are the same for every container of an
image). It is a committed snapshot on the image's top layer, labelled so that the image
store collects it with the image.

Paths are created through an overlay mount of the image (resolved inside it, so a
symbolic link in the image cannot send them elsewhere) and only when missing.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
from pathlib import Path

from dockyard_shim.errors import AlreadyExistsError, NotFoundError
from dockyard_shim.images.unpack import INIT_LABEL
from dockyard_shim.kernel import Kernel
from dockyard_shim.kernel import consts as k
from dockyard_shim.mounts import make_in_root, perform
from dockyard_shim.runtime.ports import Snapshots

MOUNT_POINT_DIRS = ("/proc", "/dev", "/sys")
MOUNT_POINT_FILES = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")


def init_layer(snapshots: Snapshots, kernel: Kernel, top: str) -> str:
    """The key of the init layer on the image layer `top` ("" for an image without
    layers), made if it does not exist."""
    key = f"init:{top or 'empty'}"
    with contextlib.suppress(NotFoundError):
        snapshots.stat(key)
        return key
    work = f"init-work-{secrets.token_hex(8)}"
    mounts = snapshots.prepare(work, top or None)
    try:
        with tempfile.TemporaryDirectory(prefix="dockyard-init-") as scratch:
            target = Path(scratch)
            for mount in mounts:
                perform(kernel, mount.at(str(target)))
            try:
                _make_mount_points(target)
            finally:
                kernel.umount2(str(target), k.MNT_DETACH)
        snapshots.commit(key, work, labels={INIT_LABEL: top})
    except AlreadyExistsError:
        snapshots.remove(work)  # another start made it meanwhile: theirs is as good
    except BaseException:
        snapshots.remove(work)
        raise
    return key


def _make_mount_points(root: Path) -> None:
    for path in MOUNT_POINT_DIRS:
        make_in_root(root, path, directory=True)
    for path in MOUNT_POINT_FILES:
        make_in_root(root, path, directory=False)
