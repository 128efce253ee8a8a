"""Volume export and import: the same tree comes back, verified, or the volume stays unusable."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from blake3 import blake3

from dockyard_shim.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError
from dockyard_shim.volumes import VolumeRecord, VolumeStore
from dockyard_shim.volumes.importing import import_volume, prepare_import
from dockyard_shim.volumes.transfer import TransferStats, export_volume

pytestmark = pytest.mark.root  # owners are kept: chown needs root


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VolumeStore]:
    with VolumeStore(tmp_path / "volumes") as opened:
        yield opened


def _tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything the copy must keep, by relative path."""
    found: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            info = path.lstat()
            what: object = os.readlink(path) if path.is_symlink() else (
                path.read_bytes() if path.is_file() else "dir")
            first = inodes.setdefault(info.st_ino, str(path.relative_to(root)))
            found[str(path.relative_to(root))] = (what, info.st_mode, info.st_uid, info.st_gid,
                                                  first, int(info.st_mtime))
    return found


def _fill(data: Path) -> None:
    (data / "db" / "shared").mkdir(parents=True)
    (data / "db" / "shared").chmod(0o2775)
    (data / "db" / "rows").write_bytes(os.urandom(3 << 20))
    (data / "secret").write_text("mine")
    (data / "secret").chmod(0o600)
    os.chown(data / "secret", 1000, 1000)
    (data / "current").symlink_to("/data/db")  # absolute: the container's own path
    os.link(data / "db" / "rows", data / "rows-again")
    os.utime(data / "db" / "rows", (1_700_000_000, 1_700_000_000))
    for old in ("db/shared", "db", "current"):  # times an import must restore, not now's
        os.utime(data / old, (1_600_000_000, 1_600_000_000), follow_symlinks=False)


def test_export_then_import_gives_the_same_tree(store: VolumeStore) -> None:
    source = store.source(store.create(VolumeRecord(name="origin")))
    _fill(source)
    archive = io.BytesIO()
    sent = export_volume(source, archive)
    archive.seek(0)
    received = import_volume(store, "copy", archive)
    assert (received.files, received.bytes) == (sent.files, sent.bytes) == (2, (3 << 20) + 4)
    assert received.digest == sent.digest  # a hard link travels as a link, not twice
    copy = store.source(store.get("copy"))
    assert _tree(copy) == _tree(source)
    assert "dockyard.dev/state" not in store.get("copy").labels


def _exported(store: VolumeStore) -> bytes:
    source = store.source(store.create(VolumeRecord(name="origin")))
    _fill(source)
    archive = io.BytesIO()
    export_volume(source, archive)
    return archive.getvalue()


def test_a_damaged_archive_leaves_the_volume_unusable_until_removed(store: VolumeStore) -> None:
    data = bytearray(_exported(store))
    data[data.index(b"mine")] ^= 0xFF  # one byte of one file
    with pytest.raises(InvalidArgumentError, match=r"does not match its manifest \(data/secret"):
        import_volume(store, "copy", io.BytesIO(bytes(data)))
    with pytest.raises(FailedPreconditionError, match="import did not finish"):
        store.source(store.get("copy"))
    store.remove("copy", in_use=())
    import_volume(store, "copy", io.BytesIO(_exported_again(store)))  # and again, whole


def _exported_again(store: VolumeStore) -> bytes:
    archive = io.BytesIO()
    export_volume(store.source(store.get("origin")), archive)
    return archive.getvalue()


def test_an_archive_cut_short_is_refused(store: VolumeStore) -> None:
    data = _exported(store)
    cut = data[:data.index(b"manifest.json") - 512]
    with pytest.raises((InvalidArgumentError, tarfile.ReadError, EOFError)):
        import_volume(store, "copy", io.BytesIO(cut))
    with pytest.raises(FailedPreconditionError):
        store.source(store.get("copy"))


def test_an_existing_volume_is_never_overwritten(store: VolumeStore) -> None:
    data = _exported(store)
    with pytest.raises((AlreadyExistsError, FailedPreconditionError)):
        import_volume(store, "origin", io.BytesIO(data))
    assert (store.source(store.get("origin")) / "secret").read_text() == "mine"


def _hostile(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    out.seek(0)
    return out


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"",
            link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data), link
    return info, data


