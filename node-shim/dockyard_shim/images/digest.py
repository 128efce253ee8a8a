"""Content digests and layer chain ids, as the OCI image spec defines them.

A digest names content by its hash: `sha256:<64 lowercase hex>`. Only sha256 is accepted:
it is what every registry and `docker save` produce, and refusing the rest keeps a path
built from a digest (`blobs/sha256/<hex>`) safe by construction. A chain id names a stack of
layers (image-spec, config.md "Layer ChainID"): chainid(L0) = diffid(L0), and
chainid(Ln) = sha256(chainid(Ln-1) + " " + diffid(Ln)), so two images that share their
first layers share their first chain ids, and so their unpacked snapshots.

Pure computation: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import NewType

from dockyard_shim.errors import InvalidArgumentError

Digest = NewType("Digest", str)
"""`sha256:<64 lowercase hex>`: a blob's name in the content store, an image id."""

ChainId = NewType("ChainId", str)
"""A digest naming a stack of layers; the key of the committed snapshot holding them."""

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def parse_digest(value: object, what: str = "digest") -> Digest:
    """`value` as a Digest; InvalidArgumentError naming `what` when it is not one."""
    if isinstance(value, str) and _DIGEST.fullmatch(value):
        return Digest(value)
    shown = repr(value)[:100]
    if isinstance(value, str) and ":" in value and not value.startswith("sha256:"):
        raise InvalidArgumentError(
            f"{what} {shown} uses an unsupported algorithm: only sha256 digests are accepted")
    raise InvalidArgumentError(f"{what} {shown} is not a digest of the form sha256:<64 hex>")


def sha256_of(data: bytes) -> Digest:
    """The digest of `data`."""
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


def hex_of(digest: Digest) -> str:
    """The hex part of a digest, which names its file."""
    return digest.removeprefix("sha256:")


def chain_ids(diff_ids: Sequence[Digest]) -> list[ChainId]:
    """The chain id of every prefix of `diff_ids`, bottom layer first."""
    found: list[ChainId] = []
    for diff_id in diff_ids:
        if not found:
            found.append(ChainId(diff_id))
        else:
            found.append(ChainId(sha256_of(f"{found[-1]} {diff_id}".encode())))
    return found
