"""Digest pinning: what to do with an Image, and a tag resolved against a real registry."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from dockyard_api import Image
from dockyard_api.manifests import parse_as
from dockyard_api.registries import pinned_reference
from dockyard_operator.app import registry as operator
from dockyard_operator.pinning import (
    AwaitCommit,
    Keep,
    Pin,
    Resolve,
    ResolveError,
    plan,
    resolve,
)
from tests.kube.kopfrun import MERGE, eventually, running, serving
from tests.registry import running_registry
from tests.shim.imagefactory import image, oci_archive

DIGEST = "sha256:" + "a" * 64


def _image(spec: dict[str, Any], status: dict[str, Any] | None = None,
           generation: int = 1) -> Image:
    body: dict[str, Any] = {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Image",
                            "metadata": {"name": "app", "namespace": "ns",
                                         "generation": generation},
                            "spec": spec}
    if status is not None:
        body["status"] = status
    return parse_as(Image, body)


def test_a_given_digest_is_pinned_without_asking_the_registry() -> None:
    assert plan(_image({"reference": "registry.local:5000/app:v2", "digest": DIGEST})) == \
        Pin(DIGEST, f"registry.local:5000/app@{DIGEST}")
    assert plan(_image({"reference": f"nginx@{DIGEST}"})) == Pin(DIGEST, f"nginx@{DIGEST}")
    done = {"phase": "Resolved", "digest": DIGEST, "observedGeneration": 1}
    assert plan(_image({"reference": "nginx:1", "digest": DIGEST}, done)) == Keep()


def test_a_tag_is_resolved_once_per_generation_of_the_spec() -> None:
    fresh = _image({"reference": "nginx:1.27"})
    assert plan(fresh) == Resolve("nginx:1.27")
    pinned = {"phase": "Resolved", "digest": DIGEST, "observedGeneration": 1}
    assert plan(_image({"reference": "nginx:1.27"}, pinned)) == Keep()
    assert plan(_image({"reference": "nginx:1.28"}, pinned, generation=2)) == \
        Resolve("nginx:1.28")


def test_a_commits_image_waits_for_the_commit() -> None:
    assert plan(_image({"fromCommit": "snapshot-1"})) == AwaitCommit("snapshot-1")


@pytest.mark.parametrize(("reference", "pinned"), [
    ("nginx:1.27", f"nginx@{DIGEST}"),
    ("registry.local:5000/team/app:v2", f"registry.local:5000/team/app@{DIGEST}"),
    ("registry.local:5000/team/app", f"registry.local:5000/team/app@{DIGEST}"),
    (f"app:v1@sha256:{'b' * 64}", f"app@{DIGEST}"),
])
def test_the_pinned_reference_drops_the_tag(reference: str, pinned: str) -> None:
    assert pinned_reference(reference, DIGEST) == pinned


def _push(tmp_path: Path, number: int, reference: str) -> str:
    """Push a one-file image, numbered `number`, to `reference` (plain HTTP: the test
    registry); its manifest digest."""
    img = image([{"app/version": f"{number}\n".encode()}])
    archive = oci_archive(tmp_path / f"v{number}.tar", [(img, ["x/y:1"])])
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci-archive:{archive}",
                    f"docker://{reference}"], check=True, capture_output=True)
    return img.manifest_digest


@pytest.mark.e2e
def test_a_tag_resolves_to_the_digest_it_names_and_a_moved_tag_to_the_new_one(
        tmp_path: Path) -> None:
    with running_registry(tmp_path / "registry") as registry:
        for number in (1, 2):
            digest = _push(tmp_path, number, f"{registry.host}/team/app:stable")
            pin = resolve(f"{registry.host}/team/app:stable")
            assert pin == Pin(digest, f"{registry.host}/team/app@{digest}")
        with pytest.raises(ResolveError, match="cannot resolve"):
            resolve(f"{registry.host}/team/absent:1")


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_the_operator_pins_an_image_once_and_again_when_its_spec_changes(
        tmp_path: Path) -> None:
    with running_registry(tmp_path / "registry") as registry:
        first = _push(tmp_path, 1, f"{registry.host}/app:stable")
        async with serving() as (server, http), running(operator(), str(http.url)):
            images = "/apis/dockyard.dev/v1alpha1/namespaces/ns/images"
            body = {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Image",
                    "metadata": {"name": "app"},
                    "spec": {"reference": f"{registry.host}/app:stable"}}
            async with http.client.post(images, json=body) as response:
                assert response.status == 200

            def status() -> dict[str, Any]:
                found = server.get("images", "app", "ns") or {}
                return dict(found.get("status") or {})
            await eventually(lambda: status().get("digest") == first)
            assert status()["resolvedReference"] == f"{registry.host}/app@{first}"

            _push(tmp_path, 2, f"{registry.host}/app:stable")  # the tag moves: nothing changes
            async with http.client.patch(f"{images}/app", json={
                    "metadata": {"labels": {"team": "web"}}},
                    headers=MERGE) as response:
                assert response.status == 200
            third = _push(tmp_path, 3, f"{registry.host}/app:next")
            async with http.client.patch(f"{images}/app", json={
                    "spec": {"reference": f"{registry.host}/app:next"}},
                    headers=MERGE) as response:
                assert response.status == 200
            await eventually(lambda: status().get("digest") == third)
            assert status()["observedGeneration"] == 2

            def pinned() -> list[str]:
                return [e["message"] for e in server.all("events", group="")
                        if e["reason"] == "Pinned"]
            await eventually(lambda: len(pinned()) == 2)  # once per spec
            assert pinned() == [f"pinned to {registry.host}/app@{first}",
                                f"pinned to {registry.host}/app@{third}"]


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_containers_naming_a_tag_all_run_the_digest_it_had_first(tmp_path: Path) -> None:
    """A tag in a Container's own reference is resolved once for the cluster: a container
    created after the tag moved still runs the first digest, like its siblings."""
    with running_registry(tmp_path / "registry") as registry:
        first = _push(tmp_path, 1, f"{registry.host}/app:1")
        async with serving() as (server, http), running(operator(), str(http.url)):
            api = "/apis/dockyard.dev/v1alpha1"
            async with http.client.post(f"{api}/dockyardnodes", json={
                    "apiVersion": "dockyard.dev/v1alpha1", "kind": "DockyardNode",
                    "metadata": {"name": "n1"}}) as response:
                assert response.status == 200
            async with http.client.patch(f"{api}/dockyardnodes/n1/status", json={
                    "status": {"phase": "Ready"}},
                    headers=MERGE) as response:
                assert response.status == 200

            async def create(name: str) -> None:
                async with http.client.post(f"{api}/namespaces/ns/containers", json={
                        "apiVersion": "dockyard.dev/v1alpha1", "kind": "Container",
                        "metadata": {"name": name},
                        "spec": {"image": f"{registry.host}/app:1"}}) as response:
                    assert response.status == 200

            def digest(name: str) -> str | None:
                found = server.get("containers", name, "ns") or {}
                return (found.get("status") or {}).get("imageDigest")

            await create("early")
            await eventually(lambda: digest("early") == first)
            _push(tmp_path, 2, f"{registry.host}/app:1")  # the tag moves
            await create("late")
            await eventually(lambda: digest("late") is not None)
            assert digest("late") == first
