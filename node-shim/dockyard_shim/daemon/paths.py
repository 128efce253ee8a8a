"""Where a node keeps its state and its socket.

Light on purpose: the fast path of `dockyard run` imports it, so pathlib (which costs a
few milliseconds of start-up) is imported only by the functions that return a Path.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing itself costs milliseconds to import
if TYPE_CHECKING:
    from pathlib import Path

    from dockyard_shim.runtime.userns import SubordinateIds
    from dockyard_shim.volumes import HostPaths

DEFAULT_ROOT = "/var/lib/dockyard"
DEFAULT_SOCKET = "/run/dockyard/dockyard.sock"
DEFAULT_CGROUP_PARENT = "dockyard"


def state_root() -> Path:
    """`$DOCKYARD_ROOT`, else /var/lib/dockyard."""
    from pathlib import Path  # noqa: PLC0415 -- see the module's docstring

    return Path(os.environ.get("DOCKYARD_ROOT") or DEFAULT_ROOT)


def socket_file() -> str:
    """`$DOCKYARD_HOST` (a path, or unix://PATH), else /run/dockyard/dockyard.sock."""
    return (os.environ.get("DOCKYARD_HOST") or DEFAULT_SOCKET).removeprefix("unix://")


def socket_path() -> Path:
    """`socket_file()` as a Path."""
    from pathlib import Path  # noqa: PLC0415 -- see the module's docstring

    return Path(socket_file())


def cgroup_parent() -> str:
    """`$DOCKYARD_CGROUP_PARENT`, else `dockyard`: the cgroup (in every hierarchy) that
    holds this node's containers. Two daemons on one machine need different ones."""
    return os.environ.get("DOCKYARD_CGROUP_PARENT") or DEFAULT_CGROUP_PARENT


def host_paths(root: Path) -> HostPaths:
    """Which host directories containers may have: under `$DOCKYARD_HOST_PATHS` (roots
    separated by `:`, default `/`: any), never the state root `root` or the socket."""
    from dockyard_shim.volumes import HostPaths  # noqa: PLC0415 -- see the docstring

    roots = os.environ.get("DOCKYARD_HOST_PATHS") or "/"
    allowed = tuple(os.path.normpath(r) for r in roots.split(":") if r)
    return HostPaths(allowed=allowed, protected=(os.path.abspath(root), socket_file()))


def subordinate_ids() -> SubordinateIds:
    """Where `--userns auto` takes its ids: `$DOCKYARD_SUBUID` and `$DOCKYARD_SUBGID`,
    else /etc/subuid and /etc/subgid. A node shim in a container (the Helm chart's) reads
    the node's files where they are mounted."""
    from pathlib import Path  # noqa: PLC0415 -- see the module's docstring

    from dockyard_shim.runtime.userns import SubordinateIds  # noqa: PLC0415

    return SubordinateIds(Path(os.environ.get("DOCKYARD_SUBUID") or "/etc/subuid"),
                          Path(os.environ.get("DOCKYARD_SUBGID") or "/etc/subgid"))
