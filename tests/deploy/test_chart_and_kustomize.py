"""The Helm chart and the kustomize base ship exactly the generated CRDs, and kopf's peering
CRDs beside them (real helm, kubectl)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from dockyard_api import KINDS
from dockyard_api.crd import crd, filename
from tests.conftest import tool

KOPF_PEERING = "charts/dockyard/crds/kopf-peering.yaml"


def _run(*args: str, cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _kopf_crds(repo_root: Path) -> dict[str, dict[str, object]]:
    """kopf's peering CRDs, the one file of the chart's crds/ not generated from our models."""
    text = (repo_root / KOPF_PEERING).read_text(encoding="utf-8")
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(text) if d}


def test_helm_installs_every_crd(repo_root: Path) -> None:
    out = _run(tool("helm"), "show", "crds", "charts/dockyard", cwd=repo_root)
    shipped = [d for d in yaml.safe_load_all(out) if d]
    assert sorted(d["metadata"]["name"] for d in shipped) == \
        sorted([*(crd(cls)["metadata"]["name"] for cls in KINDS), *_kopf_crds(repo_root)])


def test_the_chart_crds_are_ours_and_kopfs_peering_only(repo_root: Path) -> None:
    files = sorted(p.name for p in (repo_root / "charts/dockyard/crds").iterdir())
    assert files == sorted([*(filename(cls) for cls in KINDS), "kopf-peering.yaml"])


def test_kustomize_base_renders_the_generated_crds(repo_root: Path) -> None:
    out = _run(tool("kubectl"), "kustomize", "deploy/base", cwd=repo_root)
    rendered = {d["metadata"]["name"]: d for d in yaml.safe_load_all(out) if d}
    expected = {crd(cls)["metadata"]["name"]: crd(cls) for cls in KINDS}
    assert rendered == {**expected, **_kopf_crds(repo_root)}
