"""Entry point of the `dockyard` command.

A plain `dockyard run` takes the click-free fast path (`quick`); everything else, and any
`run` that path does not understand, goes to the click commands (`commands.cli`).
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    from dockyard_cli import quick  # noqa: PLC0415 -- imports stay in the path taken

    code = quick.main(sys.argv[1:])
    if code is not None:
        # Done: skip the interpreter's teardown, which costs a short `run` milliseconds.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    from dockyard_cli.commands import cli  # noqa: PLC0415

    cli(prog_name="dockyard")
