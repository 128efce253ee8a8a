"""`dockyard run` reads Docker's flag syntax and names the flag when it cannot."""

from __future__ import annotations

import pytest

from dockyard_cli.flags import (
    FlagError,
    parse_count,
    parse_cpus,
    parse_env,
    parse_mount,
    parse_port,
    parse_restart,
    parse_size,
    parse_tmpfs,
    parse_volume,
)
from dockyard_shim.runtime.config import Bind, PortMapping, TmpfsMount, VolumeUse


@pytest.mark.parametrize(("text", "value"), [
    ("64m", 64 << 20), ("64M", 64 << 20), ("1g", 1 << 30), ("512k", 512 << 10),
    ("1048576", 1048576), ("1.5g", 3 << 29), ("10mb", 10 << 20),
])
def test_sizes_use_dockers_binary_units(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "64x", "-1m", "m", "1.2.3g"])
def test_bad_sizes_are_refused_with_an_example(text: str) -> None:
    with pytest.raises(FlagError, match="such as 64m"):
        parse_size(text)


def test_cpus_become_millicores_within_the_machines_count(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert parse_cpus("0.5") == 500
    assert parse_cpus("1") == 1000
    assert parse_cpus("0.001") == 1
    assert parse_cpus("2.000") == 2000
    for outside in ("0", "0.0009", "2.0001", "3"):
        with pytest.raises(FlagError, match=r"range of CPUs is from 0\.001 to 2\.00"):
            parse_cpus(outside)
    with pytest.raises(FlagError, match=r"range of CPUs is from 0\.001"):
        parse_cpus("9999")
    with pytest.raises(FlagError, match=r"such as 0\.5"):
        parse_cpus("half")


def _shaped(mount: dict[str, object]) -> Bind | VolumeUse | TmpfsMount:
    """In the JSON shape of the daemon's model: the same keys, or the class fails."""
    kind = mount.pop("type")
    return {"bind": Bind, "volume": VolumeUse, "tmpfs": TmpfsMount}[kind](**mount)  # type: ignore[index, arg-type]


def test_v_is_a_bind_a_named_volume_or_an_anonymous_one() -> None:
    assert _shaped(parse_volume("/srv:/data:ro")) == Bind("/srv", "/data", readonly=True)
    assert _shaped(parse_volume("/srv:/data")) == Bind("/srv", "/data")
    assert _shaped(parse_volume("pgdata:/var/lib/pg")) == VolumeUse("pgdata", "/var/lib/pg")
    assert _shaped(parse_volume("cache:/c:ro")) == VolumeUse("cache", "/c", readonly=True)
    assert _shaped(parse_volume("/scratch")) == VolumeUse("", "/scratch")
    for bad in ("/srv:/data:rx", "./rel:/data", ":/data", "name", "a:b:c:d"):
        with pytest.raises(FlagError):
            parse_volume(bad)


def test_mount_takes_dockers_long_form() -> None:
    assert _shaped(parse_mount("type=bind,source=/srv,target=/data,readonly")) == \
        Bind("/srv", "/data", readonly=True)
    assert _shaped(parse_mount("type=volume,src=db,dst=/d,volume-subpath=main")) == \
        VolumeUse("db", "/d", subpath="main")
    assert _shaped(parse_mount("target=/anon")) == VolumeUse("", "/anon")
    assert _shaped(parse_mount("type=tmpfs,destination=/run,tmpfs-size=64m,tmpfs-mode=1770")) \
        == TmpfsMount("/run", 64 << 20, 0o1770)
    for bad in ("type=bind,target=/x", "type=bind,source=rel,target=/x", "source=db",
                "type=nfs,target=/x", "type=tmpfs,target=/x,source=y", "colour=red"):
        with pytest.raises(FlagError):
            parse_mount(bad)


def test_tmpfs_takes_a_path_and_its_options() -> None:
    assert _shaped(parse_tmpfs("/run")) == TmpfsMount("/run")
    assert _shaped(parse_tmpfs("/run:size=1g,mode=700")) == TmpfsMount("/run", 1 << 30, 0o700)
    for bad in ("run", "/run:size=lots", "/run:mode=9", "/run:uid=0"):
        with pytest.raises(FlagError):
            parse_tmpfs(bad)


@pytest.mark.parametrize(("text", "mapping"), [
    ("8080:80", PortMapping(80, 8080)),
    ("80", PortMapping(80, 0)),
    ("127.0.0.1:8080:80/udp", PortMapping(80, 8080, "127.0.0.1", "udp")),
])
def test_ports_follow_dockers_syntax(text: str, mapping: PortMapping) -> None:
    assert PortMapping(**parse_port(text)) == mapping


def test_bad_ports_are_refused_with_an_example() -> None:
    with pytest.raises(FlagError, match=r"e\.g\. 8080:80"):
        parse_port("web:80")


@pytest.mark.parametrize("text", ["100", "-1", " 7 "])
def test_counts_are_whole_numbers(text: str) -> None:
    assert parse_count(text) == int(text)


@pytest.mark.parametrize("text", ["", "1.5", "ten", "--5"])
def test_bad_counts_are_refused_with_an_example(text: str) -> None:
    with pytest.raises(FlagError, match="such as 100"):
        parse_count(text)


def test_restart_policies_take_a_count_only_on_failure() -> None:
    assert parse_restart("on-failure:3") == ("on-failure", 3)
    assert parse_restart("always") == ("always", 0)
    with pytest.raises(FlagError, match="only on-failure takes a count"):
        parse_restart("always:3")


def test_env_without_a_value_comes_from_the_callers_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_SHELL", "yes")
    monkeypatch.delenv("NOT_SET", raising=False)
    assert parse_env(("A=1", "FROM_SHELL", "NOT_SET")) == ("A=1", "FROM_SHELL=yes")
