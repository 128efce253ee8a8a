"""Properties of layer application over generated archives, hostile and well-formed.

- the tar reader turns any damaged stream into InvalidArgumentError, nothing else;
- applying any layer writes nothing outside its root (every path, type, mode, owner, time
  and content under the sandbox but outside the root stays as it was, canary included),
  fails only with InvalidArgumentError and a message, and does the same thing twice: the
  same outcome, and when it applied, the same tree (a failed application leaves its root
  half-written, for the caller to remove: `apply_layer`'s contract);
- a well-formed layer makes the tree it describes, and `write_layer` of that tree applies
  to the same tree again (the round trip of `docker commit`).

Both path resolvers are exercised: openat2(2) and the component walk (`paths`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tarfile
from collections.abc import Iterator

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from dockyard_shim.archive import ApplyStats, Limits, apply_layer, paths
from dockyard_shim.archive.limits import MiB
from dockyard_shim.archive.streams import TarBytes
from dockyard_shim.archive.tarstream import TarReader
from dockyard_shim.archive.writer import write_layer
from dockyard_shim.errors import InvalidArgumentError
from tests.fuzz.layers import (
    Layer,
    Sandbox,
    WellFormed,
    describe,
    hostile_layers,
    sandbox,
    well_formed_layers,
)
from tests.shim.layerfactory import Dir, File, Hardlink, Symlink, gzip_of, tar_of

LIMITS = Limits(max_bytes=16 * MiB, max_entries=10_000, max_inodes=10_000)
resolvers = st.sampled_from(("openat2", "component walk"))


@contextlib.contextmanager
def resolver(kind: str) -> Iterator[None]:
    """Resolve names with openat2 (when the kernel has it) or with the component walk."""
    saved = paths._openat2._kernel
    if kind == "component walk":
        paths._openat2._kernel = None
    try:
        yield
    finally:
        paths._openat2._kernel = saved


# The tar reader, on its own -----------------------------------------------------------------

@st.composite
def damaged_streams(draw: st.DrawFn) -> bytes:
    """A generated layer, maybe compressed, with bytes overwritten, cut short, or followed
    by garbage."""
    blob = draw(hostile_layers).tar() or tar_of()
    data = bytearray(gzip_of(blob) if draw(st.booleans()) else blob)
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if data:
            data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))):]
    data += draw(st.binary(max_size=600))
    return bytes(data)


def has_a_message(error: Exception) -> None:
    assert str(error), f"{type(error).__name__} without a message"


def read_all(blob: bytes) -> int:
    """Read every header and every byte of data; the number of entries."""
    source = TarBytes(io.BytesIO(blob), LIMITS)
    try:
        reader = TarReader(source, LIMITS)
        while reader.next() is not None:
            while reader.read(1 << 16):
                pass
        return reader.entries
    finally:
        source.close()


@given(damaged_streams() | st.binary(max_size=2048))
def test_the_tar_reader_fails_on_any_damaged_stream_with_invalid_argument_only(
        blob: bytes) -> None:
    try:
        entries = read_all(blob)
    except InvalidArgumentError as e:
        has_a_message(e)
    else:
        assert entries >= 0


# Applying any layer -------------------------------------------------------------------------

def apply_in(box: Sandbox, layer: Layer) -> tuple[str, str] | None:
    """Apply `layer` aimed at `box`; its error (type, message with the sandbox path
    replaced), None when it applied. Fails the test on any other exception."""
    raw = layer.tar(box)
    assert raw is not None
    blob = gzip_of(raw) if layer.gzip else raw
    try:
        stats = apply_layer(io.BytesIO(blob), box.root, limits=LIMITS)
    except InvalidArgumentError as e:
        has_a_message(e)
        return type(e).__name__, str(e).replace(str(box.top), "@TOP@")
    check_stats(stats, raw, gzipped=layer.gzip)
    return None


def check_stats(stats: ApplyStats, tar: bytes, *, gzipped: bool) -> None:
    """The stats of a layer that applied: its compression, and its diff_id, which is the
    digest of the uncompressed stream whatever the blob's compression."""
    assert stats.compression == ("gzip" if gzipped else "none")
    assert stats.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()


@pytest.mark.root
@given(hostile_layers, resolvers)
@example(Layer((File("../a", b"pwned"),)), "component walk")  # the classic breakouts
@example(Layer((Symlink("a", "@OUT@"), File("a/canary", b"pwned"))), "component walk")
@example(Layer((Hardlink("h", "@CANARY@"), File("h", b"pwned"))), "openat2")
@example(Layer((Dir("a"), Symlink("a", "../outside"), Hardlink("a/x", "a"))), "openat2")
@example(Layer((Dir("\udcff"), File("\udcff/x", b"latin-1"))), "openat2")
@example(Layer((File("a", xattrs={"security.capability": b"\0"}),)), "openat2")
def test_any_layer_stays_inside_its_root_fails_cleanly_and_applies_the_same_twice(
        layer: Layer, kind: str) -> None:
    with resolver(kind), sandbox() as first, sandbox() as second:
        if layer.tar(first) is None:
            return  # tarfile cannot write it; the damaged-stream test covers odd bytes
        outcomes, trees = [], []
        for box in (first, second):
            before = box.host()
            outcomes.append(apply_in(box, layer))
            before.assert_unchanged()
            assert (box.outside / "canary").read_bytes() == b"untouched"
            trees.append(describe(box.root, placeholder=box.top, dir_times=False))
        event("applied" if outcomes[0] is None else f"refused: {outcomes[0][1][:40]}")
        assert outcomes[0] == outcomes[1]
        if outcomes[0] is None:  # a failed layer's root is garbage: the caller removes it
            assert trees[0] == trees[1]


# Well-formed layers round-trip --------------------------------------------------------------

@pytest.mark.root
@given(well_formed_layers(), st.booleans(), resolvers)
@example(WellFormed((File("a"), Dir("\udcff")), frozenset({"a", "\udcff"})), False,
         "openat2")  # a name that is not UTF-8 made the openat2 seam raise UnicodeEncodeError
@example(WellFormed((File("a", mtime=-5),), frozenset({"a"}), tarfile.GNU_FORMAT), False,
         "openat2")  # GNU tar's base-256 time before 1970 was refused as "negative"
def test_a_well_formed_layer_makes_its_tree_and_round_trips_through_write_layer(
        layer: WellFormed, gzipped: bool, kind: str) -> None:
    with resolver(kind), sandbox() as first, sandbox() as second:
        blob = tar_of(*(first.concrete(e) for e in layer.entries), fmt=layer.fmt)
        stats = apply_layer(io.BytesIO(gzip_of(blob) if gzipped else blob), first.root,
                            limits=LIMITS)
        check_stats(stats, blob, gzipped=gzipped)
        tree = describe(first.root, placeholder=first.top)
        assert set(tree) == set(layer.expected)

        out = io.BytesIO()
        diff_id, size = write_layer(first.root, out)
        assert size == len(out.getvalue())
        again = apply_layer(io.BytesIO(out.getvalue()), second.root, limits=LIMITS)
        assert again.diff_id == diff_id
        assert describe(second.root, placeholder=first.top) == tree  # links from `first`
