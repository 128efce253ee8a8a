"""The local image store: load, import, name, unpack and remove images on this node.

Layout under its root: `content/` (the content store), `images.db` (the image index),
`lock` (see `_lock`). Layers are unpacked into the snapshotter it is given, as committed
snapshots named by chain id, shared by every image that has them.

Rules it keeps:
- an image's id is its config digest (as Docker), and its names are normalised references;
  loading a name that exists moves it to the new image, as `docker load` does;
- nothing unverified is stored: blobs are checked against their descriptors on the way in,
  layers against the config's diff ids when unpacked;
- a failed load or import leaves nothing behind: the blobs and snapshots it added are taken
  back out (unless another image uses them), and no image row is written;
- removing an image's last name deletes it, then collects, mark and sweep, every blob no
  image references and every layer snapshot no image references. A layer snapshot with
  children (a container's rootfs, say) is kept and reported, and collected by a later
  removal once it is free.

Registry pulls and pushes (`distribution`) go through `add` and the content store.
"""

from __future__ import annotations

import builtins
import contextlib
import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from dockyard_shim.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from dockyard_shim.images._lock import StoreLock
from dockyard_shim.images.content import ContentStore
from dockyard_shim.images.digest import ChainId, Digest, parse_digest
from dockyard_shim.images.loaders import LoadedImage, read_archive
from dockyard_shim.images.metadata import ImageDB, ImageRecord, LayerRow, Transaction
from dockyard_shim.images.oci import (
    MAX_DOCUMENT,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    ImageConfig,
    parse_config,
)
from dockyard_shim.images.platform import Platform, node_platform
from dockyard_shim.images.reference import Reference, parse_reference
from dockyard_shim.images.unpack import (
    INIT_LABEL,
    LAYER_LABEL,
    stale_extractions,
    unpack_layers,
)
from dockyard_shim.snapshots import Kind, SnapshotKey, Snapshotter

_HEX_PREFIX = re.compile(r"[0-9a-f]{1,64}")
_CHUNK = 1 << 20
_TAR_MAGIC_OFFSET = 257  # "ustar" in a POSIX tar header (and GNU's "ustar  ")


@dataclass(frozen=True)
class RemoveReport:
    """What `remove` did: names untagged, images deleted, what was collected and kept."""

    untagged: tuple[str, ...] = ()
    deleted: tuple[Digest, ...] = ()
    blobs_removed: tuple[Digest, ...] = ()
    snapshots_removed: tuple[SnapshotKey, ...] = ()
    """Layer snapshots no image needs any more, and extract snapshots left by a crash."""
    snapshots_kept: tuple[SnapshotKey, ...] = ()
    """Layer snapshots no image needs but something else does (a container built on them)."""


