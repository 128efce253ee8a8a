"""Fixtures for the attack catalogue: root gating, the leak check, and containers to attack.

Every test here is an escape attempt made from inside a real container on the real
kernel, with a canary on the host (a file, a kernel setting, a cgroup) that must be
untouched afterwards. The root gating and the leak check (no mount, cgroup, process or
daemon may outlive a test) are the node shim tests' own, shared from `tests/shim`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.runtime.runtime import Runtime
from tests.security.harness import Containers, security_runtime
from tests.shim.conftest import children, no_leaks, pytest_collection_modifyitems

__all__ = ["children", "containers", "no_leaks", "pytest_collection_modifyitems", "runtime"]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    """A runtime on real parts with the busybox image and the images the attacks need."""
    with security_runtime(tmp_path / "node") as made:
        yield made


@pytest.fixture
def containers(runtime: Runtime) -> Containers:
    return Containers(runtime)
