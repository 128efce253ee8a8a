"""On the real kernel, applied layers stack under overlayfs the way the image means them."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dockyard_shim.archive import apply_layer
from dockyard_shim.kernel import MNT_DETACH, MS_RDONLY, LinuxKernel
from tests.shim.layerfactory import Dir, File, Opaque, Symlink, Whiteout, layer

pytestmark = pytest.mark.root

BASE = layer(
    Dir("etc"), File("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"), File("etc/motd", b"hi\n"),
    Dir("var"), Dir("var/cache"), File("var/cache/old-a", b"a"), Dir("var/cache/old-dir"),
    File("var/cache/old-dir/x", b"x"), Dir("opt"), File("opt/keep", b"k"),
    Symlink("opt/link", "keep"), compress="gzip")
TOP = layer(
    Dir("etc"), Whiteout("etc/motd"), Whiteout("opt"), Dir("var"),
    File("var/cache/new", b"n"), Opaque("var/cache"), Dir("var/cache/old-dir"),
    File("var/cache/old-dir/y", b"y"), Dir("opt"), File("opt/fresh", b"f"))


@contextmanager
def mounted(options: str, target: Path, flags: int = 0) -> Iterator[Path]:
    kernel = LinuxKernel()
    target.mkdir()
    kernel.mount("overlay", str(target), "overlay", flags, options)
    try:
        yield target
    finally:
        kernel.umount2(str(target), MNT_DETACH)


def tree(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))


@pytest.mark.parametrize("stacking", ["read-only view", "top as the upper dir"])
def test_whiteouts_and_opaque_directories_work_under_a_real_overlay_mount(
        tmp_path: Path, stacking: str) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    apply_layer(io.BytesIO(BASE), lower)
    apply_layer(io.BytesIO(TOP), upper)
    if stacking == "read-only view":
        options, flags = f"lowerdir={upper}:{lower}", MS_RDONLY
    else:
        (tmp_path / "work").mkdir()
        options, flags = f"lowerdir={lower},upperdir={upper},workdir={tmp_path / 'work'}", 0

    with mounted(options, tmp_path / "merged", flags) as merged:
        assert tree(merged) == [
            "etc", "etc/passwd",  # motd whited out
            "opt", "opt/fresh",  # the whole lower opt whited out, then made anew in TOP
            "var", "var/cache", "var/cache/new",  # opaque: lower children hidden…
            "var/cache/old-dir", "var/cache/old-dir/y",  # …even a directory of the same name
        ]
        assert (merged / "etc/passwd").read_bytes().startswith(b"root:")
