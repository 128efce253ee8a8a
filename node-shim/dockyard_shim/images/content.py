"""The content store: blobs named by their sha256 digest, written once, verified on the way in.

Layout under its root: `blobs/sha256/<hex>` for content, `ingest/` for writes in progress.
`ingest` streams into a temp file in `ingest/`, counting and hashing as it goes, and renames
it into `blobs/` only when both the size and the digest are the ones expected; on a mismatch
the temp file is deleted and InvalidArgumentError names both digests. A blob in `blobs/` is
therefore always complete and correct (barring disk corruption), and a crash mid-write
leaves only a temp file that `sweep_ingests` removes.

Deleting a blob that an image still uses is the caller's problem: the image store decides
what is garbage, under its own lock. Files only: no metadata.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from dockyard_shim.errors import InvalidArgumentError, NotFoundError
from dockyard_shim.images.digest import Digest, hex_of, parse_digest

_CHUNK = 1 << 20


class ContentStore:
    """Blobs under `root`; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self._blobs = self.root / "blobs" / "sha256"
        self._ingest = self.root / "ingest"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._ingest.mkdir(parents=True, exist_ok=True)

    @property
    def blob_dir(self) -> Path:
        """The folder holding `sha256/<hex>` blob files, which skopeo can share."""
        return self._blobs.parent

    def path(self, digest: Digest) -> Path:
        """Where the blob `digest` lives (whether or not it is there)."""
        return self._blobs / hex_of(parse_digest(digest))

    def has(self, digest: Digest) -> bool:
        """Whether the blob is present."""
        return self.path(digest).is_file()

    def size(self, digest: Digest) -> int:
        """The blob's size in bytes."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError as e:
            raise NotFoundError(f"blob {digest} not found in the content store") from e

    def open(self, digest: Digest) -> BinaryIO:
        """The blob, open for reading; NotFoundError when absent."""
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError as e:
            raise NotFoundError(f"blob {digest} not found in the content store") from e

    def read(self, digest: Digest, limit: int) -> bytes:
        """The whole blob, which must be at most `limit` bytes (documents, not layers)."""
        with self.open(digest) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise InvalidArgumentError(f"blob {digest} is larger than {limit} bytes")
        return data

    def ingest(self, stream: IO[bytes], digest: Digest | None = None,
               size: int | None = None) -> tuple[Digest, int]:
        """Store what `stream` yields; its digest and size.

        With `digest` and/or `size`, the content must match them, or InvalidArgumentError
        is raised and nothing is kept. A blob already present with the expected digest is not
        read again.
        """
        if digest is not None:
            digest = parse_digest(digest)
            if self.has(digest) and (size is None or self.size(digest) == size):
                return digest, self.size(digest)
        fd, temp_name = tempfile.mkstemp(dir=self._ingest, prefix="blob-")
        temp = Path(temp_name)
        try:
            hasher, written = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    written += len(chunk)
                    if size is not None and written > size:
                        raise InvalidArgumentError(
                            f"blob {digest or '(being ingested)'} is larger than the {size} "
                            "bytes its descriptor declares")
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = Digest("sha256:" + hasher.hexdigest())
            if size is not None and written != size:
                raise InvalidArgumentError(
                    f"blob {digest or actual} is {written} bytes, but its descriptor "
                    f"declares {size}")
            if digest is not None and actual != digest:
                raise InvalidArgumentError(
                    f"blob content does not match its digest: expected {digest}, got {actual}")
            os.chmod(temp, 0o644)
            temp.rename(self.path(actual))
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return actual, written

    def ingest_bytes(self, data: bytes) -> Digest:
        """Store `data` (a manifest or a config we built); its digest."""
        digest, _ = self.ingest(io.BytesIO(data))
        return digest

    def delete(self, digest: Digest) -> bool:
        """Remove the blob; False when it was not there."""
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def list(self) -> Iterator[Digest]:
        """Every blob present, in digest order."""
        for entry in sorted(self._blobs.iterdir()):
            try:
                yield parse_digest(f"sha256:{entry.name}")
            except InvalidArgumentError:
                continue  # not ours: never list (or collect) a file we did not name

    def sweep_ingests(self) -> builtins.list[Path]:
        """Delete every write in progress: only safe when no ingest can be running."""
        swept = sorted(self._ingest.iterdir())
        for path in swept:
            path.unlink(missing_ok=True)
        return swept

