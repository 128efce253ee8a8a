"""The content store keeps only verified blobs, and nothing of a write that failed."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from dockyard_shim.errors import InvalidArgumentError, NotFoundError
from dockyard_shim.images import ContentStore, sha256_of
from dockyard_shim.images.digest import Digest


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "content")


def leftovers(store: ContentStore) -> list[Path]:
    return sorted(p for p in store.root.rglob("*") if p.is_file())


def test_a_verified_blob_is_stored_under_its_digest(store: ContentStore) -> None:
    data = b"hello layers"
    digest, size = store.ingest(io.BytesIO(data), sha256_of(data), len(data))
    assert (digest, size) == (sha256_of(data), len(data))
    assert store.has(digest)
    assert store.path(digest) == store.root / "blobs" / "sha256" / digest.removeprefix("sha256:")
    with store.open(digest) as f:
        assert f.read() == data
    assert store.size(digest) == len(data)
    assert list(store.list()) == [digest]


def test_content_that_does_not_match_its_digest_is_refused_naming_both(
        store: ContentStore) -> None:
    expected = sha256_of(b"what the manifest promised")
    with pytest.raises(InvalidArgumentError) as refused:
        store.ingest(io.BytesIO(b"what arrived"), expected, len(b"what arrived"))
    assert expected in str(refused.value)
    assert sha256_of(b"what arrived") in str(refused.value)
    assert leftovers(store) == []


@pytest.mark.parametrize("declared", [3, 100])
def test_content_of_the_wrong_size_is_refused(store: ContentStore, declared: int) -> None:
    with pytest.raises(InvalidArgumentError, match="bytes"):
        store.ingest(io.BytesIO(b"0123456789"), None, declared)
    assert leftovers(store) == []


def test_a_blob_without_expectations_is_named_by_its_content(store: ContentStore) -> None:
    digest = store.ingest_bytes(b"{}")
    assert digest == sha256_of(b"{}")
    assert store.read(digest, 10) == b"{}"
    with pytest.raises(InvalidArgumentError, match="larger"):
        store.read(digest, 1)


def test_present_blobs_are_not_read_again(store: ContentStore) -> None:
    data = b"shared layer"
    store.ingest_bytes(data)

    class Exploding(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise AssertionError("read a blob that was already present")

    assert store.ingest(Exploding(), sha256_of(data), len(data)) == (sha256_of(data), len(data))


def test_missing_blobs_are_not_found_and_delete_says_so(store: ContentStore) -> None:
    missing = Digest("sha256:" + "0" * 64)
    with pytest.raises(NotFoundError, match=missing):
        store.open(missing)
    assert store.delete(missing) is False
    digest = store.ingest_bytes(b"x")
    assert store.delete(digest) is True
    assert not store.has(digest)


def test_paths_are_only_built_from_valid_digests(store: ContentStore) -> None:
    with pytest.raises(InvalidArgumentError):
        store.path(Digest("sha256:../../../etc/passwd"))


def test_a_crashed_ingest_is_swept(store: ContentStore) -> None:
    (store.root / "ingest" / "blob-crashed").write_bytes(b"partial")
    (store.root / "blobs" / "sha256" / "not-a-digest").write_bytes(b"foreign")
    assert [p.name for p in store.sweep_ingests()] == ["blob-crashed"]
    assert list(store.list()) == []  # a file we did not name is never listed
