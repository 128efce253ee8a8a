"""A coverage-guided fuzz target for the archive path resolver (`dockyard_shim.archive.paths`).

Run it from the repository root, as root (a whiteout is a character device):

    .venv/bin/python tests/fuzz/atheris_tar_paths.py -runs=100000

Any libFuzzer flag works (`-max_total_time=600`, `-jobs=4`, a corpus directory after the
flags); a crash is saved as `crash-<sha1>` in the current directory, or under
`-artifact_prefix=DIR/`, and replayed with `… atheris_tar_paths.py crash-<sha1>`.

Each input is a flag byte (create missing directories or not; openat2 or the component
walk; raw or structured) and then an archive name: raw bytes, the way the tar reader hands
them on, or (structured) one byte per component, chosen among the traps' names, `..`, `.`,
empty, over-long and whiteout names, so that the fuzzer reaches deep paths quickly.
The name is split by `split_name` and its parent resolved by `open_dir` under a root that
holds the traps a layer plants: symlinks up, to `/`, out of the root, to themselves, a file
and a fifo where a directory is expected, and a whiteout. The invariants:
- `split_name` returns components without `..`, `.`, `/`, NUL or empty ones, or raises
  InvalidArgumentError;
- `open_dir` returns a directory that is exactly root/components, inside the root, never
  reached through a symlink; or it raises InvalidArgumentError, FileNotFoundError (the
  directory is missing and `create` is off) or an OSError that `apply` reports as a
  malformed layer (a component longer than NAME_MAX);
- nothing outside the root changes.

The script runs the fuzzer in a child process and removes its sandbox when the child ends
(libFuzzer leaves the process with exit(), which skips Python's cleanup).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from dockyard_shim.archive import paths
    from dockyard_shim.errors import InvalidArgumentError

SANDBOX_ENV = "DOCKYARD_FUZZ_SANDBOX"
# What `apply` turns into "malformed layer" (apply._INPUT_ERRNOS); open_dir may pass these on.
INPUT_ERRNOS = {errno.ENAMETOOLONG, errno.ENOENT, errno.ENOTDIR, errno.ELOOP}
WORDS = ("d", "e", "f", "p", "w", "up", "abs", "out", "self", "back", "loop", "canary",
         "new", "..", ".", "", "/", ".wh.x", ".wh..wh..opq", "x" * 255, "y" * 256, "\udcff")
TRAPS = {  # name under the root -> symlink target, or a kind
    "d": "dir", "d/e": "dir", "f": "file", "p": "fifo", "w": "whiteout",
    "up": "..", "abs": "/", "out": "../outside", "self": ".", "d/back": "../..",
    "d/loop": "loop", "d/canary": "../../outside/canary",
}


def build(top: str) -> None:
    """The root with its traps, and the outside with its canary, under `top`."""
    root, outside = os.path.join(top, "root"), os.path.join(top, "outside")
    os.makedirs(outside, exist_ok=True)
    with open(os.path.join(outside, "canary"), "wb") as f:
        f.write(b"untouched")
    os.mkdir(root)
    for name, what in TRAPS.items():
        path = os.path.join(root, name)
        if what == "dir":
            os.mkdir(path)
        elif what == "file":
            open(path, "wb").close()
        elif what == "fifo":
            os.mkfifo(path)
        elif what == "whiteout":
            if os.geteuid() == 0:
                os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
        else:
            os.symlink(what, path)


def tree(top: str) -> list[tuple[str, int, int]]:
    """(path, mode, rdev) of everything under `top`, links not followed."""
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in sorted([*dirnames, *filenames]):
            st = os.lstat(os.path.join(dirpath, name))
            found.append((os.path.join(dirpath, name), st.st_mode, st.st_rdev))
    return sorted(found)


class Target:
    def __init__(self, top: str) -> None:
        self.top = top
        self.root = os.path.join(top, "root")
        self.outside = os.path.join(top, "outside")
        shutil.rmtree(self.root, ignore_errors=True)
        build(top)
        self.pristine = tree(top)
        self.outside_tree = tree(self.outside)
        self.root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.kernel = paths._openat2._kernel

    def __call__(self, data: bytes) -> None:
        if not data:
            return
        create, walk, structured = bool(data[0] & 1), bool(data[0] & 2), bool(data[0] & 4)
        if structured:
            name = "/".join(WORDS[b % len(WORDS)] for b in data[1:64])
        else:
            name = os.fsdecode(data[1:])
        paths._openat2._kernel = None if walk else self.kernel
        try:
            self.check(name, create=create)
        finally:
            assert tree(self.outside) == self.outside_tree, "the outside changed"
            if create and tree(self.top) != self.pristine:
                os.close(self.root_fd)
                self.__init__(self.top)  # type: ignore[misc]

    def check(self, name: str, *, create: bool) -> None:
        try:
            parts = paths.split_name(name)
        except InvalidArgumentError:
            return
        for part in parts:
            assert part not in ("", ".", ".."), parts
            assert "/" not in part, parts
            assert "\0" not in part, parts
        assert len(os.fsencode("/".join(parts))) < paths.PATH_MAX
        try:
            fd = paths.open_dir(self.root_fd, parts, create=create)
        except Exception as e:  # judged, and raised again when not allowed
            if not allowed(e, create=create):
                raise
            return
        try:
            reached = os.fsencode(os.readlink(f"/proc/self/fd/{fd}"))
            expected = os.fsencode(os.path.join(self.root, *parts))
            assert reached == expected, (reached, expected)
            assert stat.S_ISDIR(os.fstat(fd).st_mode)
        finally:
            os.close(fd)


def allowed(error: Exception, *, create: bool) -> bool:
    """Whether `open_dir` may fail so: the module's error with a message, a missing
    directory when it was not to create one, or what `apply` reports as malformed."""
    if isinstance(error, InvalidArgumentError):
        return bool(str(error))
    if isinstance(error, FileNotFoundError):
        return not create
    return isinstance(error, OSError) and error.errno in INPUT_ERRNOS


def main() -> int:
    top = os.environ.get(SANDBOX_ENV)
    if top is None:  # the parent: a sandbox for the child, removed however it ends
        top = tempfile.mkdtemp(prefix="dockyard-atheris-")
        try:
            env = {**os.environ, SANDBOX_ENV: top}
            return subprocess.run([sys.executable, __file__, *sys.argv[1:]], env=env,
                                  check=False).returncode
        finally:
            shutil.rmtree(top, ignore_errors=True)
    atheris.Setup(sys.argv, Target(top))
    atheris.Fuzz()
    return 0  # not reached: libFuzzer exits


if __name__ == "__main__":
    sys.exit(main())
