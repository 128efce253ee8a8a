"""IP address management: one address per container from a network's subnet, persisted.

State is one SQLite file per state directory (`ipam.db`, through `dockyard_shim.db`),
holding every network that uses the directory, keyed by bridge name. Each change is a
`BEGIN IMMEDIATE` transaction, so several processes (the daemon, a CLI, a restarted
daemon) can share the file; the `UNIQUE (network, address)` constraint makes it
impossible, not merely unlikely, to hand one address to two containers. A power loss may
drop the last commits (WAL, synchronous=NORMAL), which is harmless: it also ends every
container, and the daemon's orphan sweep reconciles the rest.

Addresses are handed out round-robin from the last one given (as Docker's IPAM does), not
lowest-free: a just-released address is reused last, so peers' stale ARP entries for it
have expired by then. The gateway (the first host address) and the broadcast address are
never handed out.

No netlink here: this module only decides which address a container owns.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType

from dockyard_shim.db import Database
from dockyard_shim.errors import FailedPreconditionError, UnavailableError
from dockyard_shim.network.config import NetworkConfig, check_container_id

DB_NAME = "ipam.db"
_SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE networks (
        name TEXT PRIMARY KEY,
        subnet TEXT NOT NULL,
        last INTEGER NOT NULL          -- the address handed out last, as an integer; 0: none
    )""",
    """CREATE TABLE allocations (
        network TEXT NOT NULL REFERENCES networks (name),
        container_id TEXT NOT NULL,
        address TEXT NOT NULL,
        PRIMARY KEY (network, container_id),
        UNIQUE (network, address)
    )""",
)


class Ipam:
    """The addresses of one network's containers.

    Open it on the node's network state directory with the network's config; use it as a
    context manager or `close` it. Safe to use from several threads (one connection behind
    a lock) and from several processes at once (SQLite transactions).
    """

    def __init__(self, state_dir: Path, config: NetworkConfig) -> None:
        self._config = config
        self._db = Database(state_dir / DB_NAME, what="the IPAM state", schema=_SCHEMA,
                            version=_SCHEMA_VERSION)
        try:
            self._register()
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ipam:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _register(self) -> None:
        """Record this network's subnet; refuse a new subnet while addresses are allocated."""
        name, subnet = self._config.bridge, str(self._config.subnet)
        with self._db.write() as db:
            db.execute("INSERT OR IGNORE INTO networks (name, subnet, last) VALUES (?, ?, 0)",
                       (name, subnet))
            (stored,) = db.execute("SELECT subnet FROM networks WHERE name = ?",
                                   (name,)).fetchone()
            if stored == subnet:
                return
            (count,) = db.execute("SELECT COUNT(*) FROM allocations WHERE network = ?",
                                  (name,)).fetchone()
            if count:
                raise FailedPreconditionError(
                    f"network {name} has {count} address(es) allocated in {stored}: detach "
                    f"its containers before changing its subnet to {subnet}")
            db.execute("UPDATE networks SET subnet = ?, last = 0 WHERE name = ?",
                       (subnet, name))

    def allocate(self, container_id: str) -> IPv4Address:
        """The container's address: the one it holds already, or the next free one.

        UnavailableError when every address of the subnet is taken.
        """
        check_container_id(container_id)
        name, subnet = self._config.bridge, self._config.subnet
        with self._db.write() as db:
            row = db.execute("SELECT address FROM allocations WHERE network = ? AND "
                             "container_id = ?", (name, container_id)).fetchone()
            if row is not None:
                return IPv4Address(row[0])
            used = {int(IPv4Address(address)) for (address,) in db.execute(
                "SELECT address FROM allocations WHERE network = ?", (name,))}
            first = int(self._config.gateway) + 1
            last = int(subnet.broadcast_address) - 1
            if len(used) >= last - first + 1:
                raise UnavailableError(
                    f"network {name}: all {last - first + 1} addresses of {subnet} are in "
                    "use; remove containers or configure a larger subnet")
            (previous,) = db.execute("SELECT last FROM networks WHERE name = ?",
                                     (name,)).fetchone()
            candidate = previous + 1 if first <= previous < last else first
            while candidate in used:
                candidate = candidate + 1 if candidate < last else first
            address = IPv4Address(candidate)
            db.execute("INSERT INTO allocations (network, container_id, address) "
                       "VALUES (?, ?, ?)", (name, container_id, str(address)))
            db.execute("UPDATE networks SET last = ? WHERE name = ?", (candidate, name))
            return address

    def release(self, container_id: str) -> IPv4Address | None:
        """Give the container's address back; the address it held, or None (idempotent)."""
        with self._db.write() as db:
            row = db.execute("SELECT address FROM allocations WHERE network = ? AND "
                             "container_id = ?", (self._config.bridge,
                                                  container_id)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM allocations WHERE network = ? AND container_id = ?",
                       (self._config.bridge, container_id))
            return IPv4Address(row[0])

    def get(self, container_id: str) -> IPv4Address | None:
        """The container's address, or None when it holds none."""
        with self._db.read() as db:
            row = db.execute("SELECT address FROM allocations WHERE network = ? AND "
                             "container_id = ?", (self._config.bridge, container_id)).fetchone()
        return None if row is None else IPv4Address(row[0])

    def allocations(self) -> dict[str, IPv4Address]:
        """Every container of this network and its address."""
        with self._db.read() as db:
            rows = db.execute("SELECT container_id, address FROM allocations "
                              "WHERE network = ?", (self._config.bridge,)).fetchall()
        return {container_id: IPv4Address(address) for container_id, address in rows}
