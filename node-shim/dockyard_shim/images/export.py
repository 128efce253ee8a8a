"""Writing images out of the content store: OCI image layouts, as a directory or a tar.

`dockyard save` writes an OCI image-layout tar (image-spec v1.1 `image-layout`) that
`dockyard load`, `docker load` (25+), `skopeo copy oci-archive:` and `ctr import` read.
Each image is one entry of `index.json`, named twice as containerd and Docker expect:
`io.containerd.image.name` holds the full reference, `org.opencontainers.image.ref.name`
its tag. A push writes the same `index.json` into a directory without copying any blob:
skopeo reads the blobs from the content store itself (`--src-shared-blob-dir`).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.images.content import ContentStore
from dockyard_shim.images.digest import Digest, hex_of
from dockyard_shim.images.oci import (
    CONTAINERD_NAME_ANNOTATION,
    MAX_DOCUMENT,
    OCI_INDEX,
    REF_NAME_ANNOTATION,
    Descriptor,
    Manifest,
    parse_manifest_or_index,
)
from dockyard_shim.images.reference import Reference

_LAYOUT = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()


@dataclass(frozen=True)
class Entry:
    """One image to write: its manifest, and the name it goes by (None: unnamed)."""

    manifest: Descriptor
    name: Reference | None = None


def index_json(entries: Sequence[Entry]) -> bytes:
    """The `index.json` listing `entries`."""
    manifests = []
    for entry in entries:
        descriptor: dict[str, object] = {"mediaType": entry.manifest.media_type,
                                         "digest": entry.manifest.digest,
                                         "size": entry.manifest.size}
        if entry.name is not None:
            annotations = {CONTAINERD_NAME_ANNOTATION: str(entry.name)}
            if entry.name.tag is not None:
                annotations[REF_NAME_ANNOTATION] = entry.name.tag
            descriptor["annotations"] = annotations
        manifests.append(descriptor)
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                       "manifests": manifests}, indent=2).encode()


def write_layout_index(path: Path, entries: Sequence[Entry]) -> None:
    """An OCI layout at `path` without its blobs: `oci-layout` and `index.json`."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_bytes(_LAYOUT)
    (path / "index.json").write_bytes(index_json(entries))


def blobs_of(content: ContentStore, manifest: Descriptor) -> list[Digest]:
    """The manifest's blobs: itself, its config and its layers."""
    document = parse_manifest_or_index(content.read(manifest.digest, MAX_DOCUMENT), manifest)
    if not isinstance(document, Manifest):
        raise InvalidArgumentError(f"{manifest.digest} is not an image manifest")
    return [manifest.digest, document.config.digest, *(d.digest for d in document.layers)]


def write_archive(out: Path, content: ContentStore, entries: Sequence[Entry]) -> None:
    """An OCI image-layout tar at `out` holding `entries` and every blob they need.

    Written to a temporary name beside `out` and renamed, so a failed save leaves no
    half-written archive behind.
    """
    blobs = list(dict.fromkeys(d for e in entries for d in blobs_of(content, e.manifest)))
    temp = out.with_name(f".{out.name}.partial")
    try:
        with tarfile.open(temp, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "oci-layout", _LAYOUT)
            _add_bytes(tar, "index.json", index_json(entries))
            _add_dir(tar, "blobs")
            _add_dir(tar, "blobs/sha256")
            for digest in blobs:
                with content.open(digest) as blob:
                    info = tarfile.TarInfo(f"blobs/sha256/{hex_of(digest)}")
                    info.size = content.size(digest)
                    info.mode = 0o644
                    tar.addfile(info, blob)
        temp.replace(out)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(info)
