"""The node agent as kopf runs it: one node's handlers, settings and background tasks.

Start-up, in this order, before any Container event is handled:
1. the settings: Containers are watched with the server-side label selector
   `dockyard.dev/node=<node>` (only this node's share crosses the network), the agent's
   finalizer and its own annotation prefix (the operator writes kopf's state on the same
   objects under another);
2. the DockyardNode is registered (Ready, capacity) and the Lease renewed once;
3. fencing: every container this agent made whose Container is no longer bound here is
   killed and removed, before the node runs anything;
4. the heartbeat and the convergence loop start.

The handlers are thin: a watch event updates the agent's view and wakes the loop; a
deletion removes the container at once and kopf then drops the finalizer.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import kopf

from dockyard_api.kube import KubeClient, connection, end_watches_in_time
from dockyard_common import get_logger
from dockyard_common.metrics import serve
from dockyard_shim.agent import commits
from dockyard_shim.agent.converging import FINALIZER, GROUP, NODE_LABEL, VERSION, Agent, AgentConfig
from dockyard_shim.agent.heartbeat import beat, register, renew

log = get_logger(__name__)


def _stop_if_failed(task: asyncio.Task[None]) -> None:
    """A background task that ended by an error leaves the agent half alive (no heartbeat,
    or no convergence): stop the agent instead, as a crashed kubelet is restarted."""
    if task.cancelled() or task.exception() is None:
        return
    log.error("a background task failed; the agent stops", task=task.get_name(),
              exc_info=task.exception())
    os.kill(os.getpid(), signal.SIGTERM)


def registry(config: AgentConfig) -> kopf.OperatorRegistry:
    """A new registry with the agent of the node `config` describes."""
    handlers = kopf.OperatorRegistry()

    @kopf.on.startup(registry=handlers)
    async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger,
                    **_: Any) -> None:
        settings.watching.label_selectors[GROUP, "containers"] = f"{NODE_LABEL}={config.node}"
        settings.watching.label_selectors[GROUP, "commits"] = f"{NODE_LABEL}={config.node}"
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="agent.dockyard.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="agent.dockyard.dev")
        settings.posting.enabled = False  # the agent reports in status; events are the operator's
        end_watches_in_time(settings)
        kube = KubeClient(connection(memo, logger, settings))
        if config.metrics_listen:
            memo["metrics"] = serve(config.metrics_listen)
        agent = Agent(config, kube)
        memo["agent"] = agent
        await register(kube, config)
        await renew(kube, config)
        fenced = await agent.fence()
        if fenced:
            logger.info(f"fenced {len(fenced)} containers no longer bound here: "
                        f"{', '.join(fenced)}")
        memo["tasks"] = [asyncio.create_task(beat(kube, config), name="heartbeat"),
                         asyncio.create_task(agent.run(), name="converge")]
        for task in memo["tasks"]:
            task.add_done_callback(_stop_if_failed)

    @kopf.on.login(registry=handlers)
    def login(memo: kopf.Memo, logger: kopf.Logger, settings: kopf.OperatorSettings,
              **_: Any) -> kopf.ConnectionInfo:
        return connection(memo, logger, settings)

    @kopf.on.cleanup(registry=handlers)
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        tasks: list[asyncio.Task[None]] = memo.get("tasks", [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        agent: Agent | None = memo.get("agent")
        if agent is not None:
            agent.close()
            await agent.kube.close()
        if "metrics" in memo:
            memo["metrics"].shutdown()
            memo["metrics"].server_close()

    # async: kopf runs a plain function in a worker thread, and the agent's view and its
    # wake-up event are the loop's (a thread's writes raced with a pass and lost wake-ups).
    @kopf.on.event(GROUP, VERSION, "containers", id="watch", registry=handlers)
    async def seen(*, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        agent: Agent = memo["agent"]
        agent.saw(event["type"], event["object"])

    @kopf.on.delete(GROUP, VERSION, "containers", id="cleanup", registry=handlers)
    async def delete(*, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
        agent: Agent = memo["agent"]
        await agent.removed(namespace or "", name)

    commits.register(handlers, config.root)
    return handlers
