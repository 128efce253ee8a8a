"""Rendering and checking deployment manifests with the real tools, for tests/deploy.

`helm_template` and `kustomize` run the real binaries; `problems` checks one rendered
object as far as this machine can without an API server:
- built-in kinds against the Kubernetes 1.37 OpenAPI schemas (`kubernetes_validate`,
  strict: an unknown field is an error, as with `kubectl apply --validate=strict`);
- our `dockyard.dev` kinds against our CRDs, as the API server would
  (`dockyard_api.server_validation`), and kopf's peering kind against the CRD the chart
  ships for it;
- Argo CD, Flux and cert-manager kinds: their schemas are not here, so only the envelope
  (apiVersion, kind, metadata.name) is checked; the tests check the fields we rely on.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from dockyard_api.crd import kind_schema
from dockyard_api.server_validation import schema_of, validate
from tests.conftest import ROOT, tool

Doc = dict[str, Any]
KUBERNETES = "1.37.0"
CHART = ROOT / "charts/dockyard"
RELEASE, NAMESPACE = "dy", "dockyard-system"
STAGES = ("dev", "ci", "staging", "prod")
FOREIGN_GROUPS = ("argoproj.io", "source.toolkit.fluxcd.io", "kustomize.toolkit.fluxcd.io",
                  "cert-manager.io")
"""Kinds with no schema on this machine: only their envelope is checked here."""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)


def ok(*args: str) -> str:
    """stdout of a command that must succeed."""
    done = run(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def documents(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


def helm_template(values: Mapping[str, Any] | None = None, *, tmp: Path | None = None,
                  values_file: Path | None = None) -> list[Doc]:
    """What `helm template` renders for `values` (or a values file)."""
    args = [tool("helm"), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values is not None:
        assert tmp is not None, "values need a temporary directory to be written to"
        values_file = tmp / "values.yaml"
        values_file.write_text(yaml.safe_dump(dict(values)), encoding="utf-8")
    if values_file is not None:
        args += ["--values", str(values_file)]
    return documents(ok(*args))


def kustomize(path: str) -> list[Doc]:
    return documents(ok(tool("kubectl"), "kustomize", path))


def find(docs: Iterable[Doc], kind: str, name: str | None = None) -> Doc:
    """The one object of `kind` (and `name`)."""
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name}"
    return found[0]


def kinds(docs: Iterable[Doc]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def problems(doc: Doc) -> list[str]:
    """What is wrong with one rendered object (empty: nothing found)."""
    group = doc.get("apiVersion", "").rpartition("/")[0]
    if group == "dockyard.dev":
        _, found = validate(doc, kind_schema(doc["kind"]))
        return [str(p) for p in found]
    if group == "kopf.dev":
        _, found = validate(doc, _kopf_schema(doc["kind"]))
        return [str(p) for p in found]
    if group in FOREIGN_GROUPS:
        return _envelope(doc)
    try:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.path))}: {e.message}"]
    return []


def _envelope(doc: Doc) -> list[str]:
    meta = doc.get("metadata") or {}
    found = [] if isinstance(meta.get("name"), str) and meta["name"] else ["metadata.name"]
    return found + [f"no {key}" for key in ("apiVersion", "kind", "spec") if key not in doc]


def _kopf_schema(kind: str) -> dict[str, Any]:
    for crd in documents((CHART / "crds/kopf-peering.yaml").read_text(encoding="utf-8")):
        if crd["spec"]["names"]["kind"] == kind:
            return schema_of(crd, "v1")
    raise KeyError(kind)


def env_of(container: Doc) -> dict[str, Any]:
    """A container's environment: name -> value (or valueFrom)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
