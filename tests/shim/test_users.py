"""`-u` resolves like Docker's, from the image's own passwd and group files."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.runtime.users import Identity, resolve_user


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "app:x:1000:1001:app:/home/app:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nstaff:x:50:app,other\napp:x:1001:\n")
    return tmp_path


def test_an_empty_user_is_root(root: Path) -> None:
    assert resolve_user(root, "") == Identity(0, 0, (0,), "/root")


def test_a_name_gets_its_ids_and_supplementary_groups(root: Path) -> None:
    assert resolve_user(root, "app") == Identity(1000, 1001, (1001, 50), "/home/app")


def test_an_unknown_numeric_uid_runs_with_gid_0(root: Path) -> None:
    assert resolve_user(root, "4242") == Identity(4242, 0, (0,), "/")


def test_a_group_may_be_named_or_numbered(root: Path) -> None:
    assert resolve_user(root, "app:staff").gid == 50
    assert resolve_user(root, "1000:7").gid == 7


def test_unknown_names_are_refused_clearly(root: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="unable to find user ghost"):
        resolve_user(root, "ghost")
    with pytest.raises(InvalidArgumentError, match="unable to find group ghosts"):
        resolve_user(root, "app:ghosts")


def test_a_symlinked_passwd_cannot_point_at_the_host(root: Path, tmp_path: Path) -> None:
    (root / "etc/passwd").unlink()
    (root / "etc/passwd").symlink_to("/etc/passwd")  # the host's, if followed naively
    with pytest.raises(InvalidArgumentError):
        resolve_user(root, "daemon")  # exists on the host, not in the image
