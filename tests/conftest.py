"""Shared test fixtures: the repository root and the catalogue of invalid manifests.

The daemons a test run starts put their containers' cgroups under a parent of the run's
own (`$DOCKYARD_CGROUP_PARENT`, inherited through the environment), which the session
removes at its end: the first test to start a container would otherwise create the
machine's real `dockyard` parent and leave it behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

ROOT = Path(__file__).resolve().parent.parent
RUN_CGROUP_PARENT = f"dockyard-test-run-{secrets.token_hex(4)}"
os.environ["DOCKYARD_CGROUP_PARENT"] = RUN_CGROUP_PARENT


@pytest.fixture(autouse=True, scope="session")
def run_cgroup_parent() -> Iterator[None]:
    """Remove the run's cgroup parent at the end; it must be empty by then."""
    yield
    if os.geteuid() == 0:
        from dockyard_shim.cgroups import detect  # noqa: PLC0415 -- root runs only

        detect(parent=RUN_CGROUP_PARENT).delete_parent()


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[Any]:
    """A fresh test API server (`tests/kube/apiserver.py`) and its HTTP side."""
    from tests.kube.kopfrun import serving  # noqa: PLC0415 -- operator tests only

    async with serving() as pair:
        yield pair


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


def tool(name: str) -> str:
    """The path of a binary the setup installs (kubectl, helm); fail loudly when absent.

    Setup always installs these, so a missing one is a broken setup, not a reason to skip.
    """
    found = shutil.which(name, path=f"{Path(sys.executable).parent}:{ROOT / '.venv/bin'}") \
        or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/setup.sh")
    return found
