"""Helpers the tests share: independent reads of each store, catalog writes, misbehaving servers."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator
from typing import Any

from funnel import layout


def hive_execute(conn: Any, *statements: str) -> None:
    cursor = conn.cursor()
    for statement in statements:
        cursor.execute(statement)
    cursor.close()


def hive_first_column(conn: Any, query: str) -> set[str]:
    """Run a query independently of funnel and return its first column as strings."""
    cursor = conn.cursor()
    cursor.execute(query)
    values = {str(row[0]) for row in cursor.fetchall() if row[0] is not None}
    cursor.close()
    return values


def mysql_live_members(conn: Any, segment_id: str) -> set[str]:
    cur = conn.cursor()
    cur.execute(f"SELECT user_id FROM {layout.CURRENT_MEMBERS_VIEW} WHERE segment_id = %s", (segment_id,))
    members = {row[0] for row in cur.fetchall()}
    conn.commit()
    return members


def redis_live_members(client: Any, segment_id: str) -> set[str]:
    return {m.decode() for m in client.smembers(layout.members_key(segment_id))}


def insert_segments(conn: Any, *rows: dict[str, Any]) -> None:
    """Write catalog rows the way a data engineer would: plain SQL into funnel_segments."""
    cur = conn.cursor()
    for row in rows:
        columns = ", ".join(row)
        placeholders = ", ".join(["%s"] * len(row))
        cur.execute(f"REPLACE INTO {layout.SEGMENTS_TABLE} ({columns}) VALUES ({placeholders})", tuple(row.values()))
    conn.commit()


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never says a word (a hung server); yields its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


class FreezableProxy:
    """A TCP proxy on 127.0.0.1 to a real server that forwards both ways until ``freeze()``, then
    holds every byte: a server that answered the handshake and then hung."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.frozen = threading.Event()
        self._closed = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self._sockets: list[socket.socket] = [self._server]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def port(self) -> int:
        return self._server.getsockname()[1]

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self._closed.set()
        for thread in self._threads:
            thread.join()
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client = self._server.accept()[0]
            except TimeoutError:
                continue
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            thread = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peer = {client: upstream, upstream: client}
        with contextlib.suppress(OSError):  # either side went away
            while not self._closed.is_set():
                if self.frozen.is_set():
                    self._closed.wait(0.1)
                    continue
                readable, _, _ = select.select([client, upstream], [], [], 0.1)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        peer[sock].shutdown(socket.SHUT_WR)
                        return
                    peer[sock].sendall(data)


@contextlib.contextmanager
def freezable_proxy(host: str, port: int) -> Iterator[FreezableProxy]:
    proxy = FreezableProxy(host, port)
    try:
        yield proxy
    finally:
        proxy.close()


def redis_dump(client: Any) -> dict[bytes, tuple[bytes, bytes | None]]:
    """Every key of the test Redis (each master of a cluster) with its type and ``DUMP``: two
    equal dumps mean nothing was written in between."""
    nodes = [node.redis_connection for node in client.get_primaries()] if hasattr(client, "get_primaries") else [client]
    return {key: (node.type(key), node.dump(key)) for node in nodes for key in node.scan_iter(count=1000)}


def mysql_fingerprint(conn: Any) -> dict[str, tuple[Any, ...]]:
    """Every table of the test MySQL database: rows, ``CHECKSUM TABLE`` and the next AUTO_INCREMENT
    (so even a row written and deleted again shows)."""
    cur = conn.cursor()
    cur.execute(
        "SELECT table_name, auto_increment FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'"
    )
    tables = dict(cur.fetchall())
    found: dict[str, tuple[Any, ...]] = {}
    for table, auto_increment in sorted(tables.items()):
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        (rows,) = cur.fetchone()
        cur.execute(f"CHECKSUM TABLE {table}")
        (_, checksum) = cur.fetchone()
        found[table] = (rows, checksum, auto_increment)
    conn.commit()
    return found
