"""Shared test fixtures: the repository root and the catalogue of invalid manifests."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


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
