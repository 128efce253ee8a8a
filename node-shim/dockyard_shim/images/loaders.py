"""Reading image archives into the content store: OCI image layouts and `docker save` tars.

Three layouts are recognised by their files:
- OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`), as written by
  `skopeo copy … oci-archive:`, `buildah push`, `ctr export`. Names come from the
  annotations `io.containerd.image.name` (a full reference) or
  `org.opencontainers.image.ref.name` when it is a full reference (a bare tag names nothing).
- Docker 25+ `docker save`: an OCI layout plus `manifest.json`; read as OCI, with the
  `RepoTags` of `manifest.json` as names when the index has none.
- Legacy `docker save`: `manifest.json` (`Config`, `RepoTags`, `Layers`), a config file
  named after its digest and `<id>/layer.tar` files, where a layer repeated under another id
  is a symbolic link to the first. It has no manifest: we build an OCI one, so every image
  in the store has the same shape; its digest is ours, the image id (the config digest) is
  Docker's.

An index (multi-platform image) is resolved to the manifest for this node's platform, and
only that manifest's blobs are read. Every blob is verified against the digest and size that
reference it before it enters the content store, so nothing unverified is ever stored.
A legacy layer has no descriptor: it is checked against the config's diff_id when it is
a plain tar (docker save writes them so), and by the unpacker otherwise.

The archive is untrusted: member names are only looked up, never used as paths; symbolic
links between members are followed only within the archive and at most a few hops.
"""

from __future__ import annotations

import json
import lzma
import os
import posixpath
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dockyard_shim.errors import InvalidArgumentError, NotFoundError
from dockyard_shim.images.content import ContentStore
from dockyard_shim.images.digest import Digest, hex_of, parse_digest, sha256_of
from dockyard_shim.images.oci import (
    CONTAINERD_NAME_ANNOTATION,
    INDEX_TYPES,
    MAX_DOCUMENT,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    REF_NAME_ANNOTATION,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    decode_json,
    load_json,
    parse_config,
    parse_manifest_or_index,
)
from dockyard_shim.images.platform import Platform, select
from dockyard_shim.images.reference import Reference, parse_reference

_MAX_MEMBERS = 200_000  # far beyond any real archive; bounds memory on a hostile one
_MAX_LINK_HOPS = 8
_GZIP_MAGIC = b"\x1f\x8b"
# What a damaged or truncated archive makes tarfile and its decompressors raise: a gzip,
# bzip2 or xz stream cut short is an EOFError, corrupt deflate data a zlib.error.
_DAMAGED = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)


@dataclass(frozen=True)
class LoadedImage:
    """One image found in an archive, its blobs all in the content store."""

    names: tuple[Reference, ...]
    manifest: Descriptor
    config: ImageConfig
    layers: tuple[Descriptor, ...]
    blobs: frozenset[Digest]
    """Every blob the image holds on to: manifest, config, layers, and the index it was
    chosen from."""


class _Archive:
    """A tar opened for reading members by name."""

    def __init__(self, tar: tarfile.TarFile, path: Path) -> None:
        self._tar, self.path = tar, path
        self._members: dict[str, tarfile.TarInfo] = {}
        for count, info in enumerate(_members(tar), 1):
            if count > _MAX_MEMBERS:
                raise InvalidArgumentError(f"{path} has more than {_MAX_MEMBERS} entries")
            self._members[_clean(info.name)] = info

    def has(self, name: str) -> bool:
        return _clean(name) in self._members

    def _resolve(self, name: str) -> tarfile.TarInfo:
        wanted = _clean(name)
        for _ in range(_MAX_LINK_HOPS):
            info = self._members.get(wanted)
            if info is None:
                raise InvalidArgumentError(f"{self.path} lacks {name!r}, which it references")
            if info.isfile():
                return info
            if info.issym():
                wanted = _clean(posixpath.join(posixpath.dirname(wanted), info.linkname))
            elif info.islnk():
                wanted = _clean(info.linkname)
            else:
                raise InvalidArgumentError(f"{self.path}: {name!r} is not a regular file")
        raise InvalidArgumentError(f"{self.path}: too many links resolving {name!r}")

    @contextmanager
    def open(self, name: str) -> Iterator[tuple[IO[bytes], int]]:
        info = self._resolve(name)
        stream = self._tar.extractfile(info)
        if stream is None:
            raise InvalidArgumentError(f"{self.path}: cannot read {name!r}")
        with stream:
            yield stream, info.size

    def read(self, name: str) -> bytes:
        info = self._resolve(name)
        if info.size > MAX_DOCUMENT:
            raise InvalidArgumentError(f"{self.path}: {name!r} is larger than {MAX_DOCUMENT} "
                                       "bytes, too large for an image document")
        with self.open(name) as (stream, _):
            return stream.read()


