"""The Dockyard release version, read from the installed distribution's metadata."""

from __future__ import annotations

from functools import cache


@cache
def version() -> str:
    """The installed version (`0+unknown` in a source tree that was never installed).

    Read on demand: importlib.metadata costs 40 ms at start-up, which every CLI command
    would otherwise pay.
    """
    from importlib import metadata  # noqa: PLC0415 -- deferred on purpose, see above

    try:
        return metadata.version("dockyard")
    except metadata.PackageNotFoundError:
        return "0+unknown"
