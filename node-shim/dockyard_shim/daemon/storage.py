"""The node's image and volume storage, without its runtime: what those commands open.

`dockyard images`, `pull`, `rmi`, `volume ls` and the like work on the snapshotter, the
image store and the volume store directly; opening them must not cost the import of the
whole runtime (network, cgroups, asyncio). The daemon opens the same stores through
`node.open_node`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from dockyard_shim.background import Later, now
from dockyard_shim.daemon.paths import host_paths
from dockyard_shim.runtime.state import ContainerRecord, StateStore
from dockyard_shim.volumes import VolumeStore
from dockyard_shim.volumes import volumes_in_use as volumes_used_by

if TYPE_CHECKING:  # imported where used: the volume commands need neither
    from dockyard_shim.images import ImageStore
    from dockyard_shim.snapshots import OverlaySnapshotter


def _container_records(root: Path) -> list[ContainerRecord]:
    store = StateStore(root / "containers.db")
    try:
        return store.all()
    finally:
        store.close()


def images_in_use(root: Path) -> set[str]:
    """The ids of the images that the containers under `root` were created from, read
    from their records (whether or not a daemon runs): what an image prune must keep."""
    records = _container_records(root)
    from dockyard_shim.runtime.ports import RunnableImage  # noqa: PLC0415 -- see the imports

    used = set()
    for record in records:
        with contextlib.suppress(OSError, ValueError, TypeError):  # a bundle half gone
            used.add(RunnableImage.of_bundle(Path(record.bundle)).id)
    return used


def open_images(root: Path, *, sweep: Later = now) -> tuple[OverlaySnapshotter, ImageStore]:
    """The node's snapshotter and image store under `root`; the caller closes both."""
    from dockyard_shim.images import ImageStore  # noqa: PLC0415 -- see the imports
    from dockyard_shim.snapshots import OverlaySnapshotter  # noqa: PLC0415

    snapshots = OverlaySnapshotter(root / "overlay", sweep=sweep)
    return snapshots, ImageStore(root / "images", snapshots)


def volumes_in_use(root: Path) -> set[str]:
    """The volumes the containers under `root` refer to, running or not (whether or not a
    daemon runs): what `volume rm` and `volume prune` must keep."""
    return volumes_used_by(record.config for record in _container_records(root))


def open_volumes(root: Path, *, later: Later = now) -> VolumeStore:
    """The node's volume store under `root`; the caller closes it."""
    return VolumeStore(root / "volumes", host_paths=host_paths(root), later=later)