class _Layout:
    """An OCI image layout directory whose blobs are already in the content store, as
    `skopeo copy --dest-shared-blob-dir` leaves a pull. Same reading interface as
    `_Archive`; names are looked up, never trusted as paths."""

    def __init__(self, path: Path, content: ContentStore) -> None:
        self.path, self._content = path, content

    def _file(self, name: str) -> Path:
        wanted = _clean(name)
        if wanted in ("oci-layout", "index.json"):
            return self.path / wanted
        folder, _, hex_digest = wanted.rpartition("/")
        if folder != "blobs/sha256":
            raise InvalidArgumentError(f"{self.path}: unexpected member {name!r}")
        return self._content.path(parse_digest(f"sha256:{hex_digest}"))

    def has(self, name: str) -> bool:
        return self._file(name).is_file()

    @contextmanager
    def open(self, name: str) -> Iterator[tuple[IO[bytes], int]]:
        try:
            stream = self._file(name).open("rb")
        except FileNotFoundError as e:
            raise InvalidArgumentError(f"{self.path} lacks {name!r}, which it references") \
                from e
        with stream:
            yield stream, os.fstat(stream.fileno()).st_size

    def read(self, name: str) -> bytes:
        with self.open(name) as (stream, size):
            if size > MAX_DOCUMENT:
                raise InvalidArgumentError(f"{self.path}: {name!r} is larger than "
                                           f"{MAX_DOCUMENT} bytes, too large for a document")
            return stream.read()


def read_layout(path: Path, content: ContentStore, platform: Platform,
                added: set[Digest]) -> list[LoadedImage]:
    """Verify the images of the OCI layout directory `path`, whose blobs the transport
    put into `content` already (see `_Layout`); the images found."""
    images = _Loader(_Layout(path, content), content, platform, added).oci()
    if not images:
        raise InvalidArgumentError(f"{path} holds no image")
    return images


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (info := tar.next()) is not None:
        yield info


def _clean(name: str) -> str:
    # Names are keys, never paths: `..` and leading `/` are folded away, so a link can only
    # ever point at another member of the same archive.
    return posixpath.normpath("/" + name).lstrip("/")


def read_archive(path: Path, content: ContentStore, platform: Platform,
                 added: set[Digest]) -> list[LoadedImage]:
    """Verify and store the images in the archive at `path`; the images found.

    `added` receives every blob this call put into the store, so that a caller can take
    them back out if a later step fails.
    """
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 -- closed below
    except FileNotFoundError as e:
        raise NotFoundError(f"image archive {path} not found") from e
    except (*_DAMAGED, OSError) as e:
        raise InvalidArgumentError(f"{path} is not a readable tar archive: {e}") from e
    try:
        archive = _Archive(tar, path)
        loader = _Loader(archive, content, platform, added)
        if archive.has("oci-layout") and archive.has("index.json"):
            images = loader.oci()
            if archive.has("manifest.json"):
                images = loader.with_repo_tags(images)
        elif archive.has("manifest.json"):
            images = loader.docker_legacy()
        else:
            raise InvalidArgumentError(
                f"{path} is neither an OCI image layout (oci-layout, index.json) nor a "
                "docker save archive (manifest.json)")
    except _DAMAGED as e:
        raise InvalidArgumentError(f"{path} is a damaged tar archive: {e}") from e
    except OSError as e:
        if e.errno is not None:
            raise  # the disk's problem (EIO, ENOSPC), not the archive's
        # bz2 and gzip say "invalid data" with an errno-less OSError (BadGzipFile)
        raise InvalidArgumentError(f"{path} is a damaged compressed archive: {e}") from e
    finally:
        tar.close()
    if not images:
        raise InvalidArgumentError(f"{path} holds no image")
    return images


