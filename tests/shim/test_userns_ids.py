"""Subordinate ids for `--userns auto`: parsing subuid(5) files and handing out blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard_shim.errors import FailedPreconditionError, InvalidArgumentError
from dockyard_shim.runtime.userns import (
    BLOCK,
    IdMap,
    SubordinateIds,
    layer_dirs,
    parse_ranges,
    validate_mode,
)


def _ids(tmp_path: Path, subuid: str, subgid: str | None = None) -> SubordinateIds:
    (tmp_path / "subuid").write_text(subuid)
    (tmp_path / "subgid").write_text(subuid if subgid is None else subgid)
    return SubordinateIds(tmp_path / "subuid", tmp_path / "subgid")


def test_only_the_owners_well_formed_ranges_count() -> None:
    text = ("alice:100000:65536\n"
            "dockyard:200000:131072\n"
            "# a comment\n"
            "dockyard:300000\n"          # two fields
            "dockyard:x:5\n"             # not a number
            "dockyard:0:65536\n"         # would hand out the node's root
            "dockyard:400000:0\n"        # empty
            "  dockyard:500000:65536  \n")
    assert parse_ranges(text, "dockyard") == [(200000, 131072), (500000, 65536)]


def test_blocks_are_handed_out_lowest_first_and_never_overlap(tmp_path: Path) -> None:
    ids = _ids(tmp_path, f"dockyard:100000:{3 * BLOCK}\n")
    first = ids.allocate([])
    second = ids.allocate([first])
    third = ids.allocate([first, second])
    assert [m.uid for m in (first, second, third)] == [100000, 100000 + BLOCK,
                                                         100000 + 2 * BLOCK]
    assert ids.allocate([first, third]) == second  # a freed block is reused
    with pytest.raises(FailedPreconditionError,
                       match=r"no free block of 65536 ids .* \(3 containers"):
        ids.allocate([first, second, third])


def test_uids_and_gids_come_from_their_own_files(tmp_path: Path) -> None:
    ids = _ids(tmp_path, "dockyard:100000:65536\n", "dockyard:700000:65536\n")
    assert ids.allocate([]) == IdMap(uid=100000, gid=700000)


def test_a_block_never_straddles_two_ranges_and_skips_held_ids(tmp_path: Path) -> None:
    ids = _ids(tmp_path, "dockyard:100000:40000\ndockyard:200000:40000\n"
                         "dockyard:300000:200000\n")
    held = IdMap(300000, 300000, 1000)  # e.g. a container made with another range
    assert ids.allocate([held]) == IdMap(301000, 301000)


def test_a_node_without_subordinate_ids_says_how_to_add_them(tmp_path: Path) -> None:
    ids = SubordinateIds(tmp_path / "missing", tmp_path / "missing")
    with pytest.raises(FailedPreconditionError,
                       match=r"gives user dockyard no subordinate ids: add a line "
                             r"`dockyard:100000:6553600` to /etc/subuid"):
        ids.allocate([])


def test_an_id_map_survives_its_json() -> None:
    id_map = IdMap(231072, 231072)
    assert IdMap.from_json(id_map.to_json()) == id_map
    assert (id_map.host_uid(0), id_map.host_gid(5)) == (231072, 231077)


def test_modes_other_than_host_and_auto_are_refused_with_the_choices() -> None:
    validate_mode("auto")
    validate_mode("host")
    with pytest.raises(InvalidArgumentError, match=r"say `auto`.*or `host`"):
        validate_mode("keep-id")


def test_the_dirs_to_map_are_each_lower_and_the_upper_and_works_parent() -> None:
    options = ("lowerdir=/s/snapshots/3/fs:/s/snapshots/2/fs", "upperdir=/s/snapshots/7/fs",
               "workdir=/s/snapshots/7/work")
    assert layer_dirs(options) == ["/s/snapshots/3/fs", "/s/snapshots/2/fs", "/s/snapshots/7"]
    assert layer_dirs(("ro", "lowerdir=/a:/b")) == ["/a", "/b"]
    with pytest.raises(InvalidArgumentError, match="not siblings"):
        layer_dirs(("lowerdir=/a", "upperdir=/u/fs", "workdir=/w/work"))
