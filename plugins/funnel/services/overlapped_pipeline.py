"""Staging at the speed of the fetch: Hive, Redis and MySQL work at the same time.

The fetch runs on the calling thread; a Redis writer and a MySQL writer each run on a
thread of their own, fed through bounded queues (backpressure: the fetch waits when a
writer falls behind, so memory stays flat whatever the segment's size). The Redis writer
stages each batch and passes on the ids that entered; the MySQL writer gathers them into
large loads. The first error anywhere stops the other two and is raised on the calling
thread, after both writers have stopped.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

_DONE = object()
#: How long a blocked put or get waits before it looks whether another stage failed.
_TICK = 0.2


@dataclass
class Timings:
    """Seconds each stage was busy (the writers' are their own work, not their waiting)."""

    fetch: float = 0.0
    redis: float = 0.0
    mysql: float = 0.0
    wall: float = 0.0


@dataclass
class Staged:
    rows_read: int = 0
    skipped: int = 0  # NULL or empty ids
    mysql_rows: int = 0  # rows the MySQL writer inserted
    timings: Timings = field(default_factory=Timings)


class _Failed(Exception):
    """Another stage failed; this one stops quietly (the first error is the one raised)."""


class _Pipeline:
    def __init__(self, depth: int, cancelled: threading.Event) -> None:
        self.to_redis: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.to_mysql: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.cancelled = cancelled
        self.errors: list[BaseException] = []

    def fail(self, exc: BaseException) -> None:
        self.errors.append(exc)
        self.stop.set()

    def put(self, into: queue.Queue[object], item: object) -> None:
        while True:
            if self.stop.is_set():
                raise _Failed
            try:
                into.put(item, timeout=_TICK)
                return
            except queue.Full:
                continue

    def get(self, source: queue.Queue[object]) -> object:
        while True:
            if self.stop.is_set():
                raise _Failed
            try:
                return source.get(timeout=_TICK)
            except queue.Empty:
                continue


def stage_in_parallel(
    batches: Iterable[Sequence[object]],
    normalize: Callable[[Sequence[object]], tuple[list[str], int]],
    to_redis: Callable[[list[str]], list[str]],
    to_mysql: Callable[[list[str]], int],
    *,
    mysql_rows: int,
    depth: int,
    cancelled: threading.Event,
    check_cancelled: Callable[[], None],
    progress: Callable[[int, int], None],
) -> Staged:
    """Stream ``batches`` through ``normalize``, ``to_redis`` (returns the ids for MySQL) and
    ``to_mysql`` (called with up to about ``mysql_rows`` ids at a time; returns rows written)."""
    staged = Staged()
    timings = staged.timings
    pipeline = _Pipeline(depth, cancelled)
    started = time.monotonic()

    def redis_writer() -> None:
        try:
            while (item := pipeline.get(pipeline.to_redis)) is not _DONE:
                began = time.monotonic()
                onward = to_redis(item)  # type: ignore[arg-type]
                timings.redis += time.monotonic() - began
                if onward:
                    pipeline.put(pipeline.to_mysql, onward)
            pipeline.put(pipeline.to_mysql, _DONE)
        except _Failed:
            return
        except BaseException as exc:
            pipeline.fail(exc)

    def mysql_writer() -> None:
        pending: list[str] = []

        def flush() -> None:
            if pending:
                began = time.monotonic()
                staged.mysql_rows += to_mysql(pending)
                timings.mysql += time.monotonic() - began
                pending.clear()

        try:
            while (item := pipeline.get(pipeline.to_mysql)) is not _DONE:
                pending.extend(item)  # type: ignore[arg-type]
                if len(pending) >= mysql_rows:
                    flush()
            flush()
        except _Failed:
            return
        except BaseException as exc:
            pipeline.fail(exc)

    writers = [
        threading.Thread(target=redis_writer, name="funnel-stage-redis", daemon=True),
        threading.Thread(target=mysql_writer, name="funnel-stage-mysql", daemon=True),
    ]
    for writer in writers:
        writer.start()
    try:
        fetch_began = time.monotonic()
        for batch in batches:
            check_cancelled()
            ids, skipped = normalize(batch)
            timings.fetch += time.monotonic() - fetch_began
            before, staged.rows_read = staged.rows_read, staged.rows_read + len(batch)
            staged.skipped += skipped
            if ids:
                pipeline.put(pipeline.to_redis, ids)
            progress(before, staged.rows_read)
            fetch_began = time.monotonic()
        pipeline.put(pipeline.to_redis, _DONE)
    except _Failed:
        pass
    except BaseException as exc:
        pipeline.fail(exc)
    finally:
        for writer in writers:
            while writer.is_alive():
                writer.join(timeout=_TICK)
                if cancelled.is_set():
                    pipeline.stop.set()
    if pipeline.errors:
        raise pipeline.errors[0]
    timings.wall = time.monotonic() - started
    return staged
