"""A lean Redis client for the API's hot paths: commands packed and replies parsed by hiredis.

redis-py's asyncio pipeline builds Python objects for every command and reply; for a
user's segments (three commands for each of a hundred segments) that alone cost about
3 ms of CPU per request. Here a whole pipeline is packed in one call, written as one
buffer and its replies parsed by hiredis as they arrive: a few microseconds a command.
It speaks only what the hot paths need (no pub/sub); everything else goes through redis-py.

On a Redis Cluster, ``RespCluster`` sends each command to the master serving its key's slot:
the commands of a request are grouped by node and each node gets one pipeline, all at once,
so a user's segments across many slots never needs a cross-slot command. Each command's key
is its first argument (true of every command the hot paths send).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from funnel.core.errors import RespError


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = hiredis.Reader()

    async def call(self, packed: bytes, replies: int) -> list[Any]:
        self.writer.write(packed)
        out: list[Any] = []
        while len(out) < replies:
            reply = self.parser.gets()
            if reply is False:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("Redis closed the connection")
                self.parser.feed(data)
                continue
            out.append(reply)
        return out

    def close(self) -> None:
        self.writer.close()


class RespPool:
    """Connections to one Redis, made as needed and reused (at most ``size`` kept idle)."""

    #: One Redis: the commands of a pipeline run in order, none of another client's between a
    #: read and the next on the same connection's turn.
    spans_masters = False

    def __init__(
        self,
        host: str,
        port: int,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        size: int = 16,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.timeout = timeout
        self.size = size
        self._idle: list[_Connection] = []

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)
        conn = _Connection(reader, writer)
        setup: list[Sequence[Any]] = []
        if self.password:
            setup.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            setup.append(("SELECT", self.db))
        if setup:
            await self._checked(conn, setup)
        return conn

    async def _checked(self, conn: _Connection, commands: Sequence[Sequence[Any]]) -> list[Any]:
        packed = b"".join(hiredis.pack_command(tuple(c)) for c in commands)
        replies = await asyncio.wait_for(conn.call(packed, len(commands)), self.timeout)
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise RespError(str(reply))
        return replies

    async def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run ``commands`` (tuples of command name and arguments) in one round trip."""
        conn = self._idle.pop() if self._idle else await self._connect()
        try:
            replies = await self._checked(conn, commands)
        except BaseException:
            conn.close()
            raise
        if len(self._idle) < self.size:
            self._idle.append(conn)
        else:
            conn.close()
        return replies

    async def close(self) -> None:
        while self._idle:
            with contextlib.suppress(Exception):
                self._idle.pop().close()


#: Keys whose slot ``RespCluster`` remembers (forgets them all when full).
_SLOT_CACHE_KEYS = 100_000


class RespCluster:
    """The same ``pipeline`` over a Redis Cluster: a ``RespPool`` per master, commands routed by
    their key's slot (from ``CLUSTER SLOTS``; read again once when a node answers ``MOVED``)."""

    #: Several masters: a pipeline's commands on two of them run in no set order.
    spans_masters = True

    def __init__(
        self,
        seeds: Sequence[tuple[str, int]],
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        size: int = 16,
    ) -> None:
        self.seeds = list(seeds)
        self.username, self.password = username, password
        self.timeout, self.size = timeout, size
        self._pools: dict[tuple[str, int], RespPool] = {}
        self._slots: list[tuple[str, int]] = []
        self._slot_of: dict[Any, int] = {}  # the slot of each key seen (the same segments' keys, request after request)

    def _pool(self, node: tuple[str, int]) -> RespPool:
        pool = self._pools.get(node)
        if pool is None:
            pool = self._pools[node] = RespPool(
                *node, username=self.username, password=self.password, timeout=self.timeout, size=self.size
            )
        return pool

    async def _read_slots(self) -> None:
        """The master of every slot, asked of the nodes known (the seeds first)."""
        problem: BaseException | None = None
        for node in dict.fromkeys([*self.seeds, *self._pools]):
            try:
                (ranges,) = await self._pool(node).pipeline([("CLUSTER", "SLOTS")])
            except (OSError, RespError) as exc:  # TimeoutError is an OSError
                problem = exc
                continue
            slots: list[tuple[str, int]] = [node] * REDIS_CLUSTER_HASH_SLOTS
            for first, last, master, *_replicas in ranges:
                owner = ((master[0].decode() if isinstance(master[0], bytes) else master[0]) or node[0], int(master[1]))
                slots[first : last + 1] = [owner] * (last - first + 1)
            self._slots = slots
            return
        raise ConnectionError(f"no Redis Cluster node answered CLUSTER SLOTS ({problem})")

    async def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run ``commands`` with one pipeline per master they touch, in parallel; replies in order."""
        if not self._slots:
            await self._read_slots()
        for attempt in (1, 2):
            groups: dict[tuple[str, int], list[int]] = {}
            slot_of, slots = self._slot_of, self._slots
            for index, command in enumerate(commands):
                key = command[1]
                slot = slot_of.get(key)
                if slot is None:
                    if len(slot_of) >= _SLOT_CACHE_KEYS:
                        slot_of.clear()
                    slot = slot_of[key] = key_slot(key.encode() if isinstance(key, str) else key)
                groups.setdefault(slots[slot], []).append(index)
            try:
                if len(groups) == 1:  # one master: the commands as they are, no task
                    (node,) = groups
                    return await self._pool(node).pipeline(commands)
                answers = await asyncio.gather(
                    *(self._pool(node).pipeline([commands[i] for i in indexes]) for node, indexes in groups.items())
                )
            except RespError as exc:
                if attempt == 1 and str(exc).startswith(("MOVED", "ASK", "CLUSTERDOWN")):
                    await self._read_slots()  # the slots moved: ask again, then try once more
                    continue
                raise
            replies: list[Any] = [None] * len(commands)
            for indexes, answer in zip(groups.values(), answers, strict=True):
                for index, reply in zip(indexes, answer, strict=True):
                    replies[index] = reply
            return replies
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
