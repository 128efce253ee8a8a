"""What `dockyard run` and `create` send to the daemon and do with its answers.

Shared by the click commands and the click-free fast path of `run` (`quick`), so it
imports neither click nor the runtime's models: the container config goes out as the JSON
the daemon reads (`ContainerConfig.from_json`), and the daemon validates every field.
"""

from __future__ import annotations

import sys

from dockyard_cli.flags import parse_env, security_config, sysctl_config
from dockyard_shim.daemon.client import Client, DaemonError

TYPE_CHECKING = False  # typing costs `dockyard run` milliseconds of start-up
if TYPE_CHECKING:
    from typing import Any


def conflict(options: dict[str, Any], *, auto_remove: bool) -> str | None:
    """Why these options cannot go together, or None."""
    if auto_remove and options["restart"][0] != "no":
        return "--rm and --restart are mutually exclusive"
    return None


def container_json(options: dict[str, Any], *, auto_remove: bool = False) -> dict[str, Any]:
    """The container config for parsed `run`/`create` options (flag dest -> value)."""
    policy, retries = options["restart"]
    entrypoint = options["entrypoint"]
    return {
        "image": options["image"], "name": options["name"],
        "command": list(options["command"]),
        "entrypoint": None if entrypoint is None else entrypoint.split(),
        "env": list(parse_env(options["env"])), "working_dir": options["workdir"],
        "user": options["user"], "hostname": options["hostname"],
        "memory_bytes": options["memory"], "cpu_millis": options["cpus"],
        "pids_limit": options["pids_limit"], **_mounts(options),
        "network": options["network"], "ports": list(options["publish"]),
        "read_only": options["read_only"], "restart": policy,
        "restart_max_retries": retries, "auto_remove": auto_remove,
        "cap_add": list(options["cap_add"]), "cap_drop": list(options["cap_drop"]),
        **security_config(options["security_opt"]),
        "sysctls": sysctl_config(options["sysctl"]),
        "userns": options["userns"],
    }


def _mounts(options: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """-v, --mount and --tmpfs, sorted into the config's binds, volumes and tmpfs."""
    sorted_out: dict[str, list[dict[str, Any]]] = {"binds": [], "volumes": [], "tmpfs": []}
    field = {"bind": "binds", "volume": "volumes", "tmpfs": "tmpfs"}
    for mount in (*options["volume"], *options["mount"], *options["tmpfs"]):
        kind = mount["type"]
        sorted_out[field[kind]].append({k: v for k, v in mount.items() if k != "type"})
    return sorted_out


def run(client: Client, options: dict[str, Any], *, detach: bool, auto_remove: bool) -> int:
    """Create and start a container; in the foreground stream its output until it exits.

    Returns the exit code for the CLI: the container's (255 when unknown) in the
    foreground, 0 once a detached container started (its id is printed).
    """
    # Detached, the daemon removes the container when it exits; in the foreground we do,
    # once we have its exit code.
    cid = client.call("POST", "/containers/create",
                      container_json(options, auto_remove=auto_remove and detach))["Id"]
    try:
        client.call("POST", f"/containers/{cid}/start")
    except DaemonError:
        if auto_remove:
            client.call("DELETE", f"/containers/{cid}?force=1&v=1")
        raise
    if detach:
        print(cid)
        return 0
    out = sys.stdout.buffer
    for chunk in client.stream(f"/containers/{cid}/logs?follow=1"):
        out.write(chunk)
        out.flush()
    code = client.call("POST", f"/containers/{cid}/wait")["StatusCode"]
    if auto_remove:
        client.call("DELETE", f"/containers/{cid}?v=1")  # --rm takes its anonymous volumes too
    return code if code is not None else 255
