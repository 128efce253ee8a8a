"""Bad container configs are refused before anything is created, naming the flag."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.runtime.config import Bind, ContainerConfig, PortMapping, validate

GOOD = ContainerConfig(image="busybox", name="web", command=("sleep", "1"), env=("A=1",),
                       memory_bytes=64 << 20, cpu_millis=500, pids_limit=64,
                       binds=(Bind("/tmp", "/data", readonly=True),),
                       ports=(PortMapping(80, 8080),))


def test_a_good_config_passes_and_round_trips_through_json() -> None:
    assert validate(GOOD) is GOOD
    assert ContainerConfig.from_json(GOOD.to_json()) == GOOD


@pytest.mark.parametrize(("change", "message"), [
    ({"image": ""}, "an image is required"),
    ({"name": "-bad"}, "--name: invalid container name"),
    ({"env": ("NOEQUALS",)}, "-e: 'NOEQUALS' is not NAME=VALUE"),
    ({"env": ("1A=x",)}, "-e: '1A=x'"),
    ({"working_dir": "relative"}, "-w: 'relative' must be an absolute path"),
    ({"working_dir": "/app/../etc"}, "-w: '/app/../etc' must be an absolute path"),
    ({"hostname": "Bad_Host"}, "--hostname"),
    ({"memory_bytes": 1 << 20}, "-m: minimum memory limit allowed is 6MB"),
    ({"cpu_millis": 0}, "--cpus: must be at least 0.001"),
    ({"pids_limit": 0}, "--pids-limit"),
    ({"binds": (Bind("relative", "/data"),)}, "-v: bind source 'relative' must be an abs"),
    ({"binds": (Bind("/no/such/dir", "/data"),)}, "-v: bind source path does not exist"),
    ({"binds": (Bind("/tmp", "data"),)}, "-v: 'data' must be an absolute path"),
    ({"binds": (Bind("/tmp", "/a/../b"),)}, "-v: '/a/../b' must be an absolute path"),
    ({"binds": (Bind("/tmp", "/"),)}, "cannot mount a volume over the container's /"),
    ({"network": "overlay"}, "--network: 'overlay' is not one of none, host, bridge"),
    ({"network": "host"}, "-p: ports can be published only with --network bridge"),
    ({"ports": (PortMapping(0),)}, "-p: port out of range"),
    ({"ports": (PortMapping(80, protocol="sctp"),)}, "-p: protocol must be tcp or udp"),
    ({"restart": "sometimes"}, "--restart: 'sometimes' is not one of"),
    ({"restart": "always", "auto_remove": True}, "--rm and --restart are mutually exclusive"),
    ({"cap_add": ("SYS_GOD",)}, "unknown capability 'SYS_GOD'"),
])
def test_each_bad_field_is_refused_naming_its_flag(change: dict[str, object],
                                                   message: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate(replace(GOOD, **change))  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_malformed_json_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError, match="malformed container config"):
        ContainerConfig.from_json({"image": "busybox", "colour": "blue"})
