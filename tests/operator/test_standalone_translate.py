"""A Container manifest as the runtime's config: every field, Kubernetes semantics, the hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dockyard_api.converge import (
    ManifestSetError,
    desire,
    spec_hash,
)
from dockyard_shim.runtime.config import ContainerConfig
from dockyard_shim.volumes import VolumeRecord
from tests.operator import container, desired, edited, image, manifests, one, volume

FULL = container(
    "web", "shop",
    command=["/bin/sh", "-c"], args=["echo $GREETING"],
    env=[{"name": "GREETING", "value": "hello"}, {"name": "EMPTY"}],
    workingDir="/srv", user="1000:1000", hostname="web-1",
    resources={"cpu": "0.5", "memory": "64Mi", "pids": 32},
    volumeMounts=[{"name": "data", "mountPath": "/data"},
                  {"name": "logs", "mountPath": "/var/log/web", "subPath": "web",
                   "readOnly": True}],
    network={"mode": "Bridge", "ports": [
        {"containerPort": 80, "hostPort": 8080},
        {"containerPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1"}]},
    restartPolicy="OnFailure", readOnlyRootfs=True,
    capabilities={"add": ["NET_ADMIN"], "drop": ["ALL"]},
    noNewPrivileges=True, seccompProfile={"type": "Unconfined"},
    hostUsers=False, sysctls=[{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"},
                              {"name": "kernel/shmmax", "value": "268435456"}],
)
VOLUMES = (volume("data", "shop", local={}), volume("logs", "shop", hostPath={"path": "/srv/logs"}))


def test_every_field_of_a_container_is_translated() -> None:
    want = one(FULL, *VOLUMES)
    assert want.name == "shop.web"
    assert want.key == "shop/web"
    assert dict(want.config) == {
        "image": "busybox:latest",
        "name": "shop.web",
        "entrypoint": ["/bin/sh", "-c"],
        "command": ["echo $GREETING"],
        "env": ["GREETING=hello", "EMPTY="],
        "working_dir": "/srv",
        "user": "1000:1000",
        "hostname": "web-1",
        "memory_bytes": 64 * 1024 * 1024,
        "cpu_millis": 500,
        "pids_limit": 32,
        "binds": [],
        "volumes": [
            {"name": "shop.data", "target": "/data", "readonly": False, "subpath": ""},
            {"name": "shop.logs", "target": "/var/log/web", "readonly": True, "subpath": "web"}],
        "tmpfs": [],
        "network": "bridge",
        "ports": [
            {"container_port": 80, "host_port": 8080, "host_ip": "0.0.0.0", "protocol": "tcp"},
            {"container_port": 53, "host_port": 0, "host_ip": "127.0.0.1", "protocol": "udp"}],
        "read_only": True,
        "restart": "on-failure",
        "restart_max_retries": 0,
        "auto_remove": False,
        "cap_add": ["NET_ADMIN"],
        "cap_drop": ["ALL"],
        "no_new_privileges": True,
        "seccomp": "unconfined",
        "seccomp_profile": "",
        "seccomp_profile_path": "",
        "userns": "auto",
        "sysctls": {"net.ipv4.ip_unprivileged_port_start": "0", "kernel/shmmax": "268435456"},
        "labels": {"dockyard.dev/managed-by": "dockyard-up",
                   "dockyard.dev/object": "shop/web",
                   "dockyard.dev/spec-hash": want.spec_hash},
    }
    assert want.volumes == ({"name": "shop.data", "kind": "local"},
                            {"name": "shop.logs", "kind": "hostPath", "host_path": "/srv/logs",
                             "shared": False})
    assert want.source == "app.yaml#0"


def test_the_defaults_of_a_minimal_container_are_the_runtimes() -> None:
    config = one(container("web")).config
    assert config["entrypoint"] is None  # the image's ENTRYPOINT
    assert config["command"] == []  # the image's CMD
    assert (config["env"], config["working_dir"], config["user"], config["hostname"]) == \
        ([], "", "", "")
    assert (config["memory_bytes"], config["cpu_millis"], config["pids_limit"]) == \
        (None, None, None)
    assert (config["network"], config["restart"], config["read_only"]) == \
        ("bridge", "no", False)
    # Left out, as the node's config leaves them out: spec hashes stay as they were.
    assert "userns" not in config
    assert "sysctls" not in config


@pytest.mark.parametrize(("spec", "entrypoint", "command"), [
    ({"command": ["/app"], "args": ["--port", "80"]}, ["/app"], ["--port", "80"]),
    ({"command": ["/app"]}, ["/app"], []),  # the image's CMD is dropped, as the kubelet does
    ({"args": ["--port", "80"]}, None, ["--port", "80"]),  # runs the image's ENTRYPOINT
    ({"command": [], "args": []}, None, []),  # empty lists mean unset in Kubernetes
])
def test_command_replaces_the_entrypoint_and_args_the_cmd(
        spec: dict[str, Any], entrypoint: list[str] | None, command: list[str]) -> None:
    config = one(container("web", **spec)).config
    assert (config["entrypoint"], config["command"]) == (entrypoint, command)


@pytest.mark.parametrize(("cpu", "millis"), [("0.5", 500), ("250m", 250), (2, 2000),
                                             ("1.5", 1500)])
def test_cpu_quantities_become_millicores(cpu: object, millis: int) -> None:
    assert one(container("web", resources={"cpu": cpu})).config["cpu_millis"] == millis


@pytest.mark.parametrize(("memory", "size"), [("64Mi", 64 << 20), ("1G", 10**9),
                                              ("1.5Gi", 3 << 29), (8388608, 8 << 20)])
def test_memory_quantities_become_bytes(memory: object, size: int) -> None:
    assert one(container("web", resources={"memory": memory})).config["memory_bytes"] == size


@pytest.mark.parametrize(("mode", "network"), [("None", "none"), ("Host", "host"),
                                                ("Bridge", "bridge")])
def test_network_modes(mode: str, network: str) -> None:
    assert one(container("web", network={"mode": mode})).config["network"] == network


@pytest.mark.parametrize(("policy", "restart"), [("Never", "no"), ("OnFailure", "on-failure"),
                                                  ("Always", "always")])
def test_restart_policies(policy: str, restart: str) -> None:
    want = one(container("web", restartPolicy=policy))
    assert want.config["restart"] == want.restart == restart


def test_an_image_ref_runs_the_images_reference() -> None:
    config = one(container("web", image=None, imageRef="base"),
                 image("base", reference="busybox:1.36")).config
    assert config["image"] == "busybox:1.36"


def test_an_image_ref_is_pinned_to_the_images_digest() -> None:
    digest = "sha256:" + "a" * 64
    config = one(container("web", image=None, imageRef="base"),
                 image("base", reference="busybox:1.36", digest=digest)).config
    assert config["image"] == f"busybox:1.36@{digest}"
    config = one(container("web", image=None, imageRef="base"),
                 image("base", reference=f"busybox@{digest}", digest=digest)).config
    assert config["image"] == f"busybox@{digest}"  # written once, not twice


def test_an_image_ref_looks_in_the_containers_namespace_only() -> None:
    with pytest.raises(ManifestSetError) as caught:
        desired(container("web", "shop", image=None, imageRef="base"),
                image("base", reference="busybox:1.36"))
    (problem,) = caught.value.problems
    assert (problem.path, problem.message.split(":")[0]) == \
        ("spec.imageRef", "no Image shop/base among the manifests given")


def test_an_image_made_by_a_commit_is_not_supported_yet() -> None:
    with pytest.raises(ManifestSetError) as caught:
        desired(container("web", image=None, imageRef="built"),
                image("built", fromCommit="snapshot-1"))
    (problem,) = caught.value.problems
    assert problem.path == "spec.imageRef"
    assert "Commit snapshot-1" in problem.message


def test_each_volume_is_a_node_volume_of_its_namespace_made_once() -> None:
    want = one(container("web", volumeMounts=[
        {"name": "data", "mountPath": "/a"},
        {"name": "data", "mountPath": "/b", "subPath": "deep/er", "readOnly": True},
        {"name": "mem", "mountPath": "/m"}, {"name": "ceph", "mountPath": "/c"}]),
        volume("data", local={}), volume("mem", tmpfs={"sizeLimit": "64Mi", "mode": 0o700}),
        volume("ceph", provider={"container": "storage", "path": "/export"}))
    assert want.config["volumes"] == [
        {"name": "default.data", "target": "/a", "readonly": False, "subpath": ""},
        {"name": "default.data", "target": "/b", "readonly": True, "subpath": "deep/er"},
        {"name": "default.mem", "target": "/m", "readonly": False, "subpath": ""},
        {"name": "default.ceph", "target": "/c", "readonly": False, "subpath": ""}]
    assert want.volumes == (
        {"name": "default.data", "kind": "local"},
        {"name": "default.mem", "kind": "tmpfs", "size_bytes": 64 << 20, "mode": 0o700},
        {"name": "default.ceph", "kind": "provider", "provider": "default.storage",
         "provider_path": "/export"})


def test_every_node_volume_is_one_the_volume_store_takes() -> None:
    """The wire contract on the volume side: VolumeRecord reads each one back as it is."""
    want = one(FULL, *VOLUMES)
    for spec in want.volumes:
        assert {k: v for k, v in VolumeRecord.from_json(dict(spec)).to_json().items()
                if k in spec} == spec


def test_the_daemon_accepts_every_translated_config_as_it_is(tmp_path: Path) -> None:
    """The wire contract: ContainerConfig reads the dict back without losing a field."""
    logs = tmp_path / "logs"
    (logs / "web").mkdir(parents=True)
    doc = edited(FULL, "spec.network", {"mode": "Bridge", "ports": [{"containerPort": 80}]})
    want = desire(manifests(doc, VOLUMES[0], volume("logs", "shop", hostPath={
        "path": str(logs)})))[0]
    config = ContainerConfig.from_json(dict(want.config))
    assert config.to_json() == ContainerConfig.from_json(config.to_json()).to_json()
    assert _lists(config.to_json()) == want.config


def _lists(value: Any) -> Any:
    """The JSON form (tuples as lists), as it comes back from the daemon."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


