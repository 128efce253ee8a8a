"""Properties of the image document parsers and the archive loader over generated input.

- a valid manifest, index or config is accepted and read back as written;
- anything else (mutated documents, arbitrary bytes, deep nests, huge numbers, bad digests
  and media types) fails with the shim's own errors (InvalidArgumentError, or
  UnavailableError for a zstd layer) carrying a message, never with another exception;
- the platform choice never fails, whatever the platforms an index offers;
- `read_archive` over generated OCI layouts and `docker save` tars, their documents mutated,
  their members missing, linked in loops, or the whole tar damaged, compressed or not, fails
  only with the shim's errors, and stores nothing it cannot account for in `added`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import event, example, given
from hypothesis import strategies as st

from dockyard_shim.errors import ShimError
from dockyard_shim.images import ContentStore, Digest, Platform
from dockyard_shim.images.loaders import read_archive
from dockyard_shim.images.oci import (
    Descriptor,
    Index,
    Manifest,
    load_json,
    parse_config,
    parse_descriptor,
    parse_manifest_or_index,
)
from dockyard_shim.images.platform import select
from dockyard_shim.images.reference import parse_reference
from tests.fuzz.documents import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    configs,
    encode,
    indexes,
    json_values,
    manifests,
    mutated,
    platforms,
)
from tests.shim.layerfactory import File, tar_of

NODE = Platform("linux", "amd64")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def refused_cleanly(error: ShimError) -> None:
    assert str(error), f"{type(error).__name__} without a message"


def parse_document(data: bytes, media_type: str) -> Manifest | Index | None:
    try:
        return parse_manifest_or_index(data, Descriptor(media_type, Digest(sha256(data)),
                                                        len(data)))
    except ShimError as e:
        refused_cleanly(e)
        return None


# Documents ----------------------------------------------------------------------------------

@given(manifests)
def test_a_valid_manifest_is_accepted_as_written(document: dict[str, Any]) -> None:
    parsed = parse_document(encode(document), document.get("mediaType", OCI_MANIFEST))
    assert isinstance(parsed, Manifest)
    assert parsed.config.digest == document["config"]["digest"]
    assert [d.digest for d in parsed.layers] == [d["digest"] for d in document["layers"]]


@given(indexes)
def test_a_valid_index_is_accepted_as_written(document: dict[str, Any]) -> None:
    parsed = parse_document(encode(document), document.get("mediaType", OCI_INDEX))
    assert isinstance(parsed, Index)
    assert [d.size for d in parsed.manifests] == [d["size"] for d in document["manifests"]]


@given(configs)
def test_a_valid_config_is_accepted_as_written(document: dict[str, Any]) -> None:
    data = encode(document)
    config = parse_config(data, Digest(sha256(data)))
    assert list(config.diff_ids) == document["rootfs"]["diff_ids"]
    assert len(config.chain_ids) == len(config.diff_ids)
    assert config.cmd == tuple(document.get("config", {}).get("Cmd", ()))


@given(mutated(manifests | indexes), st.sampled_from((OCI_MANIFEST, OCI_INDEX, "")))
@example([[[]]], OCI_MANIFEST)
@example({"schemaVersion": 2, "manifests": [], "mediaType": [OCI_INDEX]}, "")  # TypeError
def test_a_mutated_manifest_or_index_is_refused_with_a_shim_error_or_accepted(
        document: Any, media_type: str) -> None:
    parse_document(encode(document), media_type)


@given(mutated(configs))
def test_a_mutated_config_is_refused_with_a_shim_error_or_accepted(document: Any) -> None:
    data = encode(document)
    try:
        parse_config(data, Digest(sha256(data)))
    except ShimError as e:
        refused_cleanly(e)


@given(json_values | mutated(manifests))
def test_a_descriptor_of_any_shape_is_refused_with_a_shim_error_or_accepted(
        value: Any) -> None:
    try:
        parse_descriptor(value, "descriptor")
    except ShimError as e:
        refused_cleanly(e)


@given(st.binary(max_size=256) | st.text(max_size=64).map(str.encode))
@example(b"[" * 100_000)
@example(b'{"a":' * 50_000)
@example(b"1" * 5000)
def test_any_bytes_are_a_json_object_or_a_shim_error(data: bytes) -> None:
    try:
        assert isinstance(load_json(data, "document"), dict)
    except ShimError as e:
        refused_cleanly(e)


@given(platforms, st.lists(platforms, max_size=4))
@example({"os": "linux", "architecture": "arm", "variant": "v²"},
         [{"os": "linux", "architecture": "arm", "variant": "v7"}])
def test_choosing_a_platform_never_fails(want: dict[str, str],
                                         offered: list[dict[str, str]]) -> None:
    def platform(raw: dict[str, str]) -> Platform:
        return Platform(raw["os"], raw["architecture"], raw.get("variant"))

    chosen = select(platform(want), [(platform(p), n) for n, p in enumerate(offered)])
    assert chosen is None or 0 <= chosen < len(offered)


# Archives -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Member:
    """A tar member: content, or a link (`symlink`/`hardlink`) to another member."""

    data: bytes = b""
    link: str = ""
    kind: str = "file"


def valid_image(config: dict[str, Any]) -> tuple[dict[str, Member], dict[str, Any]]:
    """The blobs of a one-layer OCI image with `config` (diff_ids fixed to its layer),
    and its manifest document (not yet a blob)."""
    layer = tar_of(File("etc/hostname", b"box\n"))
    config = {**config, "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]}}
    config_bytes = encode(config)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": sha256(config_bytes),
                           "size": len(config_bytes)},
                "layers": [{"mediaType": OCI_LAYER, "digest": sha256(layer),
                            "size": len(layer)}]}
    blobs = {f"blobs/sha256/{sha256(b)[7:]}": Member(b) for b in (layer, config_bytes)}
    return blobs, manifest


@st.composite
def archives(draw: st.DrawFn) -> dict[str, Member]:
    """The members of an OCI layout or `docker save` tar, maybe damaged at any level."""
    damage = draw(st.sampled_from(("none", "config", "manifest", "index", "layout",
                                   "docker manifest", "members")))
    config = draw(mutated(configs) if damage == "config" else configs)
    if not isinstance(config, dict):
        config = {"config": config}
    members, manifest = valid_image(config)
    if damage == "config":  # the mutation may have replaced the fixed diff_ids
        members = {k: v for k, v in members.items() if v.data[:1] != b"{"}
        raw = encode(config)
        members[f"blobs/sha256/{sha256(raw)[7:]}"] = Member(raw)
        manifest["config"] |= {"digest": sha256(raw), "size": len(raw)}
    if damage == "manifest":
        manifest = draw(mutated(st.just(manifest)))
    manifest_bytes = encode(manifest)
    members[f"blobs/sha256/{sha256(manifest_bytes)[7:]}"] = Member(manifest_bytes)
    entry: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": sha256(manifest_bytes),
                             "size": len(manifest_bytes),
                             "annotations": {"io.containerd.image.name": "app:1"}}
    index: Any = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
    if damage == "index":
        index = draw(mutated(st.just(index)))
    layout: Any = {"imageLayoutVersion": "1.0.0"}
    if damage == "layout":
        layout = draw(mutated(st.just(layout)))
    legacy = draw(st.booleans())
    if legacy:  # docker save before Docker 25: manifest.json, no index
        config_name = next(k for k, v in members.items() if v.data[:1] == b"{"
                           and v.data != manifest_bytes)
        layer_name = next(k for k, v in members.items() if v.data[:1] != b"{")
        docker: Any = [{"Config": config_name, "RepoTags": ["app:1"], "Layers": [layer_name]}]
        if damage == "docker manifest":
            docker = draw(mutated(st.just(docker)))
        members["manifest.json"] = Member(encode(docker))
    else:
        members["oci-layout"] = Member(encode(layout))
        members["index.json"] = Member(encode(index))
    if damage == "members":
        damage_members(draw, members)
    return members


def damage_members(draw: st.DrawFn, members: dict[str, Member]) -> None:
    """Drop members, or make them links (out, to each other, to themselves) or folders."""
    names = sorted(members)
    for _ in range(draw(st.integers(1, 3))):
        victim = draw(st.sampled_from(names))
        change = draw(st.sampled_from(("drop", "symlink", "hardlink", "loop", "dir")))
        if change == "drop":
            members.pop(victim, None)
        elif change == "loop":
            members[victim] = Member(link=victim, kind="symlink")
        elif change == "dir":
            members[victim] = Member(kind="dir")
        else:
            members[victim] = Member(link=draw(st.sampled_from(
                [*names, "../" * 3 + "etc/passwd", "/etc/passwd"])), kind=change)


def tar_bytes(members: dict[str, Member]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, member in members.items():
            info = tarfile.TarInfo(name)
            if member.kind == "file":
                info.size = len(member.data)
                tar.addfile(info, io.BytesIO(member.data))
                continue
            info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "dir": tarfile.DIRTYPE}[member.kind]
            info.linkname = member.link
            tar.addfile(info)
    return out.getvalue()


@st.composite
def archive_files(draw: st.DrawFn) -> bytes:
    """An archive's bytes: compressed or not, maybe with bytes flipped or cut short."""
    data = bytearray(tar_bytes(draw(archives())))
    if draw(st.booleans()):
        data = bytearray(gzip.compress(bytes(data), mtime=0))
    if draw(st.integers(0, 3)) == 0:
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    if draw(st.integers(0, 4)) == 0:
        del data[draw(st.integers(0, len(data))):]
    return bytes(data)


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="dockyard-fuzz-images-"))
    try:
        yield top
    finally:
        shutil.rmtree(top)


