"""The volume store: records, local data directories, host path rules, crash safety."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from dockyard_shim.volumes import HostPaths, Kind, VolumeRecord, VolumeStore, check_subpath


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VolumeStore]:
    opened = VolumeStore(tmp_path / "volumes", host_paths=HostPaths(
        allowed=(str(tmp_path / "srv"),), protected=(str(tmp_path / "volumes"),)))
    yield opened
    opened.close()


def test_a_local_volume_gets_a_data_directory_and_keeps_its_data(store: VolumeStore) -> None:
    record = store.create(VolumeRecord(name="db", labels={"tier": "data"}))
    data = store.source(record)
    assert data == store.root / "db" / "_data"
    assert data.is_dir()
    (data / "row").write_text("1")
    assert store.get("db").labels == {"tier": "data"}
    assert store.usage(record) == 4096  # one block
    assert [r.name for r in store.all()] == ["db"]


def test_creating_an_existing_volume_again_returns_it_unless_its_settings_differ(
        store: VolumeStore) -> None:
    first = store.create(VolumeRecord(name="db"))
    assert store.create(VolumeRecord(name="db")) == first
    with pytest.raises(AlreadyExistsError, match="other settings"):
        store.create(VolumeRecord(name="db", labels={"x": "y"}))


@pytest.mark.parametrize("name", ["", "-x", "a/b", "..", "x" * 129])
def test_a_bad_name_is_refused_with_the_rule(store: VolumeStore, name: str) -> None:
    with pytest.raises(InvalidArgumentError, match="letters, digits"):
        store.create(VolumeRecord(name=name))
    assert not list(store.root.glob("*/_data"))


def test_a_volume_in_use_cannot_be_removed(store: VolumeStore) -> None:
    store.create(VolumeRecord(name="db"))
    (store.source(store.get("db")) / "keep").write_text("me")
    with pytest.raises(FailedPreconditionError, match="in use by a container"):
        store.remove("db", in_use={"db"})
    assert (store.source(store.get("db")) / "keep").read_text() == "me"
    store.remove("db", in_use=set())
    with pytest.raises(NotFoundError):
        store.get("db")
    assert not (store.root / "db").exists()


def test_prune_removes_unused_anonymous_volumes_and_with_all_every_unused_one(
        store: VolumeStore) -> None:
    anonymous = store.create_anonymous()
    used = store.create_anonymous()
    store.create(VolumeRecord(name="named"))
    assert store.prune(in_use={used.name}) == [anonymous.name]
    assert store.prune(in_use={used.name}, all_volumes=True) == ["named"]
    assert [r.name for r in store.all()] == [used.name]


def test_host_paths_only_under_allowed_roots_and_never_the_dangerous_ones(
        store: VolumeStore, tmp_path: Path) -> None:
    (tmp_path / "srv" / "data").mkdir(parents=True)
    record = store.create(VolumeRecord(name="h", kind=Kind.HOST_PATH,
                                       host_path=str(tmp_path / "srv" / "data/")))
    assert store.source(record) == tmp_path / "srv" / "data"
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(InvalidArgumentError, match="not under this node's allowed roots"):
        store.create(VolumeRecord(name="o", kind=Kind.HOST_PATH,
                                  host_path=str(tmp_path / "elsewhere")))
    with pytest.raises(InvalidArgumentError, match="exposes the node's own state"):
        store.create(VolumeRecord(name="s", kind=Kind.HOST_PATH, host_path=str(tmp_path)))
    with pytest.raises(InvalidArgumentError, match="not a directory"):
        store.create(VolumeRecord(name="m", kind=Kind.HOST_PATH,
                                  host_path=str(tmp_path / "srv" / "missing")))


@pytest.mark.parametrize("path", ["/", "/etc", "/proc", "/proc/1", "/sys/fs", "/dev",
                                  "/dev/sda", "/var/lib/dockyard", "/var/lib/dockyard/x",
                                  "/var/lib", "/run/dockyard/dockyard.sock", "/run",
                                  "relative", "/srv/../etc"])
def test_dangerous_host_paths_are_refused_whatever_the_allowlist(path: str) -> None:
    paths = HostPaths(allowed=("/",), protected=("/var/lib/dockyard",
                                                 "/run/dockyard/dockyard.sock"))
    with pytest.raises(InvalidArgumentError):
        paths.check(path)


def test_ordinary_host_paths_pass_the_default_allowlist() -> None:
    paths = HostPaths(protected=("/var/lib/dockyard",))
    assert paths.check("/etc/ssl/certs") == "/etc/ssl/certs"
    assert paths.check("/srv/data/") == "/srv/data"
    assert paths.check("/var/lib/other") == "/var/lib/other"


def test_kind_settings_must_match_the_kind(store: VolumeStore) -> None:
    with pytest.raises(InvalidArgumentError, match="needs a size limit"):
        store.create(VolumeRecord(name="t", kind=Kind.TMPFS))
    with pytest.raises(InvalidArgumentError, match="belong to hostPath"):
        store.create(VolumeRecord(name="l", host_path="/srv"))
    with pytest.raises(InvalidArgumentError, match="names its storage container"):
        store.create(VolumeRecord(name="p", kind=Kind.PROVIDER))


def test_a_directory_left_without_a_record_is_collected_at_open(tmp_path: Path) -> None:
    """A crash between the record's deletion and the directory's rename."""
    root = tmp_path / "volumes"
    store = VolumeStore(root)
    store.create(VolumeRecord(name="kept"))
    store.close()
    (root / "orphan" / "_data").mkdir(parents=True)
    (root / "trash-old-1234" / "_data").mkdir(parents=True)
    reopened = VolumeStore(root)
    try:
        assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["kept"]
    finally:
        reopened.close()


def test_a_record_whose_directory_is_missing_gets_an_empty_one(store: VolumeStore) -> None:
    """A crash between the record's commit and the directory's creation."""
    record = store.create(VolumeRecord(name="db"))
    (store.root / "db" / "_data").rmdir()
    assert store.source(record).is_dir()


@pytest.mark.parametrize("subpath", ["/abs", "../up", "a/../../b"])
def test_a_subpath_stays_inside_its_volume(subpath: str) -> None:
    with pytest.raises(InvalidArgumentError, match="relative to the volume's root"):
        check_subpath(subpath)
