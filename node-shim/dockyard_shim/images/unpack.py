"""Unpacking an image's layers into committed snapshots keyed by chain id.

Layer n goes into `prepare("extract-<random>-<chainid>", parent=chainid(n-1))`, is applied
by `archive.apply_layer` straight into the snapshot's upper directory (no mount needed),
and is committed as `chainid(n)` only if the diff id the applier computed is the one the
config promises: the config is what the image id (its digest) vouches for, so this is what
ties the files on disk to the image id. A chain id already committed is never unpacked
again, which is how images share layers on disk.

Concurrent unpackers are fine: each works in its own randomly named extract snapshot, and
whoever commits a chain id second gets AlreadyExistsError, drops its copy and moves on. Any
failure removes the extract snapshot; a crash leaves it behind, with the label
`dockyard.dev/unpack` saying which chain it was for (see `stale_extractions`).

Reads blobs, writes snapshots; no image metadata.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence

from dockyard_shim.archive import apply_layer
from dockyard_shim.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from dockyard_shim.images.content import ContentStore
from dockyard_shim.images.digest import ChainId
from dockyard_shim.images.metadata import LayerRow
from dockyard_shim.snapshots import Kind, SnapshotKey, Snapshotter

UNPACK_LABEL = "dockyard.dev/unpack"
"""On an extract snapshot: the chain id being unpacked into it."""
LAYER_LABEL = "dockyard.dev/layer"
"""On a committed layer snapshot: its diff id. Marks it as the image store's to collect."""
INIT_LABEL = "dockyard.dev/init-layer"
"""On a runtime's init layer (`runtime.initlayer`): the chain id of the image layer it
sits on. The image store collects it with that layer."""

EXTRACT_PREFIX = "extract-"


def unpack_layers(snapshotter: Snapshotter, content: ContentStore, layers: Sequence[LayerRow],
                  unpacked: list[ChainId] | None = None) -> ChainId | None:
    """Make sure every layer is a committed snapshot; the top chain id.

    `unpacked` receives, as they are committed, the chain ids this call unpacked (the
    others were there already), so that a caller can take them back if something fails.
    """
    parent: ChainId | None = None
    for layer in layers:
        if (not unpacked_layer(snapshotter, layer.chain_id)
                and _unpack_one(snapshotter, content, layer, parent)
                and unpacked is not None):
            unpacked.append(layer.chain_id)
        parent = layer.chain_id
    return parent


def unpacked_layer(snapshotter: Snapshotter, chain_id: ChainId) -> bool:
    """Whether the layer `chain_id` is unpacked (a committed snapshot)."""
    try:
        info = snapshotter.stat(chain_id)
    except NotFoundError:
        return False
    if info.kind != Kind.COMMITTED:
        # Only we name snapshots after chain ids, and we only ever commit them.
        raise FailedPreconditionError(f"snapshot {chain_id} exists but is {info.kind.value}; "
                                      "remove it so the layer can be unpacked")
    return True


def _unpack_one(snapshotter: Snapshotter, content: ContentStore, layer: LayerRow,
                parent: ChainId | None) -> bool:
    """Unpack one layer; False when another unpacker committed it first."""
    key = SnapshotKey(f"{EXTRACT_PREFIX}{secrets.token_hex(8)}-{layer.chain_id}")
    snapshotter.prepare(key, parent, labels={UNPACK_LABEL: layer.chain_id})
    try:
        with content.open(layer.blob) as blob:
            stats = apply_layer(blob, snapshotter.upper_dir(key))
        if stats.diff_id != layer.diff_id:
            raise InvalidArgumentError(
                f"layer {layer.blob} unpacks to diff id {stats.diff_id}, but the image config "
                f"expects {layer.diff_id}: the layer or the config is corrupt")
        snapshotter.commit(layer.chain_id, key, labels={LAYER_LABEL: layer.diff_id})
    except AlreadyExistsError:
        _discard(snapshotter, key)  # someone else was faster: theirs is as good as ours
        return False
    except BaseException:
        _discard(snapshotter, key)
        raise
    return True


def _discard(snapshotter: Snapshotter, key: str) -> None:
    with contextlib.suppress(NotFoundError):
        snapshotter.remove(key)


def stale_extractions(snapshotter: Snapshotter) -> list[SnapshotKey]:
    """Extract snapshots still present: left by a crash, or in progress in another process."""
    return [info.key for info in snapshotter.walk(kind=Kind.ACTIVE)
            if info.key.startswith(EXTRACT_PREFIX) and UNPACK_LABEL in info.labels]
