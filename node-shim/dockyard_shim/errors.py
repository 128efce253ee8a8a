"""The node shim's error categories, in the containerd style.

Callers branch on the category, never on message text: `NotFoundError` (no such image,
container, snapshot…), `AlreadyExistsError` (a name or key in use), `FailedPreconditionError`
(the object is in the wrong state: removing a running container, committing an active
snapshot), `InvalidArgumentError` (bad input, caught at the edge) and `UnavailableError`
(a resource or service cannot be had now: the daemon is down, the kernel lacks a feature).
Each error carries a message for humans that says what to do; lower-level exceptions are
chained with `raise … from e`. The daemon maps categories to HTTP statuses and the CLI to
exit codes, so every layer agrees on what went wrong.

Pure data: no I/O.
"""

from __future__ import annotations


class ShimError(Exception):
    """Base of every error the node shim raises on purpose."""

    http_status = 500


class NotFoundError(ShimError):
    """The named object does not exist."""

    http_status = 404


class AlreadyExistsError(ShimError):
    """An object with that name or key exists already."""

    http_status = 409


class FailedPreconditionError(ShimError):
    """The object exists but is not in a state that allows the operation."""

    http_status = 412


class InvalidArgumentError(ShimError):
    """The request is malformed; the message names the argument and the fix."""

    http_status = 400


class UnavailableError(ShimError):
    """Something needed cannot be had right now (a kernel feature, the daemon, a lock)."""

    http_status = 503
