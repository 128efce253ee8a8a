"""Whether a host name is this machine: `localhost` or a loopback address.

Used where a peer on this machine is treated differently (a registry reached without TLS,
an API server not sent through a proxy). Pure, standard library only.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """`localhost`, `127.0.0.0/8` or `::1` (brackets around an IPv6 address allowed)."""
    host = host.removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
