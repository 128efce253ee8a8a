"""`dockyard run` reads Docker's flag syntax and names the flag when it cannot."""

from __future__ import annotations

import pytest

from dockyard_cli.flags import (
    FlagError,
    parse_count,
    parse_cpus,
    parse_env,
    parse_port,
    parse_restart,
    parse_size,
    parse_volume,
)
from dockyard_shim.runtime.config import Bind, PortMapping


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


def test_volumes_are_host_path_colon_container_path() -> None:
    # In the JSON shape of the daemon's model: the same keys, or Bind(**…) fails.
    assert Bind(**parse_volume("/srv:/data:ro")) == Bind("/srv", "/data", readonly=True)
    assert Bind(**parse_volume("/srv:/data")) == Bind("/srv", "/data")
    for bad in ("/srv", "/srv:/data:rx", "relative:/data", ":/data"):
        with pytest.raises(FlagError):
            parse_volume(bad)


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
