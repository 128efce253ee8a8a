"""The kernel seam: the Linux syscalls the runtime needs that Python 3.11 lacks.

`Kernel` is the interface (unshare, setns, mount, umount2, pivot_root, sethostname, prctl,
capabilities); `LinuxKernel` calls libc through ctypes; `RecordingKernel` records calls for
unit tests that must run without root. Everything above this layer receives a `Kernel`
rather than calling libc, so the plans it makes can be checked call by call.

Only thin wrappers live here: no policy, no retries. Errors are OSError with the errno the
kernel returned, as for the functions of the `os` module.
"""

from dockyard_shim.kernel.api import Kernel
from dockyard_shim.kernel.consts import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUTS,
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SLAVE,
)
from dockyard_shim.kernel.fake import RecordingKernel
from dockyard_shim.kernel.linux import LinuxKernel

__all__ = [
    "CLONE_NEWCGROUP", "CLONE_NEWIPC", "CLONE_NEWNET", "CLONE_NEWNS", "CLONE_NEWPID",
    "CLONE_NEWUTS", "MNT_DETACH", "MS_BIND", "MS_NODEV", "MS_NOEXEC", "MS_NOSUID", "MS_PRIVATE",
    "MS_RDONLY", "MS_REC", "MS_REMOUNT", "MS_SLAVE", "Kernel", "LinuxKernel", "RecordingKernel",
]
