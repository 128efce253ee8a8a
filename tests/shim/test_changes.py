"""`docker diff` semantics over an overlay upper dir: built by hand here, then for real."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard_shim.snapshots.changes import OPAQUE_XATTR, Change, changes

pytestmark = pytest.mark.root  # whiteouts are device nodes; opaque marks trusted xattrs


def _tree(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        target = root / path.lstrip("/")
        if path.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    return root


def _copy_dir_times(upper: Path, lower: Path, *paths: str) -> None:
    """As overlayfs copies a directory up on the way to a deeper change: same mode and
    mtime as below."""
    for path in paths:
        below = (lower / path.lstrip("/")).stat()
        os.chmod(upper / path.lstrip("/"), below.st_mode & 0o7777)
        os.utime(upper / path.lstrip("/"), ns=(below.st_atime_ns, below.st_mtime_ns))


def _as_lines(found: list[Change]) -> list[str]:
    return [str(c) for c in found]


@pytest.fixture
def lower(tmp_path: Path) -> Path:
    return _tree(tmp_path / "lower", {"/etc/passwd": "root", "/etc/group": "root",
                                      "/usr/lib/libc": "c", "/var/": "", "/opt/app/": ""})


def test_added_changed_and_deleted_entries_with_their_parents(tmp_path: Path,
                                                               lower: Path) -> None:
    upper = _tree(tmp_path / "upper", {"/etc/passwd": "root\nme", "/new.txt": "n",
                                       "/usr/lib/libnew": "x", "/var/": ""})
    os.mknod(upper / "etc" / "group", 0o020000, os.makedev(0, 0))  # a whiteout
    _copy_dir_times(upper, lower, "/usr", "/usr/lib", "/var")
    os.utime(upper / "etc", ns=(0, 0))  # the deletion changed /etc
    assert _as_lines(changes(upper, [lower])) == [
        "C /etc", "D /etc/group", "C /etc/passwd", "A /new.txt", "C /usr/lib",
        "A /usr/lib/libnew"]


def test_a_directory_only_copied_up_for_a_deeper_change_is_not_listed(
        tmp_path: Path, lower: Path) -> None:
    upper = _tree(tmp_path / "upper", {"/usr/lib/libc": "c2"})
    _copy_dir_times(upper, lower, "/usr", "/usr/lib")
    assert _as_lines(changes(upper, [lower])) == ["C /usr/lib/libc"]


def test_an_opaque_directory_that_existed_below_is_deleted_and_its_content_added(
        tmp_path: Path, lower: Path) -> None:
    upper = _tree(tmp_path / "upper", {"/opt/app/fresh": "f", "/opt/": ""})
    _copy_dir_times(upper, lower, "/opt")
    os.setxattr(upper / "opt" / "app", OPAQUE_XATTR, b"y")
    assert _as_lines(changes(upper, [lower])) == ["C /opt", "D /opt/app", "A /opt/app/fresh"]


def test_the_nearest_layer_that_has_a_path_counts_and_links_are_not_followed(
        tmp_path: Path, lower: Path) -> None:
    middle = _tree(tmp_path / "middle", {"/srv/data": "d"})
    upper = _tree(tmp_path / "upper", {"/srv/data": "d2"})
    _copy_dir_times(upper, middle, "/srv")
    (upper / "link").symlink_to("/etc")  # would lead to the host's /etc if followed
    assert _as_lines(changes(upper, [middle, lower])) == ["A /link", "C /srv/data"]
