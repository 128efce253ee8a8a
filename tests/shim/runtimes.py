"""A runtime on real parts for tests: overlay snapshots, cgroups, namespaces, and one image.

Images come from a busybox layer committed straight into the snapshotter, so tests of the
runtime do not depend on the image store (which has its own tests).
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dockyard_shim.cgroups import detect
from dockyard_shim.errors import NotFoundError
from dockyard_shim.kernel import LinuxKernel
from dockyard_shim.runtime.config import ContainerConfig
from dockyard_shim.runtime.ports import RunnableImage
from dockyard_shim.runtime.runtime import Runtime
from dockyard_shim.snapshots import OverlaySnapshotter
from tests.shim.rootfs_dir import busybox_rootfs


class LayerImages:
    """The one image these tests need: busybox, committed as a single layer."""

    def __init__(self, snapshots: OverlaySnapshotter, scratch: Path,
                 volumes: tuple[str, ...] = ()) -> None:
        self._volumes = volumes
        snapshots.prepare("extract-busybox")
        upper = snapshots.upper_dir("extract-busybox")
        shutil.copytree(busybox_rootfs(scratch / "busybox"), upper, symlinks=True,
                        dirs_exist_ok=True)
        snapshots.commit("sha256:busybox-layer", "extract-busybox")

    def runnable(self, name: str) -> RunnableImage:
        if name != "busybox":
            raise NotFoundError(f"no such image: {name}")
        return RunnableImage(id="sha256:busybox", name="busybox",
                             top_layer="sha256:busybox-layer", cmd=("sh",),
                             env=("HOME=/root",), volumes=self._volumes)


@contextmanager
def busybox_runtime(root: Path, *, image_volumes: tuple[str, ...] = (),
                    **options: Any) -> Iterator[Runtime]:
    """A runtime under `root` with the busybox image (declaring `image_volumes`); every
    container and volume is removed after. `options` go to `Runtime`."""
    with runtime_with(root, lambda snapshots, scratch: LayerImages(
            snapshots, scratch, image_volumes), **options) as runtime:
        yield runtime


@contextmanager
def runtime_with(root: Path, images: Callable[[OverlaySnapshotter, Path], Any], *,
                 prefix: str = "dockyard-test", **options: Any) -> Iterator[Runtime]:
    """A runtime under `root` whose images `images(snapshots, root)` makes, in a cgroup
    parent of its own (`prefix-<random>`); every container and volume is removed after.
    `options` go to `Runtime` as they are."""
    snapshots = OverlaySnapshotter(root / "snapshots")
    cgroups = detect(parent=f"{prefix}-{secrets.token_hex(4)}")
    runtime = Runtime(root, kernel=LinuxKernel(), images=images(snapshots, root),
                      snapshots=snapshots, cgroups=cgroups, **options)
    try:
        yield runtime
    finally:
        try:
            for record in runtime.store.all():
                runtime.delete(record.id, force=True)
            for volume in runtime.volumes.all():  # tmpfs and provider volumes hold mounts
                runtime.volumes.remove(volume.name, in_use=())
        finally:
            cgroups.delete_parent()  # even when a failing test left a container behind
            runtime.volumes.close()


def config(*command: str, **options: object) -> ContainerConfig:
    """busybox running `command`, with no network unless `options` say otherwise."""
    return ContainerConfig(image="busybox", command=command,
                           **{"network": "none", **options})  # type: ignore[arg-type]
