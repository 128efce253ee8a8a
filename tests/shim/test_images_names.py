"""Names, digests and platforms: Docker's reference normalisation, OCI chain ids, and the
choice of a manifest for this node."""

from __future__ import annotations

import hashlib

import pytest

from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.images import Platform, chain_ids, parse_digest, parse_reference
from dockyard_shim.images.digest import Digest
from dockyard_shim.images.platform import select

HEX = "a" * 64


@pytest.mark.parametrize(("text", "normalised", "familiar"), [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("me/app:v1", "docker.io/me/app:v1", "me/app:v1"),
    ("me/team/app", "docker.io/me/team/app:latest", "me/team/app:latest"),
    ("ghcr.io/org/app:2", "ghcr.io/org/app:2", "ghcr.io/org/app:2"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("localhost:5000/app:dev", "localhost:5000/app:dev", "localhost:5000/app:dev"),
    ("127.0.0.1:5000/a/b", "127.0.0.1:5000/a/b:latest", "127.0.0.1:5000/a/b:latest"),
    ("[::1]:5000/app", "[::1]:5000/app:latest", "[::1]:5000/app:latest"),
    ("Registry/app", "Registry/app:latest", "Registry/app:latest"),
    (f"busybox@sha256:{HEX}", f"docker.io/library/busybox@sha256:{HEX}",
     f"busybox@sha256:{HEX}"),
    (f"busybox:1@sha256:{HEX}", f"docker.io/library/busybox:1@sha256:{HEX}",
     f"busybox:1@sha256:{HEX}"),
    ("me/a.b_c__d-e--f", "docker.io/me/a.b_c__d-e--f:latest", "me/a.b_c__d-e--f:latest"),
])
def test_references_normalise_as_docker_does(text: str, normalised: str, familiar: str) -> None:
    ref = parse_reference(text)
    assert str(ref) == normalised
    assert ref.familiar() == familiar
    assert parse_reference(str(ref)) == ref  # normalising twice changes nothing


@pytest.mark.parametrize(("text", "complaint"), [
    ("", "non-empty"),
    ("BusyBox", "lowercase"),
    ("me/App", "lowercase"),
    ("busybox:", "invalid tag"),
    ("busybox:-x", "invalid tag"),
    ("busybox:" + "t" * 129, "invalid tag"),
    ("a//b", "invalid repository"),
    ("a/b/", "invalid repository"),
    ("-a", "invalid repository"),
    ("a__-b", "invalid repository"),
    ("busybox@sha256:abc", "not a digest"),
    ("busybox@md5:" + "a" * 32, "unsupported algorithm"),
    (HEX, "image id"),
    ("x" * 256, "longer than 255"),
    ("exa_mple.com:port/app", "registry domain"),
])
def test_bad_references_are_refused_with_the_reason(text: str, complaint: str) -> None:
    with pytest.raises(InvalidArgumentError, match=complaint):
        parse_reference(text)


def test_retagging_keeps_the_repository() -> None:
    ref = parse_reference(f"ghcr.io/org/app@sha256:{HEX}")
    assert str(ref.with_tag("v2")) == "ghcr.io/org/app:v2"
    with pytest.raises(InvalidArgumentError):
        ref.with_tag(".bad")


def test_chain_ids_follow_the_image_spec() -> None:
    diff_ids = [Digest("sha256:" + c * 64) for c in "abc"]
    ids = chain_ids(diff_ids)
    assert ids[0] == diff_ids[0]
    second = "sha256:" + hashlib.sha256(f"{diff_ids[0]} {diff_ids[1]}".encode()).hexdigest()
    assert ids[1] == second
    assert ids[2] == "sha256:" + hashlib.sha256(f"{second} {diff_ids[2]}".encode()).hexdigest()
    assert chain_ids([]) == []


def test_digests_are_sha256_in_lowercase_hex_only() -> None:
    assert parse_digest(f"sha256:{HEX}") == f"sha256:{HEX}"
    for bad in (f"sha256:{HEX.upper()}", "sha256:../../etc", f"sha512:{HEX}{HEX}", 42, None):
        with pytest.raises(InvalidArgumentError):
            parse_digest(bad)


AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")
ARM_V7 = Platform("linux", "arm", "v7")


@pytest.mark.parametrize(("node", "offered", "chosen"), [
    (AMD64, [ARM64, AMD64], AMD64),
    (Platform("linux", "arm64"), [AMD64, ARM64], ARM64),  # v8 is arm64's only variant
    (ARM64, [Platform("linux", "arm64")], Platform("linux", "arm64")),
    (ARM_V7, [Platform("linux", "arm", "v5"), Platform("linux", "arm", "v6")],
     Platform("linux", "arm", "v6")),  # the newest variant that runs
    (ARM_V7, [Platform("linux", "arm", "v6"), ARM_V7], ARM_V7),
    (Platform("linux", "arm", "v6"), [ARM_V7], None),
    (AMD64, [Platform("windows", "amd64"), ARM64], None),
    (AMD64, [Platform("linux", "amd64", "v3")], None),  # the node may lack x86-64-v3
    (Platform("linux", "x86_64"), [AMD64], AMD64),  # uname spellings are understood
])
def test_the_best_platform_for_the_node_is_chosen(node: Platform, offered: list[Platform],
                                                  chosen: Platform | None) -> None:
    assert select(node, [(p, p) for p in offered]) == chosen
