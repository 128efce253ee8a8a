"""Every kopf handler of the operator and the agent that reacts to changes runs in the
event loop, not in one of kopf's worker threads.

kopf runs a plain (non-async) handler in a thread. Ours share state with the loop (the
operator's bindings, which the scheduler walks; the agent's view of its Containers and
its wake-up event): written from a thread, a walk broke off ("dictionary changed size
during iteration") and wake-ups were lost. Indexers may stay plain: they only return
values, which kopf stores itself.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import kopf
import pytest

from dockyard_operator.app import registry as operator_registry
from dockyard_shim.agent.app import registry as agent_registry
from dockyard_shim.agent.converging import AgentConfig


def _registries() -> dict[str, kopf.OperatorRegistry]:
    agent = AgentConfig(node="n1", root=Path("/nonexistent"), socket="/nonexistent")
    return {"operator": operator_registry(), "agent": agent_registry(agent)}


@pytest.mark.parametrize("program", ["operator", "agent"])
def test_handlers_of_events_changes_timers_and_deletions_are_async(program: str) -> None:
    registry = _registries()[program]
    handlers = [*registry._watching.get_all_handlers(), *registry._changing.get_all_handlers(),
                *registry._spawning.get_all_handlers()]
    assert handlers  # the registry is the one that runs
    plain = [h.id for h in handlers if not inspect.iscoroutinefunction(h.fn)]
    assert plain == [], f"{program}: these run in kopf's threads: {plain}"
