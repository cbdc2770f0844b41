"""The API's MySQL connections: a few, shared by its worker threads, one per call at a time.

Blocking MySQL work never runs on the event loop: ``MySqlPool.run(work)`` calls ``work(conn)``
in one of the pool's own threads (as many as connections: MySQL calls never wait for a thread
that other blocking work holds, nor hold one it needs) on a pooled connection. A connection
whose work raised is closed, not reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from funnel import settings, wiring

T = TypeVar("T")


class MySqlPool:
    """A few MySQL connections shared by the API's worker threads (one per call at a time)."""

    def __init__(self, size: int) -> None:
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._size = size
        self._made = 0
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(max_workers=size, thread_name_prefix="funnel-mysql")

    async def run(self, work: Callable[[Any], T]) -> T:
        """``work(conn)`` in one of the pool's threads, on a pooled connection."""
        return await asyncio.get_running_loop().run_in_executor(self._threads, functools.partial(self._run, work))

    def _run(self, work: Callable[[Any], T]) -> T:
        with self.connection() as conn:
            return work(conn)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        conn = self._take()
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            with self._lock:
                self._made -= 1
            raise
        self._idle.put(conn)

    def _take(self) -> Any:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._made < self._size:
                self._made += 1
                try:
                    return wiring.mysql_connection()
                except BaseException:
                    self._made -= 1
                    raise
        return self._idle.get(timeout=settings.MYSQL_CONNECT_TIMEOUT_SECONDS)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                conn.close()
