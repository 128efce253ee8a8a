"""Broken, truncated, padded, bombed and oversized streams are refused, naming what is wrong.

The stream is checked as strictly as the names: a layer is applied only if it is one whole
tar stream (end marker included, nothing but zeros after it), in a format we read, within
the limits. A refusal may leave the root partly written (the caller removes the snapshot),
but a refused limit is checked before the data it guards is written.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import tarfile
import time
from pathlib import Path

import pytest

from dockyard_shim.archive import ApplyStats, Limits, apply_layer
from dockyard_shim.errors import InvalidArgumentError
from tests.shim.layerfactory import (
    END,
    Dir,
    File,
    Opaque,
    gzip_of,
    layer,
    pax_block,
    pax_record,
    tar_of,
    ustar_block,
    zeros_gzip,
)

pytestmark = pytest.mark.root

MiB = 1 << 20
GOOD = tar_of(Dir("etc"), File("etc/hosts", b"x" * 3000), File("etc/motd", b"hello"))


def apply(tmp_path: Path, blob: bytes, **limits: int | None) -> ApplyStats:
    root = tmp_path / "upper"
    root.mkdir(parents=True, exist_ok=True)
    return apply_layer(io.BytesIO(blob), root, limits=Limits(**limits))  # type: ignore[arg-type]


def written(tmp_path: Path) -> int:
    return sum(p.stat().st_size for p in (tmp_path / "upper").rglob("*") if p.is_file())


BROKEN: dict[str, tuple[bytes, str]] = {
    "empty blob": (b"", "empty"),
    "garbage": (bytes(range(256)) * 8, "bad checksum"),
    "text": (b"this is not a layer\n" * 100, "bad checksum"),
    "cut in a file's data": (GOOD[:1536 + 1000], "truncated"),
    "cut in a header": (GOOD[:1536 + 100], "truncated"),
    "cut at a header boundary, no end marker": (tar_of(File("a", b"x"))[:1024], "end-of-archive"),
    "non-zero data after the end marker": (GOOD + b"\x01" + bytes(511), "non-zero data"),
    "a second archive after the first": (GOOD + tar_of(File("hidden", b"x")), "non-zero data"),
    "too much padding after the end marker": (GOOD + bytes(2 * MiB), "padding"),
    "truncated gzip": (gzip_of(GOOD)[:-20], "truncated"),
    "corrupt gzip": (gzip_of(GOOD)[:40] + b"\xff" * 40 + gzip_of(GOOD)[80:], "gzip"),
    "garbage after the gzip stream": (gzip_of(GOOD) + b"garbage!", "not gzip"),
    "zstd": (b"\x28\xb5\x2f\xfd" + bytes(100), "zstd layers are not supported yet"),
    "xz": (b"\xfd7zXZ\x00" + bytes(100), "xz-compressed layers are not supported"),
    "bzip2": (bz2.compress(GOOD), "bzip2-compressed layers are not supported"),
    "empty bzip2": (bz2.compress(b""), "bzip2-compressed layers"),
    "xz for real": (lzma.compress(GOOD), "xz-compressed layers"),
    "unknown format magic": (ustar_block("a", magic=b"wtfbbq00") + END, "unknown tar header"),
    "non-octal size": (ustar_block("a", size_field=b"12345678901z") + END, "not an octal"),
    "negative base-256 size": (ustar_block("a", size_field=b"\xff" * 12) + END, "negative"),
    "data on a symlink": (ustar_block("s", typeflag=b"2", size=512, linkname="t")
                          + bytes(512) + END, "carries none"),
    "unsupported type": (ustar_block("v", typeflag=b"V") + END, "unsupported type"),
    "GNU sparse file": (ustar_block("s", typeflag=b"S", size=0) + END, "sparse"),
    "PAX sparse file": (pax_block({b"GNU.sparse.major": b"1", b"GNU.sparse.minor": b"0",
                                   b"GNU.sparse.realsize": str(1 << 40).encode()})
                        + ustar_block("s") + END, "sparse"),
    "PAX record with a wrong length": (pax_block(b"99 path=a\n") + ustar_block("a") + END,
                                       "length"),
    "PAX record without a length": (pax_block(b"path=a\n") + ustar_block("a") + END,
                                    "length"),
    "PAX number that is not a number": (pax_block({b"uid": b"0x10"}) + ustar_block("a") + END,
                                        "not a decimal"),
    "extended header with no entry after it": (pax_block({b"path": b"a"}) + END,
                                               "not followed by an entry"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_stream_is_refused_with_a_clear_message(tmp_path: Path, case: str) -> None:
    blob, message = BROKEN[case]
    with pytest.raises(InvalidArgumentError, match=message):
        apply(tmp_path, blob)


def test_zero_padding_after_the_end_marker_is_accepted_and_hashed(tmp_path: Path) -> None:
    padded = GOOD + bytes(64 * 1024)
    stats = apply(tmp_path, gzip_of(padded))

    assert stats.diff_id == "sha256:" + hashlib.sha256(padded).hexdigest()


def test_a_single_zero_block_ends_the_archive(tmp_path: Path) -> None:
    blob = ustar_block("a", size=1) + b"x" + bytes(511) + bytes(512)
    stats = apply(tmp_path, blob)

    assert (tmp_path / "upper/a").read_bytes() == b"x"
    assert stats.entries == 1


def test_a_gzip_bomb_is_refused_at_the_header_before_its_data_is_inflated(
        tmp_path: Path) -> None:
    size = 64 * MiB
    bomb = zeros_gzip(ustar_block("zero", size=size), size)
    assert len(bomb) < size // 500
    started = time.monotonic()
    with pytest.raises(InvalidArgumentError, match=r"max_bytes \(1048576 bytes\)"):
        apply(tmp_path, bomb, max_bytes=MiB)

    assert time.monotonic() - started < 2
    assert written(tmp_path) == 0


def test_a_compression_ratio_limit_stops_a_bomb_early_when_asked(tmp_path: Path) -> None:
    size = 64 * MiB
    bomb = zeros_gzip(ustar_block("zero", size=size), size)
    with pytest.raises(InvalidArgumentError, match=r"max_compressed_ratio \(50:1\)"):
        apply(tmp_path, bomb, max_compressed_ratio=50)

    assert written(tmp_path) < 4 * MiB


def test_zeros_hidden_after_the_end_marker_are_not_a_way_around_the_limits(
        tmp_path: Path) -> None:
    bomb = zeros_gzip(tar_of(File("a", b"x")), 16 * MiB, trailer=b"")
    with pytest.raises(InvalidArgumentError, match="padding"):
        apply(tmp_path, bomb)


def test_a_huge_declared_size_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    blob = pax_block({b"size": str(1 << 40).encode()}) + ustar_block("huge") + END
    with pytest.raises(InvalidArgumentError, match="max_bytes"):
        apply(tmp_path, blob)
    assert not (tmp_path / "upper/huge").exists()


def test_whiteout_data_counts_towards_max_bytes(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="max_bytes"):
        apply(tmp_path, layer(File(".wh.x", b"z" * 2048)), max_bytes=1024)


def test_too_many_entries_are_refused_naming_the_limit(tmp_path: Path) -> None:
    blob = layer(*(File(f"f{i}") for i in range(11)))
    with pytest.raises(InvalidArgumentError, match=r"max_entries \(10\)"):
        apply(tmp_path, blob, max_entries=10)


def test_implicit_parents_count_towards_max_inodes(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"max_inodes \(3\)"):
        apply(tmp_path, layer(File("a/b/c/d")), max_inodes=3)


def test_a_layer_at_exactly_its_limits_applies(tmp_path: Path) -> None:
    stats = apply(tmp_path, layer(File("a/b/c/d", b"1234")), max_inodes=4, max_entries=1,
                  max_bytes=4)

    assert (stats.inodes, stats.entries, stats.bytes_written) == (4, 1, 4)


def test_an_oversized_extended_header_is_refused_without_reading_it(tmp_path: Path) -> None:
    blob = pax_block({b"comment": b"c" * (2 * MiB)}) + ustar_block("a") + END
    with pytest.raises(InvalidArgumentError, match="max_header_bytes"):
        apply(tmp_path, blob)


def test_a_chain_of_extended_headers_shares_one_budget(tmp_path: Path) -> None:
    chain = pax_block({b"comment": b"c" * 1000}) * 3000  # each small, together 4.5 MiB
    with pytest.raises(InvalidArgumentError, match="max_header_bytes"):
        apply(tmp_path, chain + ustar_block("a") + END)


def test_pax_headers_built_to_stall_a_regex_parser_are_read_in_linear_time(
        tmp_path: Path) -> None:
    # CVE-2024-6232: tarfile's PAX regexes backtrack quadratically on long digit runs
    stall = pax_record(b"comment", b"1" * (512 * 1024))
    started = time.monotonic()
    apply(tmp_path, pax_block(stall) + ustar_block("a") + END)

    assert time.monotonic() - started < 2
    assert (tmp_path / "upper/a").exists()


def test_pax_records_override_the_ustar_fields(tmp_path: Path) -> None:
    records = {b"path": "ünïcode/ñame".encode(), b"uid": b"4000000", b"gid": b"4000001",
               b"mtime": b"1234567890.25"}
    stats = apply(tmp_path, pax_block(records) + ustar_block("short") + END)

    st = (tmp_path / "upper/ünïcode/ñame").stat()
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (4000000, 4000001, 1234567890_250000000)
    assert stats.entries == 1


def test_global_pax_headers_are_checked_but_change_nothing_as_in_docker(tmp_path: Path) -> None:
    blob = (pax_block({b"uid": b"77", b"path": b"elsewhere"}, typeflag=b"g")
            + ustar_block("a") + ustar_block("b") + END)
    stats = apply(tmp_path, blob)

    assert (tmp_path / "upper/a").stat().st_uid == 0
    assert (tmp_path / "upper/b").stat().st_uid == 0
    assert stats.entries == 2
    with pytest.raises(InvalidArgumentError, match="length"):
        apply(tmp_path / "bad", pax_block(b"7 a=b\n", typeflag=b"g") + ustar_block("a") + END)


def test_a_member_whose_name_starts_like_bzip2_is_still_a_tar(tmp_path: Path) -> None:
    apply(tmp_path, layer(File("BZh9", b"not bzip2")))

    assert (tmp_path / "upper/BZh9").read_bytes() == b"not bzip2"


def test_a_header_checksummed_with_signed_bytes_by_an_old_tar_is_read(tmp_path: Path) -> None:
    block = bytearray(ustar_block("\u00e9t\u00e9".encode()))
    block[148:156] = b" " * 8
    signed = sum(b - 256 if b >= 0x80 else b for b in block)
    block[148:156] = f"{signed:06o}".encode() + b"\0 "
    apply(tmp_path, bytes(block) + END)

    assert (tmp_path / "upper/été").exists()


def test_gnu_base_256_numbers_are_read(tmp_path: Path) -> None:
    info = tarfile.TarInfo("big-owner")
    info.uid = 8**7 + 5  # past what 7 octal digits hold: GNU writes it base-256
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(info)
    apply(tmp_path, out.getvalue())

    assert (tmp_path / "upper/big-owner").stat().st_uid == 8**7 + 5


def test_an_opaque_directory_replaced_by_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="opaque"):
        apply(tmp_path, layer(Opaque("d"), File("d", b"x")))


@pytest.mark.parametrize("field", ["max_bytes", "max_entries", "max_inodes",
                                   "max_header_bytes", "max_compressed_ratio"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(InvalidArgumentError, match=field):
        Limits(**{field: 0})


def test_the_gzip_of_a_good_layer_round_trips(tmp_path: Path) -> None:
    stats = apply(tmp_path, gzip.compress(GOOD))

    assert (tmp_path / "upper/etc/hosts").read_bytes() == b"x" * 3000
    assert stats.bytes_written == 3005
