"""The bounds of one layer application, and what it reports when it is done.

A layer is untrusted input: a registry, a mirror or a user's `docker save` can hand us any
bytes. Every resource an archive can make us spend is bounded here, before it is spent: the
bytes written, the number of entries, the inodes created, the size of the extended headers
that come before one entry, and, optionally, how far a compressed stream may expand.

Pure data: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from dockyard_shim.errors import InvalidArgumentError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True)
class Limits:
    """How much one layer may make us do; exceeding any bound aborts the application.

    The defaults fit real images with a wide margin (the largest public images have a few
    hundred thousand files and a few GiB per layer) while keeping a hostile layer from filling
    the node's disk or memory.

    - `max_bytes`: regular-file data in the stream, counted by the size each entry declares
      before any of it is read, so a sparse or zero-filled giant is refused before it is
      written. Data we skip (a whiteout marker with content) counts too: the limit bounds
      the work, not only the disk.
    - `max_entries`: tar entries, extended headers folded into the entry they describe.
    - `max_inodes`: directory entries we create (files, directories, parents created on
      demand, symlinks, hardlinks, fifos, whiteouts).
    - `max_header_bytes`: the PAX and GNU long-name headers in front of one entry, together
      (Go's archive/tar uses the same 1 MiB bound). Keeps the parser's memory flat.
    - `max_compressed_ratio`: off (None) by default. gzip tops out near 1032:1, and real
      layers that hold zero-filled files come close to it, so a ratio low enough to matter
      refuses real images; `max_bytes`, `max_entries` and `max_header_bytes` bound the
      uncompressed stream already. Set it when the caller wants a bomb to fail early: the
      first MiB is always allowed, then uncompressed bytes may not exceed ratio × compressed.
    """

    max_bytes: int = 16 * GiB
    max_entries: int = 1_000_000
    max_inodes: int = 1_000_000
    max_header_bytes: int = 1 * MiB
    max_compressed_ratio: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_entries", "max_inodes", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"Limits.{name} must be at least 1")
        if self.max_compressed_ratio is not None and self.max_compressed_ratio < 1:
            raise InvalidArgumentError("Limits.max_compressed_ratio must be at least 1, or None")


@dataclass(frozen=True)
class ApplyStats:
    """What applying one layer did.

    `diff_id` is "sha256:<hex>" of the uncompressed tar stream, every byte of it including
    the end-of-archive padding: the OCI diff_id the image config lists in `rootfs.diff_ids`,
    which the caller must compare before it commits the snapshot.
    """

    diff_id: str
    entries: int
    bytes_written: int
    whiteouts: int
    inodes: int = 0
    compression: str = "none"  # "gzip" or "none": what the blob turned out to be
