"""Container commands, the Docker way: run, create, start, ps, logs, stop, kill, rm, wait,
inspect, stats, pause, unpause. Each is a thin call to the node daemon."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from dockyard_cli.client import DaemonError, connect
from dockyard_cli.flags import (
    parse_cpus,
    parse_env,
    parse_port,
    parse_restart,
    parse_size,
    parse_volume,
)
from dockyard_shim.runtime.config import ContainerConfig

FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "json"]),
                      default="table", show_default=True, help="Output format.")


def _parsed(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, Any],
                                                      Any]:
    """A click callback applying `parse` to an option's value(s), so errors name the flag."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, tuple):
            return tuple(parse(item) for item in value)
        return parse(value)

    return callback


def _run_options(fn: Any) -> Any:
    options = [
        click.option("--name", default="", help="Name the container (default: a random one)."),
        click.option("-e", "--env", multiple=True, metavar="K=V",
                     help="Set an environment variable (repeatable); -e K copies K from "
                          "this shell."),
        click.option("-m", "--memory", metavar="SIZE", callback=_parsed(parse_size),
                     help="Memory limit: 64m, 1g…"),
        click.option("--cpus", metavar="N", callback=_parsed(parse_cpus),
                     help="CPU limit: 0.5, 2…"),
        click.option("--pids-limit", type=int, help="Most processes at once."),
        click.option("-v", "--volume", multiple=True, metavar="SRC:DST[:ro]",
                     callback=_parsed(parse_volume), help="Bind-mount a host path (repeatable)."),
        click.option("--network", type=click.Choice(["none", "host", "bridge"]),
                     default="none", show_default=True,
                     help="Networking: own loopback only, the host's, or a bridge."),
        click.option("-p", "--publish", multiple=True, metavar="[IP:]HOST:CTR",
                     callback=_parsed(parse_port),
                     help="Publish a container port (bridge network; repeatable)."),
        click.option("--hostname", default="", help="Container hostname (default: short id)."),
        click.option("--read-only", is_flag=True, help="Mount the image read-only."),
        click.option("-w", "--workdir", default="", help="Working directory in the container."),
        click.option("-u", "--user", default="", help="UID[:GID] or NAME[:GROUP] to run as."),
        click.option("--restart", default="no", show_default=True,
                     callback=_parsed(parse_restart),
                     help="Restart policy: no, on-failure[:N], always, unless-stopped."),
        click.option("--cap-add", multiple=True, help="Add a Linux capability."),
        click.option("--cap-drop", multiple=True, help="Drop a Linux capability (or ALL)."),
        click.option("--entrypoint", default=None, help="Override the image's ENTRYPOINT."),
        click.argument("image"),
        click.argument("command", nargs=-1, type=click.UNPROCESSED),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _config(options: dict[str, Any], auto_remove: bool = False) -> dict[str, Any]:
    policy, retries = options["restart"]
    config = ContainerConfig(
        image=options["image"], name=options["name"], command=tuple(options["command"]),
        entrypoint=None if options["entrypoint"] is None
        else tuple(options["entrypoint"].split()),
        env=parse_env(options["env"]), working_dir=options["workdir"], user=options["user"],
        hostname=options["hostname"],
        memory_bytes=options["memory"], cpu_millis=options["cpus"],
        pids_limit=options["pids_limit"], binds=options["volume"], network=options["network"],
        ports=options["publish"], read_only=options["read_only"],
        restart=policy, restart_max_retries=retries, auto_remove=auto_remove,
        cap_add=options["cap_add"], cap_drop=options["cap_drop"])
    return config.to_json()


_RUN_SETTINGS = {"allow_interspersed_args": False}  # flags after IMAGE belong to the command


@click.command("run", context_settings=_RUN_SETTINGS)
@click.option("-d", "--detach", is_flag=True, help="Run in the background; print the id.")
@click.option("--rm", "auto_remove", is_flag=True, help="Remove the container when it exits.")
@_run_options
def run(detach: bool, auto_remove: bool, **options: Any) -> None:
    """Run a command in a new container.

    In the foreground the container's output is streamed and `dockyard run` exits with the
    container's exit code (127 when the command is not found, as Docker).

    \b
    Examples:
      dockyard run --rm busybox echo hello
      dockyard run -d --name web -m 64m --cpus 0.5 busybox httpd -f -p 8080
    """
    if auto_remove and options["restart"][0] != "no":
        raise click.UsageError("--rm and --restart are mutually exclusive")
    client = connect()
    # Detached, the daemon removes the container when it exits; in the foreground we do,
    # once we have its exit code.
    created = client.call("POST", "/containers/create", _config(options, auto_remove and detach))
    cid = created["Id"]
    try:
        client.call("POST", f"/containers/{cid}/start")
    except DaemonError:
        if auto_remove:
            client.call("DELETE", f"/containers/{cid}?force=1")
        raise
    if detach:
        click.echo(cid)
        return
    out = sys.stdout.buffer
    for chunk in client.stream(f"/containers/{cid}/logs?follow=1"):
        out.write(chunk)
        out.flush()
    code = client.call("POST", f"/containers/{cid}/wait")["StatusCode"]
    if auto_remove:
        client.call("DELETE", f"/containers/{cid}")
    sys.exit(code if code is not None else 255)


@click.command("create", context_settings=_RUN_SETTINGS)
@_run_options
def create(**options: Any) -> None:
    """Create a container without starting it; print its id."""
    click.echo(connect().call("POST", "/containers/create", _config(options))["Id"])


def _each(verb: str, refs: tuple[str, ...], url: str, method: str = "POST") -> None:
    """Apply one call to several containers; report failures, exit 1 if any."""
    client = connect()
    failed = False
    for ref in refs:
        try:
            client.call(method, url.format(ref=ref))
            click.echo(ref)
        except DaemonError as e:
            click.echo(f"Error: {verb} {ref}: {e.message}", err=True)
            failed = True
    if failed:
        sys.exit(1)


@click.command("start")
@click.argument("containers", nargs=-1, required=True)
def start(containers: tuple[str, ...]) -> None:
    """Start one or more created or stopped containers."""
    _each("start", containers, "/containers/{ref}/start")


@click.command("stop")
@click.option("-t", "--time", "timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait after SIGTERM before SIGKILL.")
@click.argument("containers", nargs=-1, required=True)
def stop(timeout: float, containers: tuple[str, ...]) -> None:
    """Stop containers: SIGTERM, then SIGKILL after the timeout."""
    _each("stop", containers, f"/containers/{{ref}}/stop?t={timeout}")


@click.command("kill")
@click.option("-s", "--signal", "signame", default="KILL", show_default=True,
              help="Signal to send (name or number).")
@click.argument("containers", nargs=-1, required=True)
def kill(signame: str, containers: tuple[str, ...]) -> None:
    """Send a signal to containers' main process."""
    _each("kill", containers, f"/containers/{{ref}}/kill?signal={signame}")


@click.command("rm")
@click.option("-f", "--force", is_flag=True, help="Kill a running container first.")
@click.argument("containers", nargs=-1, required=True)
def rm(force: bool, containers: tuple[str, ...]) -> None:
    """Remove containers (a running one only with -f)."""
    _each("remove", containers, f"/containers/{{ref}}?force={int(force)}", "DELETE")


@click.command("pause")
@click.argument("containers", nargs=-1, required=True)
def pause(containers: tuple[str, ...]) -> None:
    """Freeze every process of containers."""
    _each("pause", containers, "/containers/{ref}/pause")


@click.command("unpause")
@click.argument("containers", nargs=-1, required=True)
def unpause(containers: tuple[str, ...]) -> None:
    """Thaw paused containers."""
    _each("unpause", containers, "/containers/{ref}/unpause")


@click.command("wait")
@click.argument("containers", nargs=-1, required=True)
def wait(containers: tuple[str, ...]) -> None:
    """Block until containers stop; print their exit codes."""
    client = connect()
    for ref in containers:
        click.echo(client.call("POST", f"/containers/{ref}/wait", timeout=None)["StatusCode"])


@click.command("exec", context_settings=_RUN_SETTINGS)
@click.option("-e", "--env", multiple=True, metavar="K=V", help="Set an environment variable.")
@click.option("-u", "--user", default="", help="UID[:GID] or NAME[:GROUP] to run as.")
@click.option("-w", "--workdir", default="", help="Working directory in the container.")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(env: tuple[str, ...], user: str, workdir: str, container: str,
          command: tuple[str, ...]) -> None:
    """Run a command in a running container; exit with its exit code.

    \b
    Example:
      dockyard exec web cat /etc/hostname
    """
    client = connect()
    exec_id = client.call("POST", f"/containers/{container}/exec",
                          {"Cmd": list(command), "Env": list(parse_env(env)), "User": user,
                           "WorkingDir": workdir})["Id"]
    out = sys.stdout.buffer
    for chunk in client.stream(f"/exec/{exec_id}/logs?follow=1"):
        out.write(chunk)
        out.flush()
    sys.exit(client.call("POST", f"/exec/{exec_id}/wait", timeout=None)["ExitCode"])


@click.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the container stops.")
@click.argument("container")
def logs(follow: bool, container: str) -> None:
    """Print a container's output (stdout and stderr, in order)."""
    out = sys.stdout.buffer
    for chunk in connect().stream(f"/containers/{container}/logs?follow={int(follow)}"):
        out.write(chunk)
        out.flush()


@click.command("inspect")
@click.argument("containers", nargs=-1, required=True)
def inspect(containers: tuple[str, ...]) -> None:
    """Print everything known about containers, as JSON."""
    client = connect()
    click.echo(json.dumps([client.call("GET", f"/containers/{ref}/json")
                           for ref in containers], indent=2))


def _age(since: float | None) -> str:
    if not since:
        return ""
    seconds = int(time.time() - since)
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} seconds"


