"""The generated CRDs are current, structural, documented and valid apiextensions/v1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from dockyard_api import KINDS, Resource
from dockyard_api import crd as crds
from dockyard_api.cel import _program
from dockyard_api.schema import problems
from dockyard_api.server_validation import schema_of

IDS = [cls.kind_info.kind for cls in KINDS]


def test_the_crds_on_disk_are_what_the_models_generate(repo_root: Path) -> None:
    assert crds.stale(repo_root) == [], "run `dockyard crd generate` and commit the result"


def test_the_chart_ships_the_same_crds_as_crds_dir(repo_root: Path) -> None:
    for cls in KINDS:
        name = crds.filename(cls)
        assert (repo_root / "crds" / name).read_bytes() == \
            (repo_root / "charts/dockyard/crds" / name).read_bytes()


def test_the_crd_check_notices_a_hand_edit(tmp_path: Path) -> None:
    crds.write(tmp_path)
    target = tmp_path / "crds" / crds.filename(KINDS[0])
    target.write_text(target.read_text().replace("served: true", "served: false"))
    assert crds.stale(tmp_path) == [f"crds/{crds.filename(KINDS[0])}"]
    assert crds.write(tmp_path) == [f"crds/{crds.filename(KINDS[0])}"]
    assert crds.stale(tmp_path) == []


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_each_crd_is_a_valid_apiextensions_v1_object(cls: type[Resource],
                                                     repo_root: Path) -> None:
    document = yaml.safe_load((repo_root / "crds" / crds.filename(cls)).read_text())
    kubernetes_validate.validate(document, "1.37.0", strict=True)
    spec = document["spec"]
    names = spec["names"]
    assert document["metadata"]["name"] == f"{names['plural']}.{spec['group']}"
    assert spec["group"] == "dockyard.dev"
    assert spec["scope"] == ("Namespaced" if cls.kind_info.namespaced else "Cluster")
    assert [v["storage"] for v in spec["versions"]] == [True]
    assert names["plural"].islower()
    assert names["categories"] == ["dockyard"]
    assert names["shortNames"]


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_each_schema_is_structural(cls: type[Resource]) -> None:
    assert problems(schema_of(crds.crd(cls))) == []


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        found += _walk(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found += _walk(schema[key], f"{path}[]")
    return found


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_every_field_is_documented(cls: type[Resource]) -> None:
    schema = schema_of(crds.crd(cls))
    undocumented = [path for path, node in _walk(schema)
                    if path.count(".") >= 1 and not path.endswith("[]")
                    and path != ".metadata" and not node.get("description")]
    assert undocumented == []


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_the_schema_has_no_untyped_holes(cls: type[Resource]) -> None:
    schema = schema_of(crds.crd(cls))
    holes = [path for path, node in _walk(schema)
             if node.get("x-kubernetes-preserve-unknown-fields")]
    assert holes == []


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_the_status_subresource_and_printer_columns_are_there(cls: type[Resource]) -> None:
    version = crds.crd(cls)["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = version["additionalPrinterColumns"]
    assert columns[-1]["name"] == "Age"
    assert "Phase" in [c["name"] for c in columns]
    schema = version["schema"]["openAPIV3Schema"]
    for column in columns:
        node = schema
        for part in column["jsonPath"].strip(".").split("."):
            if part == "metadata":
                break
            node = node["properties"][part]  # the column points at a real field
        else:
            wanted = {"date": "string"}.get(column["type"], column["type"])
            assert node.get("type", "string") == wanted or node.get("enum")


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_every_cel_rule_compiles_and_names_a_real_field(cls: type[Resource]) -> None:
    for path, node in _walk(schema_of(crds.crd(cls))):
        for rule in node.get("x-kubernetes-validations", []):
            _program(rule["rule"])
            assert rule["message"]
            field = rule.get("fieldPath", "").lstrip(".").split(".")[0]
            assert not field or field in node["properties"] or (path == "" and field == "metadata")


def test_the_structural_check_finds_what_the_api_server_refuses() -> None:
    bad = {
        "type": "object",
        "properties": {
            "untyped": {"description": "no type"},
            "ref": {"$ref": "#/x", "type": "object"},
            "closed": {"type": "object", "additionalProperties": False},
            "list": {"type": "array"},
            "badDefault": {"type": "string", "pattern": "^[a-z]+$", "default": "PT10M"},
            "mapList": {"type": "array", "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        },
    }
    found = "\n".join(problems(bad))
    for expected in ("untyped: type is missing", "ref: $ref is not allowed",
                     "closed: additionalProperties must be a schema",
                     "list: an array needs items", "badDefault: default 'PT10M' is invalid",
                     "mapList: list-map key 'name' must be required or defaulted"):
        assert expected in found
