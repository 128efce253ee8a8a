"""`docker commit` on one node: the runtime writes the container's changes as a layer, the
image store makes an image of its image plus that layer (`images.commit`)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from dockyard_shim.images import ImageStore
from dockyard_shim.images.commit import RunSettings, commit_image
from dockyard_shim.images.metadata import ImageRecord
from dockyard_shim.images.reference import Reference
from dockyard_shim.runtime.config import ContainerConfig
from dockyard_shim.runtime.runtime import Runtime


def commit_container(runtime: Runtime, images: ImageStore, ref: str, *,
                     name: Reference | None = None, comment: str = "", author: str = "",
                     changes: Sequence[str] = (), pause: bool = True) -> ImageRecord:
    """The image made of container `ref`'s image and what the container changed."""
    record = runtime.store.get(ref)
    config = ContainerConfig.from_json(record.config)
    settings = RunSettings(cmd=config.command, entrypoint=config.entrypoint, env=config.env,
                           working_dir=config.working_dir, user=config.user,
                           labels=dict(config.labels))
    # The layer is written next to the content store, so that adding it is a rename.
    with tempfile.NamedTemporaryFile(dir=images.root, prefix="commit-") as layer:
        diff_id = runtime.write_changes(record.id, layer, pause=pause)
        layer.flush()
        return commit_image(images, runtime.image_of(record).id, Path(layer.name), diff_id,
                            settings=settings, name=name, comment=comment, author=author,
                            changes=changes)
