"""Images to and from registries and archives: pull, push and save, on an `ImageStore`.

A pull copies the image for this node's platform with skopeo (`transport`) into a scratch
OCI layout under the store's root, its blobs straight into the content store, so a layer
the node has already is neither fetched nor stored again; then the store verifies the
documents (manifest and config: digest and size), records the image under the name that
was pulled, and unpacks the layers, each checked against its diff id. A failure at any
step takes back the blobs and snapshots the pull added.

A push writes an `index.json` naming the image into a scratch layout and lets skopeo
read the blobs from the content store. A save writes an OCI image-layout tar.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dockyard_shim.errors import InvalidArgumentError, ShimError
from dockyard_shim.images.digest import Digest
from dockyard_shim.images.export import Entry, write_archive, write_layout_index
from dockyard_shim.images.loaders import LoadedImage, read_layout
from dockyard_shim.images.metadata import ImageRecord
from dockyard_shim.images.oci import Descriptor
from dockyard_shim.images.reference import Reference, parse_reference
from dockyard_shim.images.store import ImageStore
from dockyard_shim.images.transport import Progress, pull_to_layout, push_from_layout, quiet


def pull(store: ImageStore, ref: str, *, progress: Progress = quiet) -> ImageRecord:
    """Pull `ref` (a name as `docker pull` takes it) into `store`; the image pulled."""
    reference = parse_reference(ref)
    if reference.tag is None and reference.digest is None:
        reference = reference.with_tag("latest")
    scratch = Path(tempfile.mkdtemp(dir=store.root, prefix="pull-"))
    content = store.content

    def read(added: set[Digest]) -> list[LoadedImage]:
        before = set(content.list())
        try:
            pull_to_layout(reference, scratch / "layout", content.blob_dir, store.platform,
                           progress=progress)
        finally:
            added.update(set(content.list()) - before)
        return [dataclasses.replace(image, names=(reference,))
                for image in read_layout(scratch / "layout", content, store.platform, added)]

    try:
        (record,) = store.add(read, unpack=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return record


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
