"""Write a busybox root filesystem tar from Debian's busybox-static, for `dockyard import`.

No image registry is reachable from these machines, so the demo builds its own small image:
the static busybox binary, a link per applet, and the few files a shell expects. Standard
library only. Usage: python3 scripts/busybox_image.py OUT.tar
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import time
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
}


def build(out: Path) -> None:
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    now = int(time.time())
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w") as tar:
        for name, mode in (("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777),
                           ("proc", 0o755), ("sys", 0o755), ("dev", 0o755)):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, now
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in applets:
            if applet != "busybox":
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname, info.mtime = tarfile.SYMTYPE, "busybox", now
                tar.addfile(info)
        for name, text in FILES.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, now
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)


if __name__ == "__main__":
    build(Path(sys.argv[1]))
