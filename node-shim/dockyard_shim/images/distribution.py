"""Images to and from registries and archives: pull, push and save, on an `ImageStore`.

A pull first reads the manifest (choosing this node's platform from an index or manifest
list) and the config, and pins the reference to the chosen manifest's digest. Then skopeo
(`transport`) copies that manifest into a scratch OCI layout under the store's root, its
blobs straight into the content store, so a layer the node has already is neither
fetched nor stored again; each layer is unpacked, checked against its diff id, as soon as
its blob is in, while the others still download. At the end the store verifies the
documents (digest and size) and records the image under the name that was pulled. A
failure at any step takes back the blobs and snapshots the pull added.

A push writes an `index.json` naming the image into a scratch layout and lets skopeo
read the blobs from the content store. A save writes an OCI image-layout tar.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from dockyard_shim.errors import (
    InvalidArgumentError,
    NotFoundError,
    ShimError,
    UnavailableError,
)
from dockyard_shim.images.content import ContentStore
from dockyard_shim.images.digest import ChainId, Digest, sha256_of
from dockyard_shim.images.export import Entry, write_archive, write_layout_index
from dockyard_shim.images.loaders import LoadedImage, read_layout
from dockyard_shim.images.metadata import ImageRecord, LayerRow
from dockyard_shim.images.oci import (
    Descriptor,
    Index,
    Manifest,
    parse_config,
    parse_manifest_or_index,
)
from dockyard_shim.images.platform import Platform, select
from dockyard_shim.images.reference import Reference, parse_reference
from dockyard_shim.images.store import ImageStore, layer_rows
from dockyard_shim.images.transport import (
    Progress,
    Skopeo,
    inspect_raw,
    push_from_layout,
    quiet,
    start_pull,
)
from dockyard_shim.images.unpack import unpack_layers

_BLOB_POLL = 0.01  # seconds between looks for the next layer's blob


def pull(store: ImageStore, ref: str, *, progress: Progress = quiet) -> ImageRecord:
    """Pull `ref` (a name as `docker pull` takes it) into `store`; the image pulled."""
    reference = parse_reference(ref)
    if reference.tag is None and reference.digest is None:
        reference = reference.with_tag("latest")
    pinned, manifest = _manifest_for(reference, store.platform)
    scratch = Path(tempfile.mkdtemp(dir=store.root, prefix="pull-"))
    content = store.content

    def read(added: set[Digest], unpacked: list[ChainId]) -> list[LoadedImage]:
        # What this pull brings in is counted among the blobs it needs, not by listing the
        # store: another pull may be adding blobs meanwhile, and those are not ours to take
        # back if this one fails.
        needed = {manifest.config.digest, *(d.digest for d in manifest.layers),
                  *([pinned.digest] if pinned.digest else [])}
        had = {d for d in needed if content.has(d)}
        copy = start_pull(pinned, scratch / "layout", content.blob_dir, progress=progress)
        try:
            layers = _planned_layers(pinned, manifest)  # read while the layers download
            # Each layer is unpacked as soon as its blob is in, while the others download.
            for top in range(len(layers)):
                _await_blob(content, layers[top].blob, copy)
                unpack_layers(store.snapshotter, content, layers[:top + 1], unpacked)
            copy.finish()
        except BaseException:
            copy.stop()
            raise
        finally:
            added.update(d for d in needed - had if content.has(d))
        images = [dataclasses.replace(image, names=(reference,))
                  for image in read_layout(scratch / "layout", content, store.platform, added)]
        for image in images:  # with the manifest skopeo wrote, if it rewrote it
            added.update(image.blobs - had)
        return images

    try:
        (record,) = store.add(read, unpack=True)  # the layers are there: a check only
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return record


def _planned_layers(pinned: Reference, manifest: Manifest) -> list[LayerRow]:
    """The layers to unpack: the manifest's blobs with the config's diff ids."""
    data = inspect_raw(pinned, config=True)
    if sha256_of(data) != manifest.config.digest:
        raise InvalidArgumentError(f"the config of {pinned} does not match its manifest")
    return layer_rows(manifest.layers, parse_config(data, manifest.config.digest))


def _manifest_for(reference: Reference, platform: Platform) -> tuple[Reference, Manifest]:
    """The manifest of `reference` for `platform` (chosen from an index or manifest list),
    and the reference pinned to its digest, so that what is copied is what was chosen."""
    data = inspect_raw(reference)
    digest = sha256_of(data)
    if reference.digest is not None and digest != reference.digest:
        raise InvalidArgumentError(f"the registry sent {reference} with digest {digest}")
    document = parse_manifest_or_index(data, Descriptor("", digest, len(data)))
    if isinstance(document, Index):
        candidates = [(d.platform, d) for d in document.manifests if d.platform is not None]
        chosen = select(platform, candidates)
        if chosen is None:
            offered = ", ".join(sorted({str(p) for p, _ in candidates})) or "none"
            raise NotFoundError(f"{reference} has no image for this node's platform "
                                f"{platform} (it offers: {offered})")
        pinned = Reference(reference.domain, reference.path, None, chosen.digest)
        return _manifest_for(pinned, platform)
    return Reference(reference.domain, reference.path, None, digest), document


def _await_blob(content: ContentStore, digest: Digest, copy: Skopeo) -> None:
    """Wait until skopeo has put `digest` in the store (renamed in once complete)."""
    while not content.has(digest):
        if not copy.running():
            copy.finish()  # raises if it failed
            if not content.has(digest):
                raise UnavailableError(f"skopeo finished without copying layer {digest}")
            return
        time.sleep(_BLOB_POLL)


def push(store: ImageStore, ref: str, target: str | None = None, *,
         progress: Progress = quiet) -> Reference:
    """Push the image `ref` to the registry as `target` (default: `ref` itself, which must
    then be a name); the reference pushed to."""
    record = store.get(ref)
    destination = _destination(record, ref, target)
    scratch = Path(tempfile.mkdtemp(dir=store.root, prefix="push-"))
    try:
        tag = destination.tag or "latest"
        write_layout_index(scratch, [Entry(_manifest(store, record), destination)])
        push_from_layout(scratch, tag, destination, store.content.blob_dir,
                         progress=progress)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return destination


def save(store: ImageStore, refs: Sequence[str], out: Path) -> None:
    """Write the images `refs` to the OCI image-layout tar `out` (like `docker save`); an
    image given by name is named so in the archive, one given by id is not."""
    entries = []
    for ref in refs:
        record = store.get(ref)
        entries.append(Entry(_manifest(store, record), _name_in(record, ref)))
    write_archive(out, store.content, entries)


def _manifest(store: ImageStore, record: ImageRecord) -> Descriptor:
    return Descriptor(record.manifest_media_type, record.manifest_digest,
                      store.content.size(record.manifest_digest))


def _name_in(record: ImageRecord, ref: str) -> Reference | None:
    """The name `ref` gives the image, if `ref` is one of its names."""
    try:
        reference = parse_reference(ref)
    except ShimError:
        return None  # an id
    return reference if str(reference) in record.names else None


def _destination(record: ImageRecord, ref: str, target: str | None) -> Reference:
    if target is not None:
        destination = parse_reference(target)
    else:
        named = _name_in(record, ref)
        if named is None:
            raise InvalidArgumentError(
                f"{ref} is not a name of the image: say where to push it "
                "(dockyard push IMAGE REGISTRY/REPOSITORY:TAG)")
        destination = named
    if destination.digest is not None:
        raise InvalidArgumentError(f"cannot push to {destination}: a digest is what the "
                                   "registry computes; give a tag")
    return destination
