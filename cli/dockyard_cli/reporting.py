"""How the store-backed commands (images, volumes) report: one line on stderr, exit 1.

Light on purpose (no store imported): `dockyard volume …` should not pay for the image
store's imports.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import click

from dockyard_shim.errors import ShimError

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(1)


def confirmed(warning: str, *, force: bool) -> bool:
    """Whether to go on with what `warning` says: yes with --force, else ask (as Docker's
    prune commands do)."""
    return force or click.confirm(f"WARNING! {warning} Are you sure you want to continue?")


def reported(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the store's errors into one line on stderr and exit status 1."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ShimError as e:
            fail(str(e))
        except PermissionError as e:
            fail(f"{e.strerror}: {e.filename} (run as root, or set DOCKYARD_ROOT to a directory "
                  "you own)")

    return run
