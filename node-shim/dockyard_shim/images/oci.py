"""OCI and Docker image documents: descriptors, manifests, indexes, configs, parsed strictly.

Both families are accepted, since `docker save` and registries still serve Docker's
(`application/vnd.docker.distribution.manifest.v2+json` and friends). Every document is
untrusted input: it is size-limited before parsing, every digest is validated before it
becomes a path, and a document that is both a manifest and an index (it has `layers` and
`manifests`) is refused, as image-spec v1.0.2 requires after CVE-2021-41190, where such
a document was read as one thing by a verifier and as the other by a runtime.

Pure computation: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from dockyard_shim.errors import InvalidArgumentError, UnavailableError
from dockyard_shim.images.digest import ChainId, Digest, chain_ids, parse_digest
from dockyard_shim.images.platform import Platform

MAX_DOCUMENT = 4 << 20  # bytes; containerd's limit for manifests and indexes, ample for configs

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
# What `archive.apply_layer` can read: plain or gzip tar. Non-distributable ("foreign")
# layers are ordinary tars once present.
LAYER_TYPES = frozenset({
    OCI_LAYER, OCI_LAYER_GZIP, DOCKER_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
})
_ZSTD_LAYERS = frozenset({"application/vnd.oci.image.layer.v1.tar+zstd",
                          "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"})

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"


@dataclass(frozen=True)
class Descriptor:
    """A typed pointer to content: what it is, its digest and size."""

    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Manifest:
    """One single-platform image: its config and its layers, bottom first."""

    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    """A list of manifests, usually one per platform."""

    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageConfig:
    """What the runtime needs from an image: how to run it, and which snapshot to start from.

    `chain_id` is the top layer's chain id: `prepare(key, parent=chain_id)` gives a
    container its rootfs. It is None only for an image without layers.
    """

    id: Digest
    os: str
    architecture: str
    variant: str | None
    created: datetime | None
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    working_dir: str
    user: str
    exposed_ports: tuple[str, ...]
    volumes: tuple[str, ...]
    labels: Mapping[str, str]
    stop_signal: str | None
    diff_ids: tuple[Digest, ...]
    chain_ids: tuple[ChainId, ...]

    @property
    def chain_id(self) -> ChainId | None:
        """The chain id of the top layer (None for an image without layers)."""
        return self.chain_ids[-1] if self.chain_ids else None

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)


def decode_json(data: bytes, what: str) -> Any:
    """`data` parsed as JSON of any shape, refusing oversized or malformed documents."""
    if len(data) > MAX_DOCUMENT:
        raise InvalidArgumentError(f"{what} is {len(data)} bytes, more than {MAX_DOCUMENT}")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"{what} is not valid JSON: {e}") from e
    except RecursionError as e:
        # `[[[[…` a few thousand deep fits in a small document and exhausts the decoder's
        # stack; no image document nests more than a handful of levels.
        raise InvalidArgumentError(f"{what} nests too deeply to be an image document") from e


def load_json(data: bytes, what: str) -> dict[str, Any]:
    """`data` parsed as a JSON object, refusing oversized or malformed documents."""
    document = decode_json(data, what)
    if not isinstance(document, dict):
        raise InvalidArgumentError(f"{what} must be a JSON object")
    return document


def _str(document: Mapping[str, Any], key: str, what: str, default: str | None = None) -> str:
    value = document.get(key, default)
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what}: {key!r} must be a string")
    return value


def _strings(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgumentError(f"{what} must be a list of strings")
    return tuple(value)


def _string_map(value: object, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidArgumentError(f"{what} must map strings to strings")
    return dict(value)


def parse_descriptor(value: object, what: str) -> Descriptor:
    """A descriptor from its JSON form."""
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{what} must be a JSON object")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgumentError(f"{what}: size must be a non-negative integer")
    platform = None
    if value.get("platform") is not None:
        raw = value["platform"]
        if not isinstance(raw, dict):
            raise InvalidArgumentError(f"{what}: platform must be a JSON object")
        platform = Platform(_str(raw, "os", f"{what} platform"),
                            _str(raw, "architecture", f"{what} platform"),
                            _str(raw, "variant", f"{what} platform", "") or None)
    return Descriptor(
        media_type=_str(value, "mediaType", what),
        digest=parse_digest(value.get("digest"), f"{what} digest"),
        size=size,
        platform=platform,
        annotations=MappingProxyType(_string_map(value.get("annotations"),
                                                 f"{what} annotations")),
    )


def parse_manifest_or_index(data: bytes, descriptor: Descriptor) -> Manifest | Index:
    """The manifest or index that `descriptor` points to, whose bytes are `data`."""
    what = f"{descriptor.media_type or 'document'} {descriptor.digest}"
    document = load_json(data, what)
    if "layers" in document and "manifests" in document:
        raise InvalidArgumentError(
            f"{what} has both 'layers' and 'manifests': it is ambiguous (CVE-2021-41190) "
            "and refused")
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):  # looked up in sets below
        raise InvalidArgumentError(f"{what}: 'mediaType' must be a string")
    if declared is not None and descriptor.media_type and declared != descriptor.media_type:
        raise InvalidArgumentError(
            f"{what} says it is {declared!r} but was referenced as {descriptor.media_type!r}")
    kind = descriptor.media_type or declared
    if kind in INDEX_TYPES or (kind is None and "manifests" in document):
        return _index(document, what)
    if kind in MANIFEST_TYPES or (kind is None and "layers" in document):
        return _manifest(document, what)
    raise InvalidArgumentError(f"{what} is neither an image manifest nor an index "
                               f"(media type {kind!r})")


def _index(document: Mapping[str, Any], what: str) -> Index:
    raw = document.get("manifests")
    if not isinstance(raw, list):
        raise InvalidArgumentError(f"{what}: 'manifests' must be a list")
    return Index(tuple(parse_descriptor(d, f"{what} manifests[{n}]") for n, d in enumerate(raw)))


def _manifest(document: Mapping[str, Any], what: str) -> Manifest:
    if document.get("schemaVersion") != 2:
        raise InvalidArgumentError(f"{what}: only schemaVersion 2 manifests are supported")
    config = parse_descriptor(document.get("config"), f"{what} config")
    if config.media_type not in CONFIG_TYPES:
        raise InvalidArgumentError(
            f"{what}: config media type {config.media_type!r} is not an image config "
            "(is this an artifact rather than an image?)")
    raw = document.get("layers")
    if not isinstance(raw, list):
        raise InvalidArgumentError(f"{what}: 'layers' must be a list")
    layers = tuple(parse_descriptor(d, f"{what} layers[{n}]") for n, d in enumerate(raw))
    for layer in layers:
        if layer.media_type in _ZSTD_LAYERS:
            raise UnavailableError(f"{what}: layer {layer.digest} is zstd-compressed, which "
                                   "this node cannot unpack yet; use a gzip image")
        if layer.media_type not in LAYER_TYPES:
            raise InvalidArgumentError(f"{what}: layer {layer.digest} has unsupported media "
                                       f"type {layer.media_type!r}")
    return Manifest(config, layers)


def parse_config(data: bytes, digest: Digest) -> ImageConfig:
    """The image config whose bytes are `data` and whose digest (the image id) is `digest`."""
    what = f"image config {digest}"
    document = load_json(data, what)
    rootfs = document.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise InvalidArgumentError(f"{what}: rootfs.type must be 'layers'")
    raw_ids = rootfs.get("diff_ids")
    if not isinstance(raw_ids, list):
        raise InvalidArgumentError(f"{what}: rootfs.diff_ids must be a list")
    diff_ids = tuple(parse_digest(d, f"{what} diff_id") for d in raw_ids)
    run = document.get("config") or {}
    if not isinstance(run, dict):
        raise InvalidArgumentError(f"{what}: 'config' must be a JSON object")
    return ImageConfig(
        id=digest,
        os=_str(document, "os", what),
        architecture=_str(document, "architecture", what),
        variant=_str(document, "variant", what, "") or None,
        created=parse_time(document.get("created")),
        entrypoint=_strings(run.get("Entrypoint"), f"{what}: Entrypoint"),
        cmd=_strings(run.get("Cmd"), f"{what}: Cmd"),
        env=_strings(run.get("Env"), f"{what}: Env"),
        working_dir=_str(run, "WorkingDir", what, ""),
        user=_str(run, "User", what, ""),
        exposed_ports=tuple(sorted(_string_keys(run.get("ExposedPorts"), what))),
        volumes=tuple(sorted(_string_keys(run.get("Volumes"), what))),
        labels=MappingProxyType(_string_map(run.get("Labels"), f"{what}: Labels")),
        stop_signal=_str(run, "StopSignal", what, "") or None,
        diff_ids=diff_ids,
        chain_ids=tuple(chain_ids(diff_ids)),
    )


def _string_keys(value: object, what: str) -> list[str]:
    # ExposedPorts and Volumes are JSON objects whose values are empty objects (a Go set).
    if value is None:
        return []
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{what}: ExposedPorts and Volumes must be JSON objects")
    return [str(k) for k in value]


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 time, or None when absent or unreadable (it is informational only)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
