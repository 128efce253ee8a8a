"""The node's image storage, without its runtime: what image commands open.

`dockyard images`, `pull`, `rmi` and the like work on the snapshotter and the image store
directly; opening them must not cost the import of the whole runtime (network, cgroups,
asyncio). The daemon opens the same two through `node.open_node`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from dockyard_shim.background import Later, now
from dockyard_shim.images import ImageStore
from dockyard_shim.runtime.ports import RunnableImage
from dockyard_shim.runtime.state import StateStore
from dockyard_shim.snapshots import OverlaySnapshotter


def images_in_use(root: Path) -> set[str]:
    """The ids of the images that the containers under `root` were created from, read
    from their records (whether or not a daemon runs): what an image prune must keep."""
    store = StateStore(root / "containers.db")
    try:
        records = store.all()
    finally:
        store.close()
    used = set()
    for record in records:
        with contextlib.suppress(OSError, ValueError, TypeError):  # a bundle half gone
            used.add(RunnableImage.of_bundle(Path(record.bundle)).id)
    return used


def open_images(root: Path, *, sweep: Later = now) -> tuple[OverlaySnapshotter, ImageStore]:
    """The node's snapshotter and image store under `root`; the caller closes both."""
    snapshots = OverlaySnapshotter(root / "overlay", sweep=sweep)
    return snapshots, ImageStore(root / "images", snapshots)