class _Loader:
    def __init__(self, archive: _Archive | _Layout, content: ContentStore, platform: Platform,
                 added: set[Digest]) -> None:
        self.archive, self.content, self.platform, self.added = archive, content, platform, added

    # Blobs -------------------------------------------------------------------------------------

    def _ingest(self, member: str, digest: Digest | None, size: int | None) -> Digest:
        before = digest is not None and self.content.has(digest)
        with self.archive.open(member) as (stream, _):
            stored, _ = self.content.ingest(stream, digest, size)
        if not before:
            self.added.add(stored)
        return stored

    def _blob(self, descriptor: Descriptor) -> Digest:
        return self._ingest(f"blobs/sha256/{hex_of(descriptor.digest)}", descriptor.digest,
                            descriptor.size)

    def _document(self, descriptor: Descriptor) -> bytes:
        if descriptor.size > MAX_DOCUMENT:
            raise InvalidArgumentError(f"{descriptor.media_type} {descriptor.digest} declares "
                                       f"{descriptor.size} bytes, more than {MAX_DOCUMENT}")
        data = self.content.read(self._blob(descriptor), MAX_DOCUMENT)
        # Checked again, even when the blob was there: documents are small, and a blob
        # another program placed in the store (a pull's transport) is verified here.
        if len(data) != descriptor.size or sha256_of(data) != descriptor.digest:
            raise InvalidArgumentError(f"{descriptor.media_type} {descriptor.digest} does "
                                       "not match its digest or size")
        return data

    # OCI layout --------------------------------------------------------------------------------

    def oci(self) -> list[LoadedImage]:
        layout = load_json(self.archive.read("oci-layout"), "oci-layout")
        if not isinstance(layout.get("imageLayoutVersion"), str):
            raise InvalidArgumentError("oci-layout lacks imageLayoutVersion")
        data = self.archive.read("index.json")
        top = parse_manifest_or_index(data, Descriptor(OCI_INDEX, sha256_of(data), len(data)))
        if not isinstance(top, Index):
            raise InvalidArgumentError("index.json is not an image index")
        images: list[LoadedImage] = []
        platform_sets: dict[tuple[Reference, ...], list[Descriptor]] = {}
        for entry in top.manifests:
            names = _names(entry.annotations)
            if entry.media_type in INDEX_TYPES:
                chosen, index_digest = self._from_index(entry)
                images.append(self._image(chosen, names, extra={index_digest}))
            elif entry.platform is not None:
                # Platform-specific manifests listed right in index.json (buildx writes
                # them so): one image per name, chosen like from a nested index.
                platform_sets.setdefault(names, []).append(entry)
            else:
                images.append(self._image(entry, names))
        for names, entries in platform_sets.items():
            images.append(self._image(self._choose(entries, "index.json"), names))
        return images

    def _from_index(self, descriptor: Descriptor) -> tuple[Descriptor, Digest]:
        document = parse_manifest_or_index(self._document(descriptor), descriptor)
        if not isinstance(document, Index):
            raise InvalidArgumentError(f"{descriptor.digest} is referenced as an index but is "
                                       "a manifest")
        chosen = self._choose(document.manifests, f"image index {descriptor.digest}")
        if chosen.media_type in INDEX_TYPES:
            raise InvalidArgumentError(f"image index {descriptor.digest} nests another index "
                                       "for its platform; that is not supported")
        return chosen, descriptor.digest

    def _choose(self, entries: Sequence[Descriptor], where: str) -> Descriptor:
        candidates = [(d.platform, d) for d in entries if d.platform is not None]
        chosen = select(self.platform, candidates)
        if chosen is None:
            offered = ", ".join(sorted({str(p) for p, _ in candidates})) or "none"
            raise InvalidArgumentError(
                f"{where} has no image for this node's platform {self.platform} "
                f"(it offers: {offered})")
        return chosen

    def _image(self, descriptor: Descriptor, names: tuple[Reference, ...],
               extra: Iterable[Digest] = ()) -> LoadedImage:
        document = parse_manifest_or_index(self._document(descriptor), descriptor)
        if not isinstance(document, Manifest):
            raise InvalidArgumentError(f"{descriptor.digest} is referenced as a manifest but "
                                       "is an index")
        config = parse_config(self._document(document.config), document.config.digest)
        if len(config.diff_ids) != len(document.layers):
            raise InvalidArgumentError(
                f"manifest {descriptor.digest} lists {len(document.layers)} layers but its "
                f"config lists {len(config.diff_ids)} diff_ids")
        for layer in document.layers:
            self._blob(layer)
        blobs = {descriptor.digest, document.config.digest, *extra,
                 *(layer.digest for layer in document.layers)}
        return LoadedImage(names, descriptor, config, document.layers, frozenset(blobs))

    def with_repo_tags(self, images: list[LoadedImage]) -> list[LoadedImage]:
        """Docker 25+ archives: add manifest.json's RepoTags to images the index left unnamed."""
        tags: dict[str, list[Reference]] = {}
        for entry in self._docker_manifest():
            config_hex = posixpath.basename(str(entry.get("Config", ""))).removesuffix(".json")
            tags.setdefault(config_hex, []).extend(_repo_tags(entry))
        return [image if image.names else LoadedImage(
                    tuple(tags.get(hex_of(image.config.id), ())), image.manifest, image.config,
                    image.layers, image.blobs)
                for image in images]

    # Legacy docker save ------------------------------------------------------------------------

    def _docker_manifest(self) -> list[Mapping[str, Any]]:
        document = decode_json(self.archive.read("manifest.json"), "manifest.json")
        if not isinstance(document, list) or not all(isinstance(e, dict) for e in document):
            raise InvalidArgumentError("manifest.json must be a list of objects")
        return document

    def docker_legacy(self) -> list[LoadedImage]:
        return [self._legacy_image(entry, n)
                for n, entry in enumerate(self._docker_manifest())]

    def _legacy_image(self, entry: Mapping[str, Any], n: int) -> LoadedImage:
        where = f"manifest.json[{n}]"
        config_path, layer_paths = entry.get("Config"), entry.get("Layers")
        if not isinstance(config_path, str):
            raise InvalidArgumentError(f"{where}: Config must be a file name")
        if not isinstance(layer_paths, list) or not all(isinstance(p, str) for p in layer_paths):
            raise InvalidArgumentError(f"{where}: Layers must be a list of file names")
        config_bytes = self.archive.read(config_path)
        config_digest = sha256_of(config_bytes)
        named = posixpath.basename(config_path).removesuffix(".json")
        if len(named) == 64 and named != hex_of(config_digest):
            raise InvalidArgumentError(
                f"{where}: config {config_path} does not match its name: expected "
                f"sha256:{named}, got {config_digest}")
        self._ingest(config_path, config_digest, len(config_bytes))
        config = parse_config(config_bytes, config_digest)
        if len(config.diff_ids) != len(layer_paths):
            raise InvalidArgumentError(f"{where} lists {len(layer_paths)} layers but its config "
                                       f"lists {len(config.diff_ids)} diff_ids")
        layers = tuple(self._legacy_layer(path, diff_id)
                       for path, diff_id in zip(layer_paths, config.diff_ids, strict=True))
        manifest_bytes = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest,
                       "size": len(config_bytes)},
            "layers": [{"mediaType": d.media_type, "digest": d.digest, "size": d.size}
                       for d in layers],
        }, sort_keys=True, separators=(",", ":")).encode()
        manifest_digest = self.content.ingest_bytes(manifest_bytes)
        self.added.add(manifest_digest)
        manifest = Descriptor(OCI_MANIFEST, manifest_digest, len(manifest_bytes))
        blobs = {manifest_digest, config_digest, *(d.digest for d in layers)}
        return LoadedImage(tuple(_repo_tags(entry)), manifest, config, layers, frozenset(blobs))

    def _legacy_layer(self, path: str, diff_id: Digest) -> Descriptor:
        with self.archive.open(path) as (stream, size):
            compressed = stream.read(2) == _GZIP_MAGIC
        # A plain layer's digest is its diff_id: verify it now. A compressed one is checked
        # against the diff_id when it is unpacked.
        digest = self._ingest(path, None if compressed else diff_id, size)
        return Descriptor(OCI_LAYER_GZIP if compressed else OCI_LAYER, digest, size)


def _names(annotations: Mapping[str, str]) -> tuple[Reference, ...]:
    full = annotations.get(CONTAINERD_NAME_ANNOTATION)
    if full:
        return (parse_reference(full),)
    ref = annotations.get(REF_NAME_ANNOTATION, "")
    if "/" in ref or ":" in ref or "@" in ref:
        return (parse_reference(ref),)
    return ()  # a bare tag, as the layout spec suggests, names no repository


def _repo_tags(entry: Mapping[str, Any]) -> list[Reference]:
    tags = entry.get("RepoTags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidArgumentError("manifest.json: RepoTags must be a list of strings")
    return [parse_reference(t) for t in tags]

