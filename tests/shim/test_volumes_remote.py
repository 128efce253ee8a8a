"""Pulling a volume from another node's shim: signed, verified, and never used half done.

Node A runs a daemon with its transfer listener on 127.0.0.1; node B is another state
root that pulls from it. A relay between them can cut the stream or change a byte."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dockyard_shim.daemon.client import Client, DaemonError
from dockyard_shim.volumes import VolumeStore
from dockyard_shim.volumes.importing import import_volume
from dockyard_shim.volumes.remote import ARCHIVE_PATH, authorization, read_token, session_key
from tests.shim.nodes import Node, busybox_node

pytestmark = [pytest.mark.root, pytest.mark.e2e]

Mangle = Callable[[bytes, int], bytes | None]
"""Given a chunk from A and the bytes relayed so far: what B gets; None cuts the line."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(os.urandom(24).hex())
    path.chmod(0o600)
    return path


@pytest.fixture
def node_a(tmp_path: Path, token: Path) -> Iterator[tuple[Node, int]]:
    port = _free_port()
    with busybox_node(tmp_path / "a", DOCKYARD_TRANSFER_LISTEN=f"127.0.0.1:{port}",
                      DOCKYARD_TRANSFER_TOKEN_FILE=str(token)) as node:
        node.dockyard("run", "--rm", "-v", "pgdata:/d", "busybox", "sh", "-c",
                      "mkdir /d/base && for i in 1 2 3 4; do dd if=/dev/urandom "
                      "of=/d/base/rel$i bs=1M count=1 2>/dev/null; done && echo ok > /d/flag",
                      check=True)
        yield node, port


def _b_env(tmp_path: Path, token: Path) -> dict[str, str]:
    return {**os.environ, "DOCKYARD_ROOT": str(tmp_path / "b" / "root"),
            "DOCKYARD_HOST": str(tmp_path / "b" / "dockyard.sock"),
            "DOCKYARD_TRANSFER_TOKEN_FILE": str(token)}


def _pull(node_a: Node, env: dict[str, str], port: int, *args: str) -> tuple[int, str]:
    node_b = Node(env, Path(env["DOCKYARD_ROOT"]).parent)
    result = node_b.dockyard("volume", "pull", *args, "--from", f"http://127.0.0.1:{port}")
    return result.returncode, result.stderr


def _data(root: str, name: str) -> dict[str, bytes]:
    base = Path(root, "volumes", name, "_data")
    return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def test_a_pulled_volume_is_the_same_data(node_a: tuple[Node, int], tmp_path: Path,
                                          token: Path) -> None:
    node, port = node_a
    env = _b_env(tmp_path, token)
    code, out = _pull(node, env, port, "pgdata")
    assert code == 0, out
    assert _data(env["DOCKYARD_ROOT"], "pgdata") == _data(node.env["DOCKYARD_ROOT"], "pgdata")
    code, out = _pull(node, env, port, "copy", "--remote", "pgdata")
    assert code == 0, out
    shown = json.loads(Node(env, tmp_path).dockyard("volume", "inspect", "copy").stdout)[0]
    assert "dockyard.dev/state" not in shown["Labels"]


def test_a_peer_without_the_token_gets_nothing(node_a: tuple[Node, int], tmp_path: Path) -> None:
    node, port = node_a
    other = tmp_path / "other-token"
    other.write_text(os.urandom(24).hex())
    other.chmod(0o600)
    env = {**_b_env(tmp_path, other)}
    code, out = _pull(node, env, port, "pgdata")
    assert code == 1
    assert "401" in out
    assert "not signed with this node's token" in out
    assert not Path(env["DOCKYARD_ROOT"], "volumes", "pgdata").exists()


class _Relay:
    """One connection from B to A, passing A's answer through `mangle`; `passed` counts
    the bytes of it that came through."""

    def __init__(self, upstream: int, mangle: Mangle = lambda chunk, _: chunk) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._upstream, self._mangle = upstream, mangle
        self.passed = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client, _ = self._listener.accept()
        with client, socket.create_connection(("127.0.0.1", self._upstream)) as server:
            client.settimeout(5)
            request = client.recv(65536)
            server.sendall(request)
            while chunk := server.recv(65536):
                changed = self._mangle(chunk, self.passed)
                if changed is None:
                    return  # the line breaks
                client.sendall(changed)
                self.passed += len(chunk)

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=10)


