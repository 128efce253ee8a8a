"""Bad values are refused by values.schema.json before anything renders (real helm).

Each row is one mistake a user could make; `helm template` must fail and name the field,
so the mistake is found at install time, not by a pod that never starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard_api.crd import kind_schema
from tests.conftest import tool
from tests.deploy.manifests import CHART, run


def _pipeline(*stages: dict[str, Any]) -> dict[str, Any]:
    return {"stages": {"pipeline": list(stages)}}


BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("replicas of the wrong type", {"operator": {"replicas": "two"}}, "/operator/replicas"),
    ("negative replicas", {"operator": {"replicas": -1}}, "/operator/replicas"),
    ("no replicas at all", {"operator": {"replicas": 0}}, "/operator/replicas"),
    ("an unknown top-level key", {"operatr": {}}, "operatr"),
    ("an unknown nested key", {"operator": {"image": {"digest": "sha256:00"}}}, "digest"),
    ("a bad pull policy", {"operator": {"image": {"pullPolicy": "Sometimes"}}},
     "/operator/image/pullPolicy"),
    ("a bad shim pull policy", {"shim": {"image": {"pullPolicy": "always"}}},
     "/shim/image/pullPolicy"),
    ("a bad failure policy", {"webhook": {"failurePolicy": "Retry"}},
     "/webhook/failurePolicy"),
    ("webhook.enabled as a string", {"webhook": {"enabled": "yes"}}, "/webhook/enabled"),
    ("a port out of range", {"webhook": {"port": 70000}}, "/webhook/port"),
    ("a metrics port of zero", {"metrics": {"port": 0}}, "/metrics/port"),
    ("a negative node grace", {"operator": {"nodeGrace": -5}}, "/operator/nodeGrace"),
    ("a relative state root", {"shim": {"stateRoot": "var/lib/dockyard"}},
     "/shim/stateRoot"),
    ("tolerations as a map", {"shim": {"tolerations": {"operator": "Exists"}}},
     "/shim/tolerations"),
    ("a resource quantity as a list", {"operator": {"resources": {"limits": {"memory": [1]}}}},
     "/operator/resources/limits/memory"),
    ("a misspelt resources key", {"shim": {"resources": {"limit": {}}}}, "limit"),
    ("a bad cert-manager duration", {"webhook": {"certManager": {"duration": "1 year"}}},
     "/webhook/certManager/duration"),
    ("a poll interval too short", {"shim": {"agent": {"pollEvery": 0}}},
     "/shim/agent/pollEvery"),
    ("a bad maxUnavailable", {"shim": {"maxUnavailable": "half"}}, "/shim/maxUnavailable"),
    ("an image pull secret without a name", {"imagePullSecrets": [{}]}, "'name'"),
    ("an unknown key under stages", {"stages": {"enabled": False}}, "enabled"),
    ("stages.create as a string", {"stages": {"create": "no"}}, "/stages/create"),
    ("the pipeline as a map", {"stages": {"pipeline": {"dev": {"namespaces": ["dev"]}}}},
     "/stages/pipeline"),
    ("a stage name in capitals", _pipeline({"name": "Prod", "spec": {}}),
     "/stages/pipeline/0/name"),
    ("a stage name too long for a label", _pipeline({"name": "p" * 64, "spec": {}}),
     "/stages/pipeline/0/name"),
    ("a stage without a spec", _pipeline({"name": "dev"}), "'spec'"),
    ("a stage's spec beside it, not in it", _pipeline({"name": "ci", "upstream": "dev",
                                                       "spec": {}}), "upstream"),
    # The API server would only warn and drop it: prod would silently take tags.
    ("a misspelt policy rule", _pipeline({"name": "prod", "spec": {"policy": {
        "requirePinnedDigest": True}}}), "requirePinnedDigest"),
    ("a misspelt approval field", _pipeline({"name": "prod", "spec": {"gates": {
        "approval": {"groups": ["sre"], "requried": 2}}}}), "requried"),
    ("an upstream that is not a stage name", _pipeline({"name": "ci", "spec": {
        "upstream": "Dev"}}), "/stages/pipeline/0/spec/upstream"),
    ("a soak time without a unit", _pipeline({"name": "prod", "spec": {"gates": {
        "soakTime": "24"}}}), "/stages/pipeline/0/spec/gates/soakTime"),
]


@pytest.mark.parametrize(("mistake", "values", "field"), BAD_VALUES,
                         ids=[row[0] for row in BAD_VALUES])
def test_helm_template_refuses_bad_values_and_names_the_field(
        mistake: str, values: dict[str, Any], field: str, tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    done = run(tool("helm"), "template", "dy", str(CHART), "--values", str(path))
    assert done.returncode != 0, f"{mistake}: accepted"
    assert "values don't meet the specifications of the schema" in done.stderr, done.stderr
    assert field in done.stderr, done.stderr


def test_the_schema_is_draft_07_and_closed_at_every_level() -> None:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    open_objects: list[str] = []

    def walk(node: dict[str, Any], where: str) -> None:
        if "properties" in node and node.get("additionalProperties") is not False:
            open_objects.append(where or "/")
        for name, child in (node.get("properties") or {}).items():
            walk(child, f"{where}/{name}")
        if "items" in node:
            walk(node["items"], f"{where}/items")

    walk(schema, "")
    for name, definition in schema["definitions"].items():
        walk(definition, f"#/definitions/{name}")
    assert open_objects == []


def test_every_default_value_is_described_by_the_schema() -> None:
    """values.yaml and the schema agree: a key added to one only would fail here."""
    schema = yaml.safe_load((CHART / "values.schema.json").read_text(encoding="utf-8"))
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))

    def keys(node: dict[str, Any], prefix: str = "") -> set[str]:
        found = set()
        for name, child in node.items():
            found.add(prefix + name)
            if isinstance(child, dict) and child and "properties" in (
                    _at(schema, prefix + name) or {}):
                found |= keys(child, f"{prefix}{name}.")
        return found

    described = {key for key in keys(values) if _at(schema, key) is not None}
    assert described == keys(values)
    top = set(schema["properties"]) - {"global"}
    assert top == set(values)


def _at(schema: dict[str, Any], dotted: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for name in dotted.split("."):
        node = ((node or {}).get("properties") or {}).get(name)
    return node


def test_a_stage_spec_in_the_values_has_exactly_the_fields_of_the_crd() -> None:
    """values.schema.json closes every object of a Stage's spec, because the API server
    only warns about an unknown field of a custom resource and drops it. Where it names
    fields, types or patterns, they are the CRD's: a field added to the model fails here
    until the values schema knows it too."""
    schema = yaml.safe_load((CHART / "values.schema.json").read_text(encoding="utf-8"))
    spec = kind_schema("Stage")["properties"]["spec"]
    differences: list[str] = []

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = schema["definitions"][node["$ref"].removeprefix("#/definitions/")]
        return node

    def types(node: dict[str, Any]) -> list[str]:
        found = node.get("type") or [branch["type"] for branch in node.get("anyOf", [])]
        return sorted([found] if isinstance(found, str) else found)

    def walk(ours: dict[str, Any], theirs: dict[str, Any], where: str) -> None:
        ours = resolve(ours)
        if types(ours) != types(theirs):
            differences.append(f"{where}: type {types(ours)}, the CRD's {types(theirs)}")
        for key in ("enum", "pattern", "minimum", "maximum", "minLength", "maxLength",
                    "minItems"):
            if key in ours and ours[key] != theirs.get(key):
                differences.append(f"{where}: {key} {ours[key]!r}, the CRD's "
                                   f"{theirs.get(key)!r}")
        if "properties" in theirs or "properties" in ours:
            mine, crd = set(ours.get("properties", {})), set(theirs.get("properties", {}))
            if mine != crd:
                differences.append(f"{where}: fields {sorted(mine ^ crd)} in one only")
            if sorted(ours.get("required", [])) != sorted(theirs.get("required", [])):
                differences.append(f"{where}: required differs")
            for name in mine & crd:
                walk(ours["properties"][name], theirs["properties"][name], f"{where}.{name}")
        if "items" in theirs:
            walk(ours.get("items", {}), theirs["items"], f"{where}[]")

    walk(schema["definitions"]["stage"]["properties"]["spec"], spec, "spec")
    assert differences == []
