"""A busybox root filesystem as a plain directory, for runtime tests below the image store."""

from __future__ import annotations

import shutil
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "echo", "cat", "ls", "hostname", "id", "sleep", "true", "false", "ps",
           "grep", "wc", "mount", "touch", "mkdir", "kill", "env", "pwd", "readlink", "stat")


def busybox_rootfs(path: Path) -> Path:
    """Create a minimal busybox root at `path` (bin/ with applet links, etc/ with passwd)."""
    (path / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, path / "bin" / "busybox")
    for applet in APPLETS:
        (path / "bin" / applet).symlink_to("busybox")
    (path / "etc").mkdir()
    (path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "app:x:1000:1000:app:/home/app:/bin/sh\n")
    (path / "etc" / "group").write_text("root:x:0:\napp:x:1000:\n")
    (path / "tmp").mkdir(mode=0o1777)
    return path
