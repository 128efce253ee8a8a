"""A private OCI registry for tests and benchmarks: Debian's `docker-registry` on 127.0.0.1.

It listens on a free port with plain HTTP (loopback only), keeps its data under a
directory of the caller, logs every request (so a test can count which blobs were
fetched), and is stopped by its pid when the context ends.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

_CONFIG = """version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""
_AUTH = """auth:
  htpasswd:
    realm: dockyard-tests
    path: {htpasswd}
"""


@dataclass(frozen=True)
class Registry:
    host: str
    """`127.0.0.1:PORT`: prefix repository names with it."""
    log: Path

    def blob_fetches(self, repository: str) -> list[str]:
        """Digests of the blobs fetched (GET) from `repository` so far, in order."""
        wanted = f"/v2/{repository}/blobs/"
        fetched = []
        for line in self.log.read_text().splitlines():
            if 'http.request.method=GET' in line and wanted in line \
                    and "response completed" in line:
                uri = line.split("http.request.uri=", 1)[1].split()[0].strip('"')
                fetched.append(uri.rsplit("/", 1)[1])
        return fetched


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=1) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as e:
        return e.code == 401  # up, and asking for credentials
    except (urllib.error.URLError, OSError):
        return False


def _bcrypt(password: str) -> str:
    """The registry's htpasswd wants bcrypt; glibc's crypt makes it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # crypt is deprecated in 3.11
        import crypt  # noqa: PLC0415

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))  # noqa: S324 -- bcrypt


@contextlib.contextmanager
def running_registry(work: Path, users: Mapping[str, str] | None = None,
                     ) -> Iterator[Registry]:
    """A registry serving from `work/registry`, stopped (and its data kept) at the end.

    With `users` (name -> password) it asks for basic authentication, as a private
    registry does.
    """
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed: apt-get install docker-registry")
    folder = work / "registry"
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # the free port may be taken before the registry binds it
        port = _free_port()
        config = folder / "config.yml"
        text = _CONFIG.format(data=folder / "data", port=port)
        if users:
            htpasswd = folder / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{_bcrypt(p)}\n" for u, p in users.items()))
            text += _AUTH.format(htpasswd=htpasswd)
        config.write_text(text)
        log = folder / f"registry-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen([binary, "serve", str(config)], stdout=out,
                                       stderr=subprocess.STDOUT)
        registry = Registry(f"127.0.0.1:{port}", log)
        deadline = time.monotonic() + 15
        while process.poll() is None and time.monotonic() < deadline \
                and not _answers(registry.host):
            time.sleep(0.05)
        if process.poll() is None and _answers(registry.host):
            try:
                yield registry
            finally:
                process.terminate()
                process.wait(timeout=15)
            return
        process.kill()
        process.wait(timeout=15)
    raise RuntimeError(f"docker-registry did not start; see {folder}")