@given(archive_files())
@example(b"\x1f\x8b")  # a gzip stream cut short: EOFError escaped
def test_loading_any_image_archive_stores_it_or_fails_with_a_shim_error(data: bytes) -> None:
    with scratch() as top:
        path = top / "image.tar"
        path.write_bytes(data)
        content = ContentStore(top / "content")
        added: set[Digest] = set()
        try:
            images = read_archive(path, content, NODE, added)
        except ShimError as e:
            refused_cleanly(e)
            event(f"refused: {type(e).__name__}")
        else:
            event("loaded")
            assert images
            for image in images:
                assert image.blobs <= set(content.list())
        assert set(content.list()) == added  # all it stored is in `added`, for a rollback
        assert list((top / "content" / "ingest").iterdir()) == []


def test_an_undamaged_generated_archive_loads() -> None:
    """The generator's valid archive is really valid (a check of the checker)."""
    members, manifest = valid_image({"architecture": "amd64", "os": "linux"})
    raw = encode(manifest)
    members[f"blobs/sha256/{sha256(raw)[7:]}"] = Member(raw)
    members["oci-layout"] = Member(json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    members["index.json"] = Member(encode({
        "schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(raw),
                                           "size": len(raw)}]}))
    with scratch() as top:
        path = top / "image.tar"
        path.write_bytes(tar_bytes(members))
        [image] = read_archive(path, ContentStore(top / "content"), NODE, set())
        assert image.manifest.digest == sha256(raw)