# The spec hash ---------------------------------------------------------------------------

def test_the_hash_is_the_sha256_of_the_config_without_its_labels() -> None:
    want = one(FULL, *VOLUMES)
    assert want.spec_hash == spec_hash(want.config)
    assert len(want.spec_hash) == 64
    assert spec_hash({**want.config, "labels": {"other": "x"}}) == want.spec_hash


def test_the_hash_is_stable_across_runs_key_order_and_unrelated_metadata() -> None:
    first = one(FULL, *VOLUMES).spec_hash
    reordered = {k: FULL[k] for k in reversed(FULL)}
    reordered["spec"] = {k: FULL["spec"][k] for k in reversed(FULL["spec"])}
    relabelled = edited(FULL, "metadata.labels", {"team": "shop"})
    assert one(reordered, *VOLUMES).spec_hash == first
    assert one(relabelled, *VOLUMES).spec_hash == first
    assert one(FULL, *VOLUMES).spec_hash == first


@pytest.mark.parametrize(("path", "value"), [
    ("spec.image", "busybox:1.36"),
    ("spec.command", ["/bin/ash", "-c"]),
    ("spec.args", ["echo $OTHER"]),
    ("spec.env", [{"name": "GREETING", "value": "bye"}]),
    ("spec.workingDir", "/tmp"),
    ("spec.user", "0"),
    ("spec.hostname", "web-2"),
    ("spec.resources", {"cpu": "0.25", "memory": "64Mi", "pids": 32}),
    ("spec.resources", {"cpu": "0.5", "memory": "65Mi", "pids": 32}),
    ("spec.resources", {"cpu": "0.5", "memory": "64Mi", "pids": 33}),
    ("spec.volumeMounts", [{"name": "data", "mountPath": "/data", "readOnly": True}]),
    ("spec.volumeMounts", [{"name": "data", "mountPath": "/elsewhere"}]),
    ("spec.network", {"mode": "Host"}),
    ("spec.network", {"mode": "Bridge", "ports": [{"containerPort": 80, "hostPort": 8081}]}),
    ("spec.restartPolicy", "Always"),
    ("spec.readOnlyRootfs", False),
    ("spec.capabilities", {"add": ["NET_RAW"], "drop": ["ALL"]}),
    ("spec.capabilities", {"add": ["NET_ADMIN"]}),
    ("spec.hostUsers", True),
    ("spec.sysctls", [{"name": "kernel/shmmax", "value": "268435456"}]),
    ("metadata.name", "shop"),
    ("metadata.namespace", "store"),
])
def test_the_hash_changes_with_every_field(path: str, value: Any) -> None:
    changed = edited(FULL, path, value)
    namespace = changed["metadata"]["namespace"]
    vols = [edited(v, "metadata.namespace", namespace) for v in VOLUMES]
    assert one(changed, *vols).spec_hash != one(FULL, *VOLUMES).spec_hash


