"""Docker's flag syntax for `dockyard run`: sizes, CPUs, volumes, ports, restart, env.

Each parser accepts what `docker run` accepts and raises click.BadParameter, which click
prints as `Invalid value for '-m': …` and exit code 2, like any usage error.
"""

from __future__ import annotations

import ipaddress
import os
import re
from decimal import Decimal, InvalidOperation

import click

from dockyard_shim.runtime.config import Bind, PortMapping

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp])?b?$", re.IGNORECASE)
_UNITS = {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str) -> int:
    """`64m`, `1g`, `512k`, `1048576` -> bytes (Docker's units are binary)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise click.BadParameter(f"{text!r}: write a size such as 64m, 512k or 1g")
    number, unit = match.groups()
    return int(Decimal(number) * _UNITS[unit.lower() if unit else None])


def parse_cpus(text: str) -> int:
    """`0.5` -> 500 millicores; at most the CPUs this machine has, as Docker checks."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise click.BadParameter(f"{text!r}: write a number of CPUs such as 0.5 or 2") from None
    available = os.cpu_count() or 1
    if not Decimal("0.001") <= value <= available:
        raise click.BadParameter(f"range of CPUs is from 0.001 to {available}.00")
    return int(value * 1000)


def parse_volume(text: str) -> Bind:
    """`SRC:DST[:ro|rw]` with SRC an absolute host path."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise click.BadParameter(f"{text!r}: write HOST_PATH:CONTAINER_PATH[:ro]")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise click.BadParameter(f"{text!r}: the mode must be ro or rw, not {mode!r}")
    if not parts[0].startswith("/"):
        raise click.BadParameter(
            f"{text!r}: the source must be an absolute host path (named volumes are not "
            "supported yet)")
    return Bind(parts[0], parts[1], readonly=mode == "ro")


def parse_port(text: str) -> PortMapping:
    """`[IP:][HOST:]CONTAINER[/tcp|udp]` -> a port mapping."""
    spec, _, protocol = text.partition("/")
    protocol = protocol or "tcp"
    host_ip, host, container = "0.0.0.0", "", ""  # noqa: S104 -- Docker's default
    parts = spec.rsplit(":", 2)
    if len(parts) == 3:
        host_ip, host, container = parts
    elif len(parts) == 2:
        host, container = parts
    else:
        container = parts[0]
    try:
        ipaddress.ip_address(host_ip)
        return PortMapping(int(container), int(host) if host else 0, host_ip, protocol)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: write [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], e.g. 8080:80") from None


def parse_restart(text: str) -> tuple[str, int]:
    """`no`, `always`, `unless-stopped`, `on-failure[:N]` -> (policy, max retries)."""
    policy, _, retries = text.partition(":")
    if retries and (policy != "on-failure" or not retries.isdigit()):
        raise click.BadParameter(f"{text!r}: only on-failure takes a count, as on-failure:3")
    return policy, int(retries) if retries else 0


def parse_env(items: tuple[str, ...]) -> tuple[str, ...]:
    """`-e K=V` as is; `-e K` takes K from this shell's environment, or is dropped."""
    out = []
    for item in items:
        if "=" in item:
            out.append(item)
        elif item in os.environ:
            out.append(f"{item}={os.environ[item]}")
    return tuple(out)
