"""Deleting directories off the critical path.

For its user, removing a container is over once its record is gone and its directories
are renamed out of the way, which is atomic and instant. Deleting what they held costs a
few hundred microseconds per directory on a journaling filesystem, and nobody needs to
wait for that. A `Sweeper` runs such deletions on one background thread, in order; `close`
waits for the ones still queued. Whoever renames first and sweeps after leaves at worst a
renamed directory behind after a crash, which their start-up cleanup removes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

Sweep = Callable[[Callable[[], object]], None]
"""Something that runs a deletion, now or later."""


def sweep_now(delete: Callable[[], object]) -> None:
    """The default: delete right away, before returning."""
    delete()


class Sweeper:
    """Runs deletions on one background thread; the deletions must not raise."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dockyard-sweeper")

    def __call__(self, delete: Callable[[], object]) -> None:
        self._pool.submit(delete)

    def close(self) -> None:
        """Wait for every queued deletion, then stop the thread."""
        self._pool.shutdown(wait=True)
