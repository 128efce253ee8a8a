"""Work off the critical path: chores an API call need not wait for.

For its user, removing a container is over once its record is gone and its directories
are renamed out of the way, which is atomic and instant; deleting what they held costs a
few hundred microseconds per directory on a journaling filesystem. A `Background` runs
such chores on one thread, in order; `close` waits for the ones still queued. Whoever
renames first and deletes later leaves at worst a renamed directory behind after a
crash, which their start-up cleanup removes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from dockyard_common import get_logger

Later = Callable[[Callable[[], object]], None]
"""Something that runs a chore, now or later."""


def now(chore: Callable[[], object]) -> None:
    """The default: do it right away, before returning."""
    chore()


class Background:
    """Runs chores on one background thread; a chore that fails is logged, not raised."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dockyard-chores")

    def __call__(self, chore: Callable[[], object]) -> None:
        self._pool.submit(chore).add_done_callback(_report)

    def close(self) -> None:
        """Wait for every queued chore, then stop the thread."""
        self._pool.shutdown(wait=True)


def _report(done: Future[object]) -> None:
    error = done.exception()
    if error is not None:
        get_logger(__name__).warning("a background chore failed", error=str(error),
                                     kind=type(error).__name__)
