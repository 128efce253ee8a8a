"""Where a node keeps its state and its socket (kept light: the CLI imports it on start)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_ROOT = Path("/var/lib/dockyard")
DEFAULT_SOCKET = Path("/run/dockyard/dockyard.sock")


def state_root() -> Path:
    """`$DOCKYARD_ROOT`, else /var/lib/dockyard."""
    return Path(os.environ.get("DOCKYARD_ROOT") or DEFAULT_ROOT)


def socket_path() -> Path:
    """`$DOCKYARD_HOST` (a path, or unix://PATH), else /run/dockyard/dockyard.sock."""
    value = os.environ.get("DOCKYARD_HOST") or str(DEFAULT_SOCKET)
    return Path(value.removeprefix("unix://"))
