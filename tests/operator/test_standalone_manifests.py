"""Reading a manifest set: one set across files, every problem located, nothing half-read."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard_api import load_documents
from dockyard_api.converge import (
    ManifestSetError,
    ObjectKey,
    SourcedProblem,
    desire,
    load_manifests,
)
from dockyard_api.crd import kind_schema
from dockyard_api.server_validation import validate
from tests.operator import container, manifests, text, volume

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "standalone"


def test_the_documents_of_every_file_form_one_set() -> None:
    found = load_manifests([
        ("web.yaml", text(container("web", volumeMounts=[{"name": "data",
                                                          "mountPath": "/data"}]))),
        ("volumes.yaml", text(volume("data", local={}), volume("logs", "ops", local={}))),
    ])
    assert [p.key for p in found.containers] == ["default/web"]
    assert set(found.volumes) == {"default/data", "ops/logs"}
    assert found.volumes[ObjectKey("ops/logs")].source == "volumes.yaml#1"
    assert found.containers[0].source == "web.yaml"  # one document: no index
    assert found.namespaces == {"default", "ops"}


def test_an_object_without_a_namespace_is_in_default() -> None:
    (placed,) = manifests(container("web")).containers
    assert (placed.namespace, placed.name, placed.key) == ("default", "web", "default/web")


def test_every_invalid_document_of_every_file_is_reported_with_its_field_path() -> None:
    with pytest.raises(ManifestSetError) as caught:
        load_manifests([
            ("a.yaml", text(container("ok"), container("bad", restartPolicy="always"))),
            ("b.yaml", text(container("Bad_Name"))),
        ])
    problems = caught.value.problems
    assert [(p.source, p.path) for p in problems] == [
        ("a.yaml#1", "spec.restartPolicy"), ("b.yaml", "metadata.name")]
    assert "a.yaml#1: spec.restartPolicy: Input should be 'Never'" in str(caught.value)


def test_yaml_that_does_not_parse_names_its_file() -> None:
    with pytest.raises(ManifestSetError) as caught:
        load_manifests([("broken.yaml", "kind: [unclosed\n")])
    (problem,) = caught.value.problems
    assert problem.source == "broken.yaml"
    assert "not valid YAML" in problem.message


def test_an_object_defined_twice_is_refused_naming_both_places() -> None:
    with pytest.raises(ManifestSetError) as caught:
        load_manifests([("a.yaml", text(container("web"))),
                        ("b.yaml", text(container("web", args=["other"])))])
    assert caught.value.problems == (SourcedProblem(
        "b.yaml", "metadata.name",
        "Container default/web is defined twice: also in a.yaml; keep one definition"),)


def test_the_same_name_in_two_namespaces_or_two_kinds_is_no_clash() -> None:
    found = manifests(container("web"), container("web", "ops"), volume("web", local={}))
    assert [p.key for p in found.containers] == ["default/web", "ops/web"]


def test_generate_name_is_refused_since_no_api_server_picks_the_name() -> None:
    doc = container("web")
    doc["metadata"] = {"generateName": "web-"}
    with pytest.raises(ManifestSetError) as caught:
        manifests(doc)
    assert caught.value.problems[0].path == "metadata.name"
    assert "generateName" in caught.value.problems[0].message


def test_other_kinds_and_other_api_groups_are_skipped_and_listed() -> None:
    stage = {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Stage",
             "metadata": {"name": "dev"}, "spec": {"namespaces": ["dev"]}}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    found = manifests(stage, config_map, container("web"))
    assert found.ignored == ("Stage dev (app.yaml#0)", "ConfigMap of v1 (app.yaml#1)")
    assert len(found.containers) == 1


def test_a_document_without_api_version_is_a_problem_not_a_skip() -> None:
    doc = container("web")
    del doc["apiVersion"]
    with pytest.raises(ManifestSetError) as caught:
        manifests(doc)
    assert caught.value.problems[0].path == "apiVersion"


def test_the_standalone_examples_are_valid_for_the_crds_and_translate() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert len(files) >= 3
    for path in files:
        for document in load_documents(path.read_text(encoding="utf-8")):
            assert isinstance(document, dict)
            _, problems = validate(document, kind_schema(str(document["kind"])))
            assert problems == [], path
    found = load_manifests([(p.name, p.read_text(encoding="utf-8")) for p in files])
    names = [d.name for d in desire(found)]
    assert names == ["default.applet-count", "default.clock", "default.writer",
                     "default.reader"]
    assert found.ignored == ()
