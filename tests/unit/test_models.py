"""The models are strict at the edge and convenient in code."""

from __future__ import annotations

import pytest

from dockyard_api import Container, ContainerSpec, InvalidManifestError, dump, load_documents, parse
from dockyard_api.container import NetworkMode, RestartPolicy
from dockyard_api.meta import ConditionStatus


def _container(**spec: object) -> dict[str, object]:
    return {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Container",
            "metadata": {"name": "web"}, "spec": {"image": "nginx:1.27", **spec}}


def test_a_minimal_container_gets_dockers_defaults() -> None:
    container = parse(_container())
    assert isinstance(container, Container)
    assert container.spec.restart_policy is RestartPolicy.NEVER
    assert container.spec.network.mode is NetworkMode.BRIDGE
    assert container.spec.read_only_rootfs is False
    assert container.spec.env == []


def test_manifests_must_use_camel_case_names() -> None:
    with pytest.raises(InvalidManifestError, match=r"spec\.node_name: unknown field"):
        parse(_container(node_name="worker-1"))


def test_code_may_construct_models_by_python_name() -> None:
    spec = ContainerSpec(image="nginx", node_name="worker-1",
                         restart_policy=RestartPolicy.ALWAYS)
    assert spec.node_name == "worker-1"


def test_numbers_written_as_strings_are_refused() -> None:
    with pytest.raises(InvalidManifestError, match=r"spec\.resources\.pids: Input should be"):
        parse(_container(resources={"pids": "5"}))


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidManifestError) as caught:
        parse(_container(hostname="Bad_Host", restartPolicy="sometimes"))
    assert [p.path for p in caught.value.problems] == ["spec.hostname", "spec.restartPolicy"]


def test_dump_then_parse_is_the_identity() -> None:
    original = parse(_container(resources={"cpu": "0.5", "memory": "64Mi"},
                                env=[{"name": "A", "value": "1"}],
                                network={"ports": [{"containerPort": 80, "hostPort": 8080}]}))
    again = parse(dump(original))
    assert again == original
    assert dump(again)["spec"]["resources"] == {"cpu": "0.5", "memory": "64Mi"}
    assert dump(again)["spec"]["network"]["ports"][0]["hostIP"] == "0.0.0.0"


def test_status_conditions_follow_the_api_conventions() -> None:
    body = _container()
    body["status"] = {"observedGeneration": 3, "phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "reason": "Started",
         "lastTransitionTime": "2026-11-28T10:00:00Z", "message": "running as pid 42"}]}
    container = parse(body)
    assert container.status is not None
    assert container.status.conditions[0].status is ConditionStatus.TRUE
    assert container.status.observed_generation == 3


def test_two_conditions_of_one_type_are_refused() -> None:
    body = _container()
    condition = {"type": "Ready", "status": "True", "reason": "Started",
                 "lastTransitionTime": "2026-11-28T10:00:00Z"}
    body["status"] = {"conditions": [condition, condition]}
    with pytest.raises(InvalidManifestError, match=r"status\.conditions\[1\]: duplicate type"):
        parse(body)


def test_a_condition_reason_is_one_camel_case_word() -> None:
    body = _container()
    body["status"] = {"conditions": [{"type": "Ready", "status": "True", "reason": "not ok",
                                      "lastTransitionTime": "2026-11-28T10:00:00Z"}]}
    with pytest.raises(InvalidManifestError, match=r"status\.conditions\[0\]\.reason"):
        parse(body)


def test_yaml_keys_written_twice_are_refused() -> None:
    text = "apiVersion: dockyard.dev/v1alpha1\nkind: Container\nkind: Image\n"
    with pytest.raises(InvalidManifestError, match="'kind' appears twice"):
        list(load_documents(text))


def test_yaml_timestamps_stay_strings_like_kubectl_reads_them() -> None:
    (document,) = load_documents("when: 2026-11-28T10:00:00Z\nplain: 2026-11-28\n")
    assert document == {"when": "2026-11-28T10:00:00Z", "plain": "2026-11-28"}


def test_a_manifest_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(InvalidManifestError, match="is a mapping with apiVersion and kind"):
        parse(["not", "a", "manifest"])


def test_metadata_must_name_the_object() -> None:
    body = _container()
    body["metadata"] = {"namespace": "dev"}
    with pytest.raises(InvalidManifestError, match=r"metadata\.name: a Container needs"):
        parse(body)


def test_objects_read_back_from_a_cluster_validate() -> None:
    body = _container()
    body["metadata"] = {"name": "web", "namespace": "dev", "uid": "1c2d", "generation": 2,
                        "resourceVersion": "981", "creationTimestamp": "2026-11-28T10:00:00Z",
                        "finalizers": ["dockyard.dev/cleanup"],
                        "managedFields": [{"manager": "kubectl", "operation": "Apply"}]}
    assert parse(body).metadata.generation == 2


def test_image_digest_must_agree_with_the_reference() -> None:
    sha = "sha256:" + "a" * 64
    body = {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Image", "metadata": {"name": "a"},
            "spec": {"reference": f"app@{sha}", "digest": sha}}
    assert parse(body).spec.digest == sha  # type: ignore[attr-defined]
