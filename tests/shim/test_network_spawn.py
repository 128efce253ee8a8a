"""A container started by the real spawner, attached from its `connect(pid)` hook, runs its
command with eth0 configured from its first instruction. The node is a private namespace
(tests/shim/netns.py); the container is spawn's own, with a busybox root."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from pyroute2 import IPRoute  # type: ignore[import-untyped]

from dockyard_shim.kernel import LinuxKernel
from dockyard_shim.mounts import Mount
from dockyard_shim.network import Ipam, NetworkConfig, attach, detach, ensure_bridge
from dockyard_shim.runtime.process import ProcessSpec, become_subreaper
from dockyard_shim.runtime.spawn import SandboxSpec, spawn
from tests.shim import netns
from tests.shim.rootfs_dir import busybox_rootfs

pytestmark = pytest.mark.root

CONFIG = NetworkConfig(bridge="dytest0", subnet=IPv4Network("10.201.0.0/24"))
CID = "5eed" * 16


@pytest.fixture
def node() -> Iterator[netns.Node]:
    become_subreaper(LinuxKernel())  # the container's init is reparented to us
    with netns.private_node() as node:
        ensure_bridge(CONFIG)
        yield node


def test_the_command_of_a_container_attached_at_connect_sees_its_network(
        node: netns.Node, tmp_path: Path) -> None:
    state = tmp_path / "network"
    root = busybox_rootfs(tmp_path / "image")
    script = "cat /sys/class/net/eth0/address /sys/class/net/eth0/operstate /proc/net/route"
    spec = SandboxSpec(bundle=tmp_path / "bundle",
                       rootfs=(Mount("bind", str(root), "", ("rbind",)),),
                       process=ProcessSpec(args=("sh", "-c", script), env=("PATH=/bin",)),
                       hostname="c0ffee123456", network="bridge")
    attachments = []
    spawned = spawn(LinuxKernel(), spec, connect=lambda pid: attachments.append(
        attach(CONFIG, state, CID, pid)))
    _, status = os.waitpid(spawned.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    mac, operstate, _, *routes = spec.log_path.read_text().splitlines()
    assert mac == attachments[0].mac == "02:42:0a:c9:00:02"
    assert operstate in ("up", "unknown")
    # /proc/net/route: Iface, Destination, Gateway (little-endian hex) …
    assert ["eth0", "00000000", "0100C90A"] in [line.split()[:3] for line in routes]
    # The container's namespace died with it, and the veth with the namespace.
    deadline = time.monotonic() + 5
    with IPRoute() as ipr:
        while ipr.link_lookup(ifname=attachments[0].host_veth) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not ipr.link_lookup(ifname=attachments[0].host_veth)
    detach(CONFIG, state, CID)
    with Ipam(state, CONFIG) as ipam:
        assert ipam.allocations() == {}
