"""Container commands, the Docker way: run, create, start, ps, logs, stop, kill, rm, wait,
inspect, stats, pause, unpause. Each is a thin call to the node daemon."""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import click

from dockyard_cli import launch
from dockyard_cli.client import connect
from dockyard_cli.flags import RUN_FLAGS, RUN_ONLY_FLAGS, Flag, FlagError, parse_env
from dockyard_shim.daemon.client import DaemonError

FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "json"]),
                      default="table", show_default=True, help="Output format.")


def _option(flag: Flag) -> Callable[[Any], Any]:
    """The click option for one entry of the flag table."""
    if flag.is_switch:
        return click.option(*flag.names, flag.dest, is_flag=True, help=flag.help)
    parse = flag.parse

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None or parse is None:
            return value
        try:
            return tuple(parse(v) for v in value) if flag.multiple else parse(value)
        except FlagError as e:
            raise click.BadParameter(str(e)) from None

    return click.option(
        *flag.names, flag.dest, multiple=flag.multiple, default=flag.default,
        show_default=bool(flag.default), callback=callback, help=flag.help,
        type=click.Choice(flag.choices) if flag.choices else None,
        metavar=None if flag.choices else flag.metavar)


def _run_options(fn: Any) -> Any:
    for decorator in reversed([*map(_option, RUN_FLAGS), click.argument("image"),
                               click.argument("command", nargs=-1, type=click.UNPROCESSED)]):
        fn = decorator(fn)
    return fn


_RUN_SETTINGS = {"allow_interspersed_args": False}  # flags after IMAGE belong to the command


@click.command("run", context_settings=_RUN_SETTINGS)
@_option(RUN_ONLY_FLAGS[0])
@_option(RUN_ONLY_FLAGS[1])
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
    problem = launch.conflict(options, auto_remove=auto_remove)
    if problem:
        raise click.UsageError(problem)
    sys.exit(launch.run(connect(), options, detach=detach, auto_remove=auto_remove))


@click.command("create", context_settings=_RUN_SETTINGS)
@_run_options
def create(**options: Any) -> None:
    """Create a container without starting it; print its id."""
    click.echo(connect().call("POST", "/containers/create",
                              launch.container_json(options))["Id"])


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
@click.option("-v", "--volumes", is_flag=True,
              help="Remove its anonymous volumes too (named volumes are kept).")
@click.argument("containers", nargs=-1, required=True)
def rm(force: bool, volumes: bool, containers: tuple[str, ...]) -> None:
    """Remove containers (a running one only with -f)."""
    _each("remove", containers, f"/containers/{{ref}}?force={int(force)}&v={int(volumes)}",
          "DELETE")


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


@click.command("diff")
@click.argument("container")
def diff(container: str) -> None:
    """List what a container changed in its image's filesystem, like `docker diff`.

    One line per path: A added, C changed, D deleted.
    """
    kinds = "CAD"  # Docker's Kind numbers 0, 1, 2
    for change in connect().call("GET", f"/containers/{container}/changes"):
        click.echo(f"{kinds[change['Kind']]} {change['Path']}")


@click.command("commit")
@click.option("-m", "--message", default="", help="Commit message (in the image history).")
@click.option("-a", "--author", default="", help="Author, such as 'Ann <ann@example.com>'.")
@click.option("-c", "--change", "changes", multiple=True, metavar="INSTRUCTION",
              help="Apply a Dockerfile instruction to the image config: CMD, ENTRYPOINT, "
                   "ENV, LABEL, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL (repeatable).")
@click.option("-p", "--pause", type=click.BOOL, default=True, show_default=True,
              help="Freeze the container while its changes are read.")
@click.argument("container")
@click.argument("repository", metavar="[REPOSITORY[:TAG]]", required=False)
def commit(*, message: str, author: str, changes: tuple[str, ...], pause: bool,
           container: str, repository: str | None) -> None:
    """Create a new image from a container's changes, like `docker commit`.

    The image is the container's image plus one layer holding what the container changed
    (see `dockyard diff`); the container's command, environment and working directory
    become the image's defaults. Prints the new image id.

    \b
    Example:
      dockyard commit -m "add config" -c 'CMD ["httpd", "-f"]' web team/web:2
    """
    query = [("container", container), ("comment", message), ("author", author),
             ("pause", "1" if pause else "0"), *(("changes", c) for c in changes)]
    if repository:
        query.append(("repo", repository))
    made = connect().call("POST", "/commit?" + urllib.parse.urlencode(query))
    click.echo(made["Id"])


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
            exec_, diff, commit]
