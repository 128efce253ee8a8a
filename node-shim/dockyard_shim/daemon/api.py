"""The daemon's HTTP API, shaped after Docker's Engine API where Dockyard has the verb.

Routes translate HTTP to `Runtime` calls and back; the runtime's blocking work (fork,
mounts, waits) runs in worker threads so one slow container never stalls the others.
Errors map by category: NotFound 404, AlreadyExists 409, FailedPrecondition 412,
InvalidArgument 400, Unavailable 503, and the body is `{"message": "..."}` as in Docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import web

from dockyard_shim.daemon.commit import commit_container
from dockyard_shim.errors import FailedPreconditionError, InvalidArgumentError, ShimError
from dockyard_shim.images import ImageStore, parse_reference
from dockyard_shim.runtime.config import ContainerConfig
from dockyard_shim.runtime.process import StartError
from dockyard_shim.runtime.runtime import Runtime
from dockyard_shim.runtime.state import ContainerRecord
from dockyard_shim.volumes import VolumeStore
from dockyard_shim.volumes.remote import pull_volume, read_token
from dockyard_shim.volumes.transfer import TransferStats

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
IMAGES: web.AppKey[ImageStore] = web.AppKey("images", ImageStore)
_FIRST_POLL = 0.005
_MAX_POLL = 0.2
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def record_json(record: ContainerRecord) -> dict[str, Any]:
    body = dict(vars(record))
    body["status"] = str(record.status)
    return body


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn the runtime's error categories into HTTP statuses with a message."""
    try:
        return await handler(request)
    except StartError as e:
        return web.json_response({"message": str(e), "exitCode": e.exit_code}, status=400)
    except ShimError as e:
        return web.json_response({"message": str(e)}, status=e.http_status)