class ImageStore:
    """Images on this node, under `root`, unpacked into `snapshotter`."""

    def __init__(self, root: Path, snapshotter: Snapshotter, *,
                 platform: Platform | None = None) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.content = ContentStore(self.root / "content")
        self.snapshotter = snapshotter
        self.platform = platform or node_platform()
        self._lock = StoreLock(self.root / "lock")
        self._db = ImageDB(self.root / "images.db")

    # Adding images ------------------------------------------------------------------------

    def load(self, path: Path, *, unpack: bool = False) -> builtins.list[ImageRecord]:
        """Load every image in an OCI layout or `docker save` tar (compressed or not).

        Multi-platform images are resolved to this node's platform. With `unpack`, layers
        are unpacked too, and a layer that does not unpack to its diff id fails the load.
        """
        return self.add(lambda added, _: read_archive(Path(path), self.content,
                                                      self.platform, added), unpack=unpack)

    def add(self, read: Callable[[set[Digest], builtins.list[ChainId]],
                                 builtins.list[LoadedImage]], *,
            unpack: bool = False) -> builtins.list[ImageRecord]:
        """Add the images that `read` puts into the content store, all or nothing.

        `read` stores the images' blobs and adds to the set it is given every blob it
        added (and to the list every layer it unpacked, if it unpacks some itself), so that
        a failure (its own, an unpack's) takes them back out.
        """
        added: set[Digest] = set()
        unpacked: list[ChainId] = []
        try:
            with self._lock.shared():
                found = read(added, unpacked)
                if unpack:
                    for image in found:
                        unpack_layers(self.snapshotter, self.content,
                                      layer_rows(image.layers, image.config), unpacked)
                with self._db.write() as tx:
                    ids = [self._record(tx, image) for image in found]
        except BaseException:
            self._take_back(added, unpacked)
            raise
        with self._db.read() as tx:
            return [r for i in dict.fromkeys(ids) if (r := tx.get(i)) is not None]

    def import_rootfs(self, tar_path: Path, name: str, *, unpack: bool = False) -> ImageRecord:
        """Make a one-layer image of a root filesystem tar (plain or gzip), like
        `docker import`: an OCI config for this node's platform with an empty command."""
        ref = _taggable(name)
        tar_path = Path(tar_path)
        diff_id, compressed = _diff_id_of_tar(tar_path)

        def read(added: set[Digest], _: builtins.list[ChainId]) -> builtins.list[LoadedImage]:
            with open(tar_path, "rb") as f:
                blob, size = self.content.ingest(f)
            added.add(blob)
            config = self._import_config(diff_id, datetime.now(UTC), tar_path.name)
            layer = Descriptor(OCI_LAYER_GZIP if compressed else OCI_LAYER, blob, size)
            return [self.new_image(config, (layer,), (ref,), added)]

        (record,) = self.add(read, unpack=unpack)
        return record

    def new_image(self, config: Mapping[str, object], layers: Sequence[Descriptor],
                  names: Sequence[Reference], added: set[Digest]) -> LoadedImage:
        """Store `config` and an OCI manifest over it and `layers` (blobs stored already);
        the image, for `add`'s `read` to return. `added` receives the two new blobs."""
        config_bytes = _document(config)
        config_digest = self.content.ingest_bytes(config_bytes)
        added.add(config_digest)
        manifest_bytes = _document({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest,
                       "size": len(config_bytes)},
            "layers": [{"mediaType": d.media_type, "digest": d.digest, "size": d.size}
                       for d in layers]})
        manifest_digest = self.content.ingest_bytes(manifest_bytes)
        added.add(manifest_digest)
        return LoadedImage(
            names=tuple(names),
            manifest=Descriptor(OCI_MANIFEST, manifest_digest, len(manifest_bytes)),
            config=parse_config(config_bytes, config_digest), layers=tuple(layers),
            blobs=frozenset({manifest_digest, config_digest, *(d.digest for d in layers)}))

    def _import_config(self, diff_id: Digest, now: datetime, source: str) -> dict[str, object]:
        created = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        config: dict[str, object] = {
            "created": created, "architecture": self.platform.architecture,
            "os": self.platform.os, "config": {"Cmd": []},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": "dockyard import",
                         "comment": f"imported from {source}"}],
        }
        if self.platform.variant:
            config["variant"] = self.platform.variant
        return config

    def _record(self, tx: Transaction, image: LoadedImage) -> Digest:
        size = sum(self.content.size(d) for d in image.blobs)
        record = ImageRecord(
            id=image.config.id, names=(), manifest_digest=image.manifest.digest,
            manifest_media_type=image.manifest.media_type, created=image.config.created,
            loaded=datetime.now(UTC), size=size)
        tx.add_image(record, layer_rows(image.layers, image.config), image.blobs)
        for name in image.names:
            tx.set_name(str(name), image.config.id)
        return image.config.id

    def _take_back(self, blobs: set[Digest], chains: Iterable[ChainId]) -> None:
        """Undo a failed load: remove what it added that no image references."""
        if not blobs and not chains:
            return
        with self._lock.exclusive():
            with self._db.read() as tx:
                kept_blobs, kept_chains = tx.referenced_blobs(), tx.referenced_chains()
            for chain in reversed(list(chains)):
                if chain not in kept_chains:
                    with contextlib.suppress(NotFoundError, FailedPreconditionError):
                        self.snapshotter.remove(chain)
            for blob in blobs - kept_blobs:
                self.content.delete(blob)

    # Reading --------------------------------------------------------------------------------

    def list(self) -> builtins.list[ImageRecord]:
        """Every image, newest first."""
        with self._db.read() as tx:
            return tx.all()

    def get(self, ref: str) -> ImageRecord:
        """The image named `ref` (any form of a name), or with id or unique id prefix `ref`."""
        with self._db.read() as tx:
            image_id, _ = self._resolve(tx, ref)
            record = tx.get(image_id)
        if record is None:  # pragma: no cover -- resolved inside the same transaction
            raise NotFoundError(f"no such image: {ref}")
        return record

    def config(self, ref: str) -> ImageConfig:
        """How to run the image, and the chain id its containers start from."""
        record = self.get(ref)
        return parse_config(self.content.read(record.id, MAX_DOCUMENT), record.id)

    def _resolve(self, tx: Transaction, ref: str) -> tuple[Digest, str | None]:
        """The image id for `ref`, and the name it matched when it matched a name."""
        problem: InvalidArgumentError | None = None
        try:
            parsed = parse_reference(ref)
        except InvalidArgumentError as e:
            problem, parsed = e, None
        if parsed is not None:
            if parsed.digest is not None and parsed.tag is None:
                found = tx.ids_by_manifest(parsed.digest)
                if found:
                    return found[0], None
            image_id = tx.image_of(str(parsed))
            if image_id is not None:
                return image_id, str(parsed)
        prefix = ref if ref.startswith("sha256:") else f"sha256:{ref}"
        if _HEX_PREFIX.fullmatch(prefix.removeprefix("sha256:")):
            matches = tx.ids_starting(prefix)
            if len(matches) == 1:
                return matches[0], None
            if len(matches) > 1:
                raise InvalidArgumentError(f"image id prefix {ref!r} is ambiguous: it matches "
                                           f"{len(matches)} images; give more digits")
        elif problem is not None:
            raise problem
        shown = ref if parsed is None or str(parsed) == ref else f"{ref} ({parsed})"
        raise NotFoundError(f"no such image: {shown}")

    # Unpacking ------------------------------------------------------------------------------

    def unpack(self, ref: str) -> ChainId | None:
        """Unpack the image's layers (those not yet there); its top chain id, the parent of
        its containers' snapshots (None for an image without layers)."""
        with self._lock.shared():
            with self._db.read() as tx:
                image_id, _ = self._resolve(tx, ref)
                layers = tx.layers(image_id)
            return unpack_layers(self.snapshotter, self.content, layers)

    # Names ----------------------------------------------------------------------------------

    def tag(self, source: str, target: str) -> ImageRecord:
        """Give the image `source` the name `target` (moved from any other image)."""
        name = str(_taggable(target))
        with self._db.write() as tx:
            image_id, _ = self._resolve(tx, source)
            tx.set_name(name, image_id)
        return self.get(image_id)

    # Removing -------------------------------------------------------------------------------

    def remove(self, ref: str, *, force: bool = False,
               in_use: Set[str] = frozenset()) -> RemoveReport:
        """Untag `ref`; delete the image when no name is left, then collect garbage.

        `ref` as a name removes that name only. As an id, it deletes the image with all its
        names, which needs `force` when it has more than one (as `docker rmi`). An image in
        `in_use` (ids of images containers were created from) is not deleted: that is
        refused, or with `force` it only loses its names, as with Docker.
        """
        with self._lock.exclusive():
            with self._db.write() as tx:
                image_id, matched = self._resolve(tx, ref)
                names = tx.names_of(image_id)
                if matched is not None:
                    untagged = [matched]
                elif len(names) > 1 and not force:
                    raise FailedPreconditionError(
                        f"image {image_id[:19]} has {len(names)} names "
                        f"({', '.join(names)}): remove them by name, or force")
                else:
                    untagged = names
                if len(untagged) == len(names) and image_id in in_use and not force:
                    raise FailedPreconditionError(
                        f"image {image_id[:19]} is used by a container: remove the "
                        "container first, or force (the image then only loses its names)")
                for name in untagged:
                    tx.delete_name(name)
                if len(untagged) < len(names) or image_id in in_use:
                    return RemoveReport(untagged=tuple(untagged))
                tx.delete_image(image_id)
                blobs, chains = tx.referenced_blobs(), tx.referenced_chains()
            removed_blobs = self._sweep_blobs(blobs)
            removed, kept = self._sweep_snapshots(chains)
        return RemoveReport(tuple(untagged), (image_id,), tuple(removed_blobs), tuple(removed),
                            tuple(kept))

    def prune(self, in_use: Set[str], *, all_images: bool = False) -> RemoveReport:
        """Delete unnamed images (with `all_images`, every image) that no container uses
        (`in_use`: image ids), then collect every blob and layer snapshot no image
        references, as `docker image prune [-a]`. A layer a container is built on is never
        collected: it is kept and reported."""
        with self._lock.exclusive():
            with self._db.write() as tx:
                doomed = [record.id for record in tx.all()
                          if record.id not in in_use and (all_images or not record.names)]
                untagged = [name for image_id in doomed for name in tx.names_of(image_id)]
                for image_id in doomed:
                    tx.delete_image(image_id)
                blobs, chains = tx.referenced_blobs(), tx.referenced_chains()
            removed_blobs = self._sweep_blobs(blobs)
            removed, kept = self._sweep_snapshots(chains)
        return RemoveReport(tuple(untagged), tuple(doomed), tuple(removed_blobs),
                            tuple(removed), tuple(kept))

    def _sweep_blobs(self, referenced: set[Digest]) -> builtins.list[Digest]:
        # Under the exclusive lock nobody is ingesting: what is in ingest/ is a crash's.
        self.content.sweep_ingests()
        return [d for d in self.content.list() if d not in referenced and self.content.delete(d)]

    def _sweep_snapshots(self, referenced: set[ChainId]
                         ) -> tuple[builtins.list[SnapshotKey], builtins.list[SnapshotKey]]:
        # Under the exclusive lock no unpack runs: an extract snapshot is a crash's leftover.
        garbage = stale_extractions(self.snapshotter)
        for info in self.snapshotter.walk(kind=Kind.COMMITTED):
            if LAYER_LABEL in info.labels and ChainId(info.key) not in referenced:
                garbage.append(info.key)
            elif INIT_LABEL in info.labels and ChainId(info.labels[INIT_LABEL]) \
                    not in referenced:
                garbage.append(info.key)  # its layer goes: so does the runtime's layer on it
        removed: list[SnapshotKey] = []
        kept: list[SnapshotKey] = []
        # A child is always created after its parent, so newest first removes children first.
        order = {info.key: n for n, info in enumerate(self.snapshotter.walk())}
        for key in sorted(garbage, key=lambda k: order.get(k, -1), reverse=True):
            try:
                self.snapshotter.remove(key)
                removed.append(key)
            except FailedPreconditionError:
                kept.append(key)
            except NotFoundError:
                continue  # another collector was here first
        self.snapshotter.cleanup()  # directories a busy mount kept from an earlier removal
        return removed, kept

    # Lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the image index (the snapshotter belongs to the caller)."""
        self._db.close()

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def layer_rows(layers: Sequence[Descriptor], config: ImageConfig) -> builtins.list[LayerRow]:
    """An image's layers as the store keeps them: each blob with its diff and chain ids."""
    return [LayerRow(n, layer.digest, layer.media_type, layer.size, diff_id, chain_id)
            for n, (layer, diff_id, chain_id) in enumerate(zip(
                layers, config.diff_ids, config.chain_ids, strict=True))]


def _taggable(name: str) -> Reference:
    ref = parse_reference(name)
    if ref.digest is not None:
        raise InvalidArgumentError(f"cannot name an image {name!r}: a name has a tag, not a "
                                   "digest (the digest is computed from the content)")
    return ref


def _document(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _diff_id_of_tar(path: Path) -> tuple[Digest, bool]:
    """The diff id (digest of the uncompressed tar) of a rootfs tar, and whether it is gzip."""
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw) if compressed else raw
            hasher = hashlib.sha256()
            head = stream.read(512)
            if len(head) < 512 or head[_TAR_MAGIC_OFFSET:_TAR_MAGIC_OFFSET + 5] != b"ustar":
                raise InvalidArgumentError(f"{path} is not a tar archive (plain or gzip)")
            hasher.update(head)
            while chunk := stream.read(_CHUNK):
                hasher.update(chunk)
    except FileNotFoundError as e:
        raise NotFoundError(f"rootfs archive {path} not found") from e
    except (OSError, EOFError, zlib.error) as e:
        raise InvalidArgumentError(f"{path} cannot be read as a tar archive: {e}") from e
    return parse_digest("sha256:" + hasher.hexdigest()), compressed

