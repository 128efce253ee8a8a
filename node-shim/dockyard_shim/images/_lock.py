"""The image store's lock between writers of content and the garbage collector.

Loading ingests blobs first and records the image that references them afterwards; between
the two, those blobs belong to no image. The collector must not see that moment. So every
load, import and unpack holds this lock shared, and the collector holds it exclusive while it
decides and deletes. It is an flock(2) on a file in the store's root: it works between
processes (the daemon and a CLI), between threads (each acquisition opens its own file
description), and is released by the kernel if its holder dies.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path


class StoreLock:
    """A shared/exclusive lock on the file at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _held(self, operation: int) -> Iterator[None]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, operation)
            yield
        finally:
            os.close(fd)  # closing the last descriptor releases the lock

    def shared(self) -> AbstractContextManager[None]:
        """Held by everything that adds content or snapshots."""
        return self._held(fcntl.LOCK_SH)

    def exclusive(self) -> AbstractContextManager[None]:
        """Held by the collector."""
        return self._held(fcntl.LOCK_EX)
