"""Bring up `lo` in the calling thread's network namespace (a new one starts with it down)."""

from __future__ import annotations

import fcntl
import socket
import struct

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = "16sH14x"  # struct ifreq: name, then ifr_flags


def loopback_up() -> None:
    """Set IFF_UP on `lo` (SIOCGIFFLAGS, then SIOCSIFFLAGS): no netlink needed, so it is
    cheap enough for a container's init to call before it execs."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack(_IFREQ, b"lo", 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))
