"""A lean Redis client for the API's hot paths: commands packed and replies parsed by hiredis.

redis-py's asyncio pipeline builds Python objects for every command and reply; for a
user's segments (three commands for each of a hundred segments) that alone cost about
3 ms of CPU per request. Here a whole pipeline is packed in one call, written as one
buffer and its replies parsed by hiredis as they arrive: a few microseconds a command.
It speaks only what the hot paths need (no pub/sub, no cluster redirection); everything
else goes through redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import hiredis


class RespError(Exception):
    """Redis answered a command with an error."""


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
