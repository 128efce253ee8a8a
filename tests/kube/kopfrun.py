"""The test API server on 127.0.0.1, and real kopf run against it in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import kopf

from tests.kube.apiserver import ApiServer

MERGE = {"Content-Type": "application/merge-patch+json"}
"""The headers of a merge patch (RFC 7386), as kopf sends them."""


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[tuple[ApiServer, kmock.Server]]:
    """A fresh test API server (`options` go to `ApiServer`: users, service URLs),
    listening on 127.0.0.1, and its HTTP side."""
    async with ApiServer(**options) as server, kmock.Server(server) as http:
        yield server, http


@contextlib.asynccontextmanager
async def running(registry: kopf.OperatorRegistry, url: str) -> AsyncIterator[kopf.Memo]:
    """kopf running `registry` against the server at `url`, stopped on the way out; the
    operator's memo."""

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # The CRDs' schemas keep no unknown fields: kopf keeps its state in annotations.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
        settings.watching.reconnect_backoff = 0.1

    stop = asyncio.Event()
    memo = kopf.Memo(connection=kopf.ConnectionInfo(server=url, insecure=True))
    task = asyncio.create_task(kopf.operator(registry=registry, clusterwide=True,
                                             standalone=True, stop_flag=stop, memo=memo))
    try:
        yield memo
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        await asyncio.sleep(0.05)