async def _call(request: web.Request, fn: Callable[..., Any], *args: Any,
                **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def ping(_: web.Request) -> web.Response:
    return web.Response(text="OK")


async def create(request: web.Request) -> web.Response:
    config = ContainerConfig.from_json(await _json(request))
    record = await _call(request, request.app[RUNTIME].create, config)
    return web.json_response({"Id": record.id, "Name": record.name}, status=201)


async def start(request: web.Request) -> web.Response:
    record = await _call(request, request.app[RUNTIME].start, request.match_info["ref"])
    return web.json_response(record_json(record))


async def stop(request: web.Request) -> web.Response:
    timeout = float(request.query.get("t", "10"))
    record = await _call(request, request.app[RUNTIME].stop, request.match_info["ref"],
                         timeout)
    return web.json_response(record_json(record))


async def kill(request: web.Request) -> web.Response:
    name = request.query.get("signal", "KILL").upper().removeprefix("SIG")
    try:
        signum = int(name) if name.isdigit() else int(signal.Signals[f"SIG{name}"])
    except KeyError:
        raise InvalidArgumentError(f"invalid signal: {name}") from None
    record = await _call(request, request.app[RUNTIME].kill, request.match_info["ref"],
                         signum)
    return web.json_response(record_json(record))


async def pause(request: web.Request) -> web.Response:
    record = await _call(request, request.app[RUNTIME].pause, request.match_info["ref"])
    return web.json_response(record_json(record))


async def unpause(request: web.Request) -> web.Response:
    record = await _call(request, request.app[RUNTIME].unpause, request.match_info["ref"])
    return web.json_response(record_json(record))


async def wait(request: web.Request) -> web.Response:
    record = await _call(request, request.app[RUNTIME].wait, request.match_info["ref"])
    return web.json_response({"StatusCode": record.exit_code, "OOMKilled": record.oom_killed})


async def remove(request: web.Request) -> web.Response:
    force = request.query.get("force", "") in ("1", "true")
    volumes = request.query.get("v", "") in ("1", "true")
    await _call(request, request.app[RUNTIME].delete, request.match_info["ref"], force=force,
                volumes=volumes)
    return web.Response(status=204)


async def inspect(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    record = await _call(request, lambda: runtime.observe(
        runtime.store.get(request.match_info["ref"])))
    body = record_json(record)
    ports = Path(record.bundle) / "ports.json"  # the host ports actually bound
    body["published_ports"] = json.loads(ports.read_text()) if record.ip_address \
        and ports.is_file() else []
    return web.json_response(body)


async def stats(request: web.Request) -> web.Response:
    result = await _call(request, request.app[RUNTIME].stats, request.match_info["ref"])
    return web.json_response(asdict(result))


async def listing(request: web.Request) -> web.Response:
    all_ = request.query.get("all", "") in ("1", "true")
    records = await _call(request, request.app[RUNTIME].list, all_=all_)
    return web.json_response([record_json(r) for r in records])


async def commit(request: web.Request) -> web.Response:
    """An image from a container's changes, as Docker's POST /commit."""
    query = request.query
    container = query.get("container", "")
    if not container:
        raise InvalidArgumentError("say which container to commit: ?container=NAME")
    repo = query.get("repo", "")
    name = parse_reference(f"{repo}:{query['tag']}" if query.get("tag") else repo) \
        if repo else None
    record = await _call(request, commit_container, request.app[RUNTIME],
                         request.app[IMAGES], container, name=name,
                         comment=query.get("comment", ""), author=query.get("author", ""),
                         changes=query.getall("changes", []),
                         pause=query.get("pause", "1") not in ("0", "false"))
    return web.json_response({"Id": record.id}, status=201)


_CHANGE_KINDS = {"C": 0, "A": 1, "D": 2}  # Docker's Engine API numbers


async def changes(request: web.Request) -> web.Response:
    """What the container changed, as Docker's GET /containers/{id}/changes."""
    found = await _call(request, request.app[RUNTIME].diff, request.match_info["ref"])
    return web.json_response([{"Path": c.path, "Kind": _CHANGE_KINDS[c.kind]} for c in found])


async def logs(request: web.Request) -> web.StreamResponse:
    """The container's output; with follow=1 it streams until the container stops."""
    runtime = request.app[RUNTIME]
    ref = request.match_info["ref"]
    record: ContainerRecord = await _call(request, runtime.store.get, ref)

    def running() -> bool:
        return runtime.observe(runtime.store.get(ref)).status.value in ("running", "paused")

    return await _stream(request, Path(record.bundle) / "container.log", running, record.pid)


async def exec_create(request: web.Request) -> web.Response:
    body = await _json(request)
    command = body.get("Cmd")
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        raise InvalidArgumentError("Cmd must be a list of strings")
    exec_id = await _call(request, request.app[RUNTIME].execs.start, request.match_info["ref"],
                          tuple(command), env=tuple(body.get("Env") or ()),
                          user=str(body.get("User") or ""),
                          working_dir=str(body.get("WorkingDir") or ""))
    return web.json_response({"Id": exec_id}, status=201)


async def exec_logs(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    exec_id = request.match_info["id"]
    path: Path = await _call(request, runtime.execs.log_path, exec_id)
    pid: int = await _call(request, runtime.execs.pid, exec_id)
    return await _stream(request, path, lambda: runtime.execs.running(exec_id), pid)


async def exec_wait(request: web.Request) -> web.Response:
    code = await _call(request, request.app[RUNTIME].execs.wait, request.match_info["id"])
    return web.json_response({"ExitCode": code})


async def _stream(request: web.Request, path: Path, running: Callable[[], bool],
                  pid: int) -> web.StreamResponse:
    """A file's content; with follow=1, more as it grows, until `running()` turns false.

    `pid` is the writer's process: the stream ends as soon as it exits, not at the next poll.
    """
    follow = request.query.get("follow", "") in ("1", "true")
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await response.prepare(request)
    # From here on the status line is sent: an error can only end the stream early.
    pause = _FIRST_POLL
    with contextlib.suppress(ShimError, OSError), path.open("rb") as log, \
            _exit_event(pid if follow else 0) as exited:
        while True:
            chunk = log.read(65536)
            if chunk:
                await response.write(chunk)
                pause = _FIRST_POLL
                continue
            if not follow or not await asyncio.to_thread(running):
                rest = log.read()  # whatever was written just before the end
                if rest:
                    await response.write(rest)
                break
            # New output is polled for: short first waits, then a few checks a second.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited.wait(), pause)
            pause = min(pause * 2, _MAX_POLL)
    await response.write_eof()
    return response


@contextlib.contextmanager
def _exit_event(pid: int) -> Iterator[asyncio.Event]:
    """An event set once process `pid` has exited, through a pidfd in the event loop.

    Only a hint that ends a follower's wait early: `running()` still decides. For pid 0 it
    is never set.
    """
    event = asyncio.Event()
    if pid <= 0:
        yield event
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # gone already
        event.set()
        yield event
        return
    loop = asyncio.get_running_loop()

    def exited() -> None:
        # Once: an exited process's pidfd stays readable, and a reader left in place would
        # spin the event loop, starving the threads that serve the calls (~50 ms a `run`).
        loop.remove_reader(fd)
        event.set()

    loop.add_reader(fd, exited)
    try:
        yield event
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def volume_pull(request: web.Request) -> web.Response:
    """Make a volume from a peer shim's (what the operator asks of a consumer's new node):
    body {"from": "http://PEER:PORT", "remote": NAME}; the token is this node's own."""
    body = await _json(request)
    token_file = os.environ.get("DOCKYARD_TRANSFER_TOKEN_FILE", "")
    if not token_file:
        raise FailedPreconditionError("this node has no transfer token: set "
                                      "DOCKYARD_TRANSFER_TOKEN_FILE for its shim")
    stats = await _call(request, _pull, request.app[RUNTIME].volumes,
                        request.match_info["name"], str(body.get("from") or ""),
                        Path(token_file), str(body.get("remote") or ""))
    return web.json_response({"Files": stats.files, "Bytes": stats.bytes,
                              "ManifestDigest": f"sha256:{stats.digest}",
                              "KeptFiles": stats.kept_files, "KeptBytes": stats.kept_bytes},
                             status=201)


def _pull(store: VolumeStore, name: str, source: str, token_file: Path,
          remote: str) -> TransferStats:
    return pull_volume(store, name, source, read_token(token_file), remote_name=remote)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(f"the request body is not JSON: {e}") from e
    if not isinstance(body, dict):
        raise InvalidArgumentError("the request body must be a JSON object")
    return body


def make_app(runtime: Runtime, images: ImageStore) -> web.Application:
    app = web.Application(middlewares=[errors])
    app[RUNTIME] = runtime
    app[IMAGES] = images
    app.router.add_get("/_ping", ping)
    app.router.add_post("/containers/create", create)
    app.router.add_get("/containers/json", listing)
    app.router.add_get("/containers/{ref}/json", inspect)
    app.router.add_post("/containers/{ref}/start", start)
    app.router.add_post("/containers/{ref}/stop", stop)
    app.router.add_post("/containers/{ref}/kill", kill)
    app.router.add_post("/containers/{ref}/pause", pause)
    app.router.add_post("/containers/{ref}/unpause", unpause)
    app.router.add_post("/containers/{ref}/wait", wait)
    app.router.add_get("/containers/{ref}/logs", logs)
    app.router.add_get("/containers/{ref}/changes", changes)
    app.router.add_post("/commit", commit)
    app.router.add_get("/containers/{ref}/stats", stats)
    app.router.add_delete("/containers/{ref}", remove)
    app.router.add_post("/containers/{ref}/exec", exec_create)
    app.router.add_get("/exec/{id}/logs", exec_logs)
    app.router.add_post("/exec/{id}/wait", exec_wait)
    app.router.add_post("/volumes/{name}/pull", volume_pull)
    return app