def _cut_after(limit: int) -> Mangle:
    return lambda chunk, passed: None if passed > limit else chunk


def _flip_at(offset: int) -> Mangle:
    def flip(chunk: bytes, passed: int) -> bytes:
        if passed <= offset < passed + len(chunk):
            data = bytearray(chunk)
            data[offset - passed] ^= 0x01
            return bytes(data)
        return chunk
    return flip


def _relayed_pull(node: Node, env: dict[str, str], port: int, mangle: Mangle | None = None
                  ) -> tuple[int, str, int]:
    """Pull pgdata into B through a relay; the exit code, stderr and the bytes relayed."""
    relay = _Relay(port, mangle) if mangle else _Relay(port)
    try:
        code, out = _pull(node, env, relay.port, "pgdata")
    finally:
        relay.close()
    return code, out, relay.passed


@pytest.mark.parametrize(("mangle", "message"), [
    (_cut_after(5 << 19), "cut short"),
    (_flip_at(3 << 20), "does not match its manifest"),
], ids=["broken-off", "changed-on-the-way"])
def test_a_transfer_that_fails_leaves_nothing_usable_and_the_next_pull_resumes(
        node_a: tuple[Node, int], tmp_path: Path, token: Path, mangle: Mangle,
        message: str) -> None:
    node, port = node_a
    env = _b_env(tmp_path, token)
    code, out, _ = _relayed_pull(node, env, port, mangle)
    assert code == 1
    assert message in out or "broke off" in out, out
    shown = Node(env, tmp_path / "b").dockyard("volume", "inspect", "pgdata", check=True)
    assert json.loads(shown.stdout)[0]["Labels"] == {"dockyard.dev/state": "importing"}

    code, out, relayed = _relayed_pull(node, env, port)

    assert code == 0, out
    assert _data(env["DOCKYARD_ROOT"], "pgdata") == _data(node.env["DOCKYARD_ROOT"], "pgdata")
    kept = re.search(r"\((\d+) files, (\d+) bytes of them were here", out)
    assert kept is not None, out
    assert int(kept[1]) >= 2  # the flag and a file of 1 MiB at least
    assert relayed < (4 << 20) - int(kept[2]) + 65536  # what was here did not come again


def test_the_operator_asks_the_new_nodes_daemon_to_pull(node_a: tuple[Node, int],
                                                         tmp_path: Path, token: Path) -> None:
    """What the operator does when a consumer moves: POST /volumes/NAME/pull to the shim of
    the consumer's new node, then start the consumer there."""
    port = node_a[1]
    with busybox_node(tmp_path / "b", DOCKYARD_TRANSFER_TOKEN_FILE=str(token)) as node_b:
        client = Client(Path(node_b.env["DOCKYARD_HOST"]))
        answer = client.call("POST", "/volumes/moved/pull",
                             {"from": f"http://127.0.0.1:{port}", "remote": "pgdata"})
        assert (answer["Files"], answer["KeptFiles"]) == (5, 0)
        result = node_b.dockyard("run", "--rm", "-v", "moved:/d", "busybox", "cat", "/d/flag",
                                 check=True)
        assert result.stdout == "ok\n"
        with pytest.raises(DaemonError, match="refused volume nothing"):
            client.call("POST", "/volumes/nothing/pull", {"from": f"http://127.0.0.1:{port}"})


def test_an_http_1_1_client_gets_the_same_archive_chunked(node_a: tuple[Node, int],
                                                          tmp_path: Path, token: Path) -> None:
    """Other pullers than dockyard's own (HTTP/1.1: the server frames the body itself)."""
    node, port = node_a
    path, nonce = ARCHIVE_PATH.format(name="pgdata"), "n" * 32
    key = read_token(token)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={
            "Authorization": authorization(key, "GET", path, nonce)})
        response = connection.getresponse()
        assert (response.status, response.getheader("Transfer-Encoding")) == (200, "chunked")
        with VolumeStore(tmp_path / "c" / "volumes") as store:
            stats = import_volume(store, "copy", response, mac_key=session_key(key, nonce))
            assert stats.files == 5
            assert _data(str(tmp_path / "c"), "copy") == \
                _data(node.env["DOCKYARD_ROOT"], "pgdata")
    finally:
        connection.close()