# References ---------------------------------------------------------------------------------

reference_texts = st.builds(
    lambda domain, path, tag, digest: domain + "/".join(path) + tag + digest,
    st.sampled_from(("", "", "docker.io/", "index.docker.io/", "ghcr.io/", "localhost/",
                     "localhost:5000/", "[::1]:5000/", "Registry.Example.com/", "a_b/")),
    st.lists(st.sampled_from(("busybox", "library", "app", "a.b", "a__b", "a--b", "A",
                              "é", "x" * 200, "", "-a", "a-")), min_size=1, max_size=3),
    st.sampled_from(("", ":latest", ":1.2", ":é", ":٣", ":" + "t" * 129, ":-x", ":", ":ǅ")),
    st.sampled_from(("", "@sha256:" + "a" * 64, "@sha256:" + "A" * 64, "@md5:00", "@")),
) | st.text(max_size=40)


@given(reference_texts)
@example("busybox:é")  # a Unicode tag was accepted: Docker's tags are ASCII
@example("docker.io/a.b/busybox")  # familiar() gave "a.b/busybox:latest", another registry
def test_a_reference_is_refused_with_a_shim_error_or_normalised_for_good(text: str) -> None:
    try:
        reference = parse_reference(text)
    except ShimError as e:
        refused_cleanly(e)
        return
    assert str(reference).isascii(), reference
    assert parse_reference(str(reference)) == reference
    assert parse_reference(reference.familiar()) == reference
