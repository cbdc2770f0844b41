"""Helpers the tests share: independent reads of each store, catalog writes, misbehaving servers."""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

from funnel.storage import layout

#: The API's tokens in the tests (``AIRFLOW__FUNNEL__API_TOKENS``).
READ_TOKEN = "read-token-5c0a7e91d2"
WRITE_TOKEN = "write-token-8b3f46aa17"
API_TOKENS = f"read:{READ_TOKEN},write:{WRITE_TOKEN}"


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


#: Segment definitions the catalog refuses, each for another reason (the CLI's and the API's
#: write path must refuse them with the catalog's own message, writing nothing).
HOSTILE_DEFINITIONS: list[dict[str, Any]] = [
    {"segment_id": "jvm", "name": "x", "kind": "dynamic", "query": "SELECT reflect('java.lang.System', 'exit', 0)"},
    {"segment_id": "pw", "name": "x", "kind": "dynamic", "query": "SELECT '{{ conn.funnel_mysql.password }}'"},
    {"segment_id": "px2", "name": "Px", "kind": "proxy", "rule": "{oops"},
    {"segment_id": "shrink", "name": "x", "kind": "dynamic", "query": "SELECT user_id FROM t", "max_shrink_pct": 250},
    {"segment_id": "late", "name": "x", "kind": "static", "query": "SELECT user_id FROM t", "run_at": "tomorrow"},
    {"segment_id": "Bad Id", "name": "x", "kind": "dynamic", "query": "SELECT user_id FROM t"},
    {"segment_id": "nokind", "name": "x", "kind": "magic", "query": "SELECT user_id FROM t"},
    {"segment_id": "mix", "name": "x", "kind": "composite", "rule": '{"union": ["nosuch", "other"]}'},
]


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


class WebhookReceiver:
    """A real HTTP receiver on a loopback port, for webhook deliveries.

    ``fail_next(n)``: answer the next ``n`` POSTs with HTTP 500. ``down()``: close the port
    (connection refused), ``up()``: listen on the same port again. ``requests`` holds every
    POST that reached it (headers, body, the status answered), in arrival order.
    """

    def __init__(self) -> None:
        import http.server

        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self._failures = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    status = 500 if receiver._failures > 0 else 200
                    receiver._failures = max(0, receiver._failures - 1)
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                answer = b'{"ok":true}' if status == 200 else b"receiver is failing on purpose"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self._handler = Handler
        self.port = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures = count

    def up(self) -> None:
        import http.server

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server(("127.0.0.1", self.port), self._handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def accepted(self) -> list[tuple[dict[str, str], bytes]]:
        """The POSTs answered 2xx, in order."""
        return [(headers, body) for headers, body, status in self.requests if status == 200]


def refresh_segment(redis_client: Any, segment_id: str, members: list[str], slot: int) -> Any:
    """Make a new version of a dynamic segment live with the real Refresher, as its Airflow task
    would (``slot``: days after 2030-01-01 09:00 UTC, its logical date); returns the ``RefreshResult``."""
    import datetime as dt

    from funnel import wiring
    from funnel.core.run_info import RunInfo
    from funnel.core.segment import Kind
    from funnel.services.refresh import RefreshRequest

    logical_date = dt.datetime(2030, 1, 1, 9, tzinfo=dt.UTC) + dt.timedelta(days=slot)
    info = RunInfo("funnel_tests", f"scheduled__{slot}", logical_date)
    with wiring.refresher(redis_client=redis_client) as refresher:
        lock = wiring.segment_lock(redis_client, segment_id, {"run_id": info.run_id})
        return refresher.refresh(RefreshRequest(segment_id, Kind.DYNAMIC, info), lambda: iter([list(members)]), lock)


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


def feed_entries(client: Any, segment_id: str) -> list[dict[str, str]]:
    """Every entry of a segment's change feed, oldest first, read with XRANGE (fields as text)."""
    return [
        {k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(layout.feed_key(segment_id))
    ]


def feed_versions(client: Any, segment_id: str) -> dict[int, dict[str, Any]]:
    """The feed per version: the ids that entered and exited, the closing counts, how many
    closing entries it has (a version published twice has two)."""
    out: dict[int, dict[str, Any]] = {}
    for entry in feed_entries(client, segment_id):
        version = out.setdefault(int(entry["version"]), {"entered": set(), "exited": set(), "ends": []})
        if entry["change"] == "end":
            version["ends"].append((int(entry["entered"]), int(entry["exited"])))
        else:
            version[entry["change"]].update(entry["ids"].split("\n"))
    return out


def subscribe_on(conn: Any, segments: Any, segment_id: str, url: str, *args: Any, **kwargs: Any) -> Any:
    """``funnel.services.webhook_admin.subscribe`` with its stores on ``conn`` and ``webhook_refuse_private``
    (off in the tests: their receivers are on loopback), as the CLI wires them."""
    from funnel import settings, wiring
    from funnel.services.webhook_admin import subscribe

    kwargs.setdefault("refuse_private", settings.WEBHOOK_REFUSE_PRIVATE)
    return subscribe(wiring.webhook_store(conn), wiring.mysql_store(conn), segments, segment_id, url, *args, **kwargs)


def load_tags(redis_client: Any, rows: list[tuple[str, Any, int]], as_of: Any) -> None:
    """Load users' tags (user, first_seen, order_count) as of ``as_of`` into both stores, as
    funnel_user_tags would."""
    from funnel import wiring
    from funnel.core.run_info import RunInfo
    from funnel.storage.redis.segment_lock import SegmentLock

    run = RunInfo("funnel_user_tags", "scheduled__tags", as_of)
    lock = SegmentLock(redis_client, layout.TAGS_ID, {"run_id": "test"}, ttl_seconds=30, wait_seconds=1)
    with wiring.tag_loader(redis_client=redis_client) as loader:
        loader.load(run, as_of, lambda: iter([rows]), lock)


def bearer(token: str) -> dict[str, str]:
    """The header that sends ``token`` to the API."""
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop a server a test started: SIGTERM, then SIGKILL after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


#: The holder's value of segment ``s``'s lock in the storage tests (``segment_store``).
SEGMENT_LOCK = "holder-token"
