"""The Helm chart and the kustomize base ship exactly the generated CRDs (real helm, kubectl)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from dockyard_api import KINDS
from dockyard_api.crd import crd
from tests.conftest import tool


def _run(*args: str, cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_helm_lint_strict_passes(repo_root: Path) -> None:
    _run(tool("helm"), "lint", "--strict", "charts/dockyard", cwd=repo_root)


def test_helm_installs_every_crd(repo_root: Path) -> None:
    out = _run(tool("helm"), "show", "crds", "charts/dockyard", cwd=repo_root)
    shipped = [d for d in yaml.safe_load_all(out) if d]
    assert sorted(d["metadata"]["name"] for d in shipped) == \
        sorted(crd(cls)["metadata"]["name"] for cls in KINDS)


def test_kustomize_base_renders_the_generated_crds(repo_root: Path) -> None:
    out = _run(tool("kubectl"), "kustomize", "deploy/base", cwd=repo_root)
    rendered = {d["metadata"]["name"]: d for d in yaml.safe_load_all(out) if d}
    expected = {crd(cls)["metadata"]["name"]: crd(cls) for cls in KINDS}
    assert rendered == expected