def _status(record: dict[str, Any]) -> str:
    status = record["status"]
    if status == "running":
        return f"Up {_age(record['started_at'])}"
    if status == "paused":
        return f"Up {_age(record['started_at'])} (Paused)"
    if status == "stopped":
        return f"Exited ({record['exit_code']}) {_age(record['finished_at'])} ago"
    return "Created"


@click.command("ps")
@click.option("-a", "--all", "all_", is_flag=True, help="Show stopped containers too.")
@click.option("-q", "--quiet", is_flag=True, help="Print ids only.")
@FORMAT
def ps(all_: bool, quiet: bool, fmt: str) -> None:
    """List containers (running ones unless -a)."""
    records = connect().call("GET", f"/containers/json?all={int(all_)}")
    if quiet:
        for record in records:
            click.echo(record["id"][:12])
        return
    if fmt == "json":
        click.echo(json.dumps(records, indent=2))
        return
    rows = [("CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "NAME")]
    for r in records:
        words = [*(r["config"].get("entrypoint") or ()), *(r["config"].get("command") or ())]
        command = " ".join(" ".join(words).split())  # on one line, like Docker
        rows.append((r["id"][:12], r["image"], f'"{command[:20]}"', _status(r), r["name"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("   ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                        strict=True)).rstrip())


@click.command("stats")
@FORMAT
@click.argument("containers", nargs=-1, required=True)
def stats(fmt: str, containers: tuple[str, ...]) -> None:
    """Show memory, cpu time and process counts of running containers (one snapshot)."""
    client = connect()
    results = {ref: client.call("GET", f"/containers/{ref}/stats") for ref in containers}
    if fmt == "json":
        click.echo(json.dumps(results, indent=2))
        return
    click.echo(f"{'CONTAINER':<20} {'MEM USAGE / LIMIT':<24} {'CPU TIME':>10} {'PIDS':>6}")
    for ref, s in results.items():
        limit = f"{s['memory_limit_bytes'] / 2**20:.1f}MiB" if s["memory_limit_bytes"] \
            else "unlimited"
        usage = f"{(s['memory_bytes'] or 0) / 2**20:.1f}MiB / {limit}"
        cpu = f"{(s['cpu_usage_ns'] or 0) / 1e9:.2f}s"
        click.echo(f"{ref:<20} {usage:<24} {cpu:>10} {s['pids_current'] or 0:>6}")


commands = [run, create, start, ps, logs, stop, kill, rm, wait, inspect, stats, pause, unpause,
            exec_]
