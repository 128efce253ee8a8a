"""Facts about image registries that the operator and the node shim share.

Pure computation: no I/O.
"""

from __future__ import annotations

from dockyard_common.hosts import is_loopback


def plain_http_allowed(domain: str) -> bool:
    """Whether the registry at `domain` (`host[:port]`) may be reached without TLS: only
    one on this machine (localhost, or a loopback address)."""
    return is_loopback(domain.rsplit(":", 1)[0] if not domain.endswith("]") else domain)


def repository(reference: str) -> str:
    """`reference` without its tag or digest: `registry.local:5000/shop/web`."""
    name = reference.partition("@")[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:  # a tag, not a registry's port
        name = name[:colon]
    return name


def pinned_reference(reference: str, digest: str) -> str:
    """`reference` without its tag (or digest), with `digest`: what runs the same bytes
    on every node, and what a node's image store finds by manifest digest."""
    return f"{repository(reference)}@{digest}"
