"""Images on this node: a content store, an image index, archive loaders and the unpacker.

`ImageStore` is the entry point: `load` (OCI layout or `docker save` tar), `import_rootfs`
(`docker import`), `list`, `get`, `tag`, `remove` (with garbage collection), `unpack`
(layers into committed snapshots keyed by chain id) and `config` (what the runtime needs
to create a container). Values: `ImageRecord`, `ImageConfig`, `RemoveReport`, `Reference`,
`Platform`; ids are `Digest` and `ChainId`.

Beside it: `distribution` (pull, push and save; registry transport through skopeo in
`transport`) and `commit` (an image from a container's changes).

Imports `archive`, `snapshots`, `mounts` and `errors` from the shim; only the runtime, the
daemon and the CLI import this package.
"""

from dockyard_shim.images.content import ContentStore
from dockyard_shim.images.digest import ChainId, Digest, chain_ids, parse_digest, sha256_of
from dockyard_shim.images.metadata import ImageRecord
from dockyard_shim.images.oci import ImageConfig
from dockyard_shim.images.platform import Platform, node_platform
from dockyard_shim.images.reference import Reference, parse_reference
from dockyard_shim.images.store import ImageStore, RemoveReport

__all__ = [
    "ChainId", "ContentStore", "Digest", "ImageConfig", "ImageRecord", "ImageStore",
    "Platform", "Reference", "RemoveReport", "chain_ids", "node_platform", "parse_digest",
    "parse_reference", "sha256_of",
]