@pytest.mark.parametrize("members", [
    [_member("data/../../outside", data=b"x")],
    [_member("data", tarfile.DIRTYPE), _member("data/hard", tarfile.LNKTYPE, link="/etc/passwd")],
    [_member("data", tarfile.DIRTYPE), _member("data/link", tarfile.SYMTYPE, link="OUTSIDE"),
     _member("data/link/evil", data=b"x")],
    [_member("data", tarfile.DIRTYPE), _member("data/null", tarfile.CHRTYPE)],
    [_member("elsewhere", data=b"x")],
], ids=["dotdot", "hard-link-out", "write-through-link", "device", "outside-data"])
def test_hostile_archives_write_nothing_outside(store: VolumeStore, tmp_path: Path,
                                                members: list[tuple[tarfile.TarInfo, bytes]]
                                                ) -> None:
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    members = [(info, data) if info.linkname != "OUTSIDE" else
               _member(info.name, info.type, link=str(outside)) for info, data in members]
    with pytest.raises(InvalidArgumentError):
        import_volume(store, "hostile", _hostile(*members))
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "outside").exists()
    with pytest.raises(FailedPreconditionError):
        store.source(store.get("hostile"))


def _interrupted(store: VolumeStore, name: str, archive: bytes, cut: int) -> None:
    """An import of `archive` into `name` whose stream breaks off after `cut` bytes."""
    with pytest.raises((InvalidArgumentError, tarfile.ReadError, EOFError)):
        import_volume(store, name, io.BytesIO(archive[:cut]))


def _resumed(store: VolumeStore, name: str, source: Path) -> tuple[TransferStats, int]:
    """Resume the import of `name` from `source`; its stats and the archive's size."""
    with prepare_import(store, name, resume=True) as job:
        archive = io.BytesIO()
        export_volume(source, archive, have={k: v["blake3"] for k, v in job.have.items()})
        archive.seek(0)
        return job.receive(archive), len(archive.getvalue())


def test_an_interrupted_import_resumes_without_the_files_it_has(store: VolumeStore) -> None:
    source = store.source(store.create(VolumeRecord(name="origin")))
    for i in range(4):
        (source / f"part{i}").write_bytes(os.urandom(1 << 20))
    whole = _exported_again(store)
    _interrupted(store, "copy", whole, int(2.5 * (1 << 20)))  # part0 and part1 arrived
    with prepare_import(store, "copy", resume=True) as job:
        assert sorted(job.have) == ["data/part0", "data/part1"]

    stats, size = _resumed(store, "copy", source)

    assert (stats.files, stats.kept_files, stats.kept_bytes) == (4, 2, 2 << 20)
    assert size < len(whole) / 2 + 65536
    assert _tree(store.source(store.get("copy"))) == _tree(source)
    assert "dockyard.dev/state" not in store.get("copy").labels


def test_a_resumed_import_gets_again_what_changed_or_went_missing(store: VolumeStore) -> None:
    source = store.source(store.create(VolumeRecord(name="origin")))
    for i in range(4):
        (source / f"part{i}").write_bytes(os.urandom(1 << 20))
    _interrupted(store, "copy", _exported_again(store), int(3.5 * (1 << 20)))
    (source / "part0").write_bytes(os.urandom(1 << 20))  # changed on the sender
    (store.root / "copy" / "import" / "data" / "part1").unlink()  # gone on the receiver

    stats, _ = _resumed(store, "copy", source)

    assert (stats.kept_files, stats.kept_bytes) == (1, 1 << 20)  # part2 only
    assert _tree(store.source(store.get("copy"))) == _tree(source)


def test_an_archive_that_claims_a_file_is_here_when_it_is_not_is_refused(
        store: VolumeStore) -> None:
    source = store.source(store.create(VolumeRecord(name="origin")))
    (source / "file").write_text("data")
    archive = io.BytesIO()
    export_volume(source, archive, have={"data/file": blake3(b"data").hexdigest()})
    archive.seek(0)
    with pytest.raises(InvalidArgumentError, match="'data/file' was left out as already here"):
        import_volume(store, "copy", archive)


def test_one_import_at_a_time_per_volume(store: VolumeStore) -> None:
    with prepare_import(store, "copy"), pytest.raises(FailedPreconditionError,
                                                      match="being imported by another pull"):
        prepare_import(store, "copy", resume=True)
    with prepare_import(store, "copy", resume=True) as job:  # free again
        assert job.have == {}


def test_a_resumed_import_clears_nothing_outside_its_staging(store: VolumeStore,
                                                            tmp_path: Path) -> None:
    source = store.source(store.create(VolumeRecord(name="origin")))
    (source / "file").write_text("data")
    whole = _exported_again(store)
    _interrupted(store, "hostile", whole, whole.index(b"manifest.json") - 1)
    canary = tmp_path / "canary"
    canary.write_text("untouched")
    with prepare_import(store, "hostile", resume=True) as job:
        assert job.have
        escape = "data/" + "../" * 4 + "canary"  # staging is volumes/hostile/import
        with pytest.raises(InvalidArgumentError):
            job.receive(_hostile(_member(escape, data=b"x")))
    assert canary.read_text() == "untouched"
