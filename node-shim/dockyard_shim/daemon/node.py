"""Assemble one node's runtime from its parts, all rooted at the state directory.

    DOCKYARD_ROOT/            (default /var/lib/dockyard)
      overlay/                overlay snapshotter (a short path: lowerdir fits one page)
      images/                 content store (blobs) and images.db
      containers.db           container records
      containers/<id>/        bundles: rootfs mount point, log, exit record, /etc files
      volumes/                volumes.db and local volumes' data (volumes/<name>/_data)

Both the daemon and tools that work without it (tests, `dockyard images`) open the node
here, so there is one definition of where things live.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from dockyard_shim.background import Background
from dockyard_shim.cgroups import CgroupDriver, detect
from dockyard_shim.daemon.paths import cgroup_parent as configured_cgroup_parent
from dockyard_shim.daemon.paths import state_root, subordinate_ids
from dockyard_shim.daemon.storage import open_images, open_volumes
from dockyard_shim.errors import NotFoundError
from dockyard_shim.images import ChainId, ImageStore, parse_reference
from dockyard_shim.images.unpack import unpacked_layer
from dockyard_shim.kernel import LinuxKernel
from dockyard_shim.runtime.forkserver import ForkServer
from dockyard_shim.runtime.ports import RunnableImage
from dockyard_shim.runtime.runtime import Runtime
from dockyard_shim.snapshots import OverlaySnapshotter


class StoreImages:
    """The runtime's view of the image store: unpack on first use, then run.

    What an image runs with is read once per image id: an id is its config's digest, so
    it never changes. Names are resolved every time (tags move), and the top layer is
    checked to be there still (an image removed and loaded again must be unpacked again).
    """

    def __init__(self, store: ImageStore) -> None:
        self._store = store
        self._known: dict[str, RunnableImage] = {}

    def runnable(self, name: str) -> RunnableImage:
        try:
            record = self._store.get(name)
        except NotFoundError as e:
            raise NotFoundError(
                f"{e}: load it with `dockyard load -i FILE` or make it from a root "
                f"filesystem with `dockyard import ROOTFS.tar {name}`") from e
        shown = parse_reference(record.names[0]).familiar() if record.names else record.id
        known = self._known.get(record.id)
        if known is not None and (not known.top_layer or unpacked_layer(
                self._store.snapshotter, ChainId(known.top_layer))):
            return dataclasses.replace(known, name=shown)
        chain_id = self._store.unpack(record.id)
        config = self._store.config(record.id)
        image = self._known[record.id] = RunnableImage(
            id=str(config.id), name=shown, top_layer=str(chain_id or ""),
            entrypoint=config.entrypoint, cmd=config.cmd, env=config.env,
            working_dir=config.working_dir, user=config.user, labels=dict(config.labels),
            volumes=config.volumes)
        return image


@dataclass
class Node:
    """Everything one node runs containers with."""

    root: Path
    snapshots: OverlaySnapshotter
    images: ImageStore
    cgroups: CgroupDriver
    runtime: Runtime
    background: Background
    fork_server: ForkServer | None = None

    def close(self) -> None:
        self.background.close()  # the chores it still holds, before the stores close
        if self.fork_server is not None:
            self.fork_server.close()
        self.runtime.store.close()
        self.runtime.volumes.close()
        self.images.close()
        self.snapshots.close()


def open_node(root: Path | None = None, *, cgroup_parent: str | None = None,
              fork_server: bool = False) -> Node:
    """Open (creating if needed) the node state under `root` (default `state_root()`),
    with containers' cgroups under `cgroup_parent` (default `$DOCKYARD_CGROUP_PARENT`,
    else `dockyard`). With `fork_server` (the daemon), containers' init processes come
    from a `ForkServer`, which starts faster than a fork of a large process."""
    root = root or state_root()
    # Removed containers' and snapshots' directories are deleted in the background.
    background = Background()
    snapshots, images = open_images(root, sweep=background)
    cgroups = detect(parent=cgroup_parent or configured_cgroup_parent())
    forker = ForkServer() if fork_server else None
    volumes = open_volumes(root, later=background)
    runtime = Runtime(root, kernel=LinuxKernel(), images=StoreImages(images),
                      snapshots=snapshots, cgroups=cgroups, later=background, fork=forker,
                      volumes=volumes, subordinate_ids=subordinate_ids())
    return Node(root, snapshots, images, cgroups, runtime, background, forker)
