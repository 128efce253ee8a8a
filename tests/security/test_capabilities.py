"""A container's processes hold Docker's 14 capabilities and nothing more, exec'd or not.

Canary: none is needed on the host; the attack is holding a capability Docker withholds
(CAP_SYS_ADMIN mounts, CAP_SYS_MODULE loads modules...). The kernel's own report in
/proc/self/status is read from inside.
"""

from __future__ import annotations

import pytest

from dockyard_shim.runtime import capabilities
from tests.security.harness import Containers, status_fields

pytestmark = pytest.mark.root

DOCKER_14 = 0xA80425FB
"""CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW
SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP: `docker run`'s CapEff."""

CAPS = "grep ^Cap /proc/self/status"


def _assert_dockers_set(text: str) -> None:
    caps = status_fields(text)
    for name in ("CapBnd", "CapPrm", "CapEff"):
        assert int(caps[name], 16) == DOCKER_14, (name, caps)
    assert int(caps["CapInh"], 16) == 0
    assert int(caps["CapAmb"], 16) == 0


def test_the_default_set_is_dockers_fourteen_and_nothing_else() -> None:
    assert capabilities.mask(capabilities.DOCKER_DEFAULT) == DOCKER_14
    assert len(capabilities.DOCKER_DEFAULT) == 14


def test_the_main_process_holds_exactly_dockers_capabilities(containers: Containers) -> None:
    code, out = containers.run(CAPS)
    assert code == 0, out
    _assert_dockers_set(out)


def test_an_execd_process_holds_exactly_dockers_capabilities(containers: Containers) -> None:
    record = containers.start("sleep 60")
    code, out = containers.exec(record, CAPS)
    assert code == 0, out
    _assert_dockers_set(out)


def test_an_execd_process_cannot_regain_a_capability_through_its_parent(
        containers: Containers) -> None:
    """The bounding set is inherited: a child of an exec'd shell stays within it."""
    record = containers.start("sleep 60")
    code, out = containers.exec(record, f"sh -c '{CAPS}'")
    assert code == 0, out
    _assert_dockers_set(out)
