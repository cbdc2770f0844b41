"""The API's background executors, each on threads of its own: ``Restorer`` (a segment, or the
tags, back into Redis once, under its lock) and ``Previews`` (previews on Hive, at most
``preview_concurrency`` at once). Neither ever blocks the event loop or the request threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from funnel import wiring
from funnel.api.serving_metrics import RESTORES
from funnel.core.errors import Busy
from funnel.services.restore import restore_into_redis

if TYPE_CHECKING:
    from funnel.services.preview_values import PreviewRequest
    from funnel.services.previewer import Previewer

log = logging.getLogger(__name__)
T = TypeVar("T")


class Restorer:
    """Restores a segment (or the tags) into Redis once, in the background, under its lock."""

    def __init__(self) -> None:
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="funnel-restore")

    def schedule(self, segment_id: str) -> None:
        with self._lock:
            if segment_id in self._pending:
                return
            self._pending.add(segment_id)
        RESTORES.labels("started").inc()
        self._pool.submit(self._restore, segment_id)

    def _restore(self, segment_id: str) -> None:
        try:
            restore_into_redis(segment_id, wiring, wait_seconds=0, by="funnel.api")
            RESTORES.labels("done").inc()
        except Exception as exc:
            RESTORES.labels("failed").inc()
            log.warning(
                "funnel API: restoring %s into Redis failed (%s); the next request tries again", segment_id, exc
            )
        finally:
            with self._lock:
                self._pending.discard(segment_id)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Previews:
    """Previews (``funnel.services.previewer``) in threads of their own, at most ``slots`` at once: the Hive
    work never blocks the event loop and never takes the threads other requests use."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._running = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, slots), thread_name_prefix="funnel-preview")
        self._redis: Any = None
        self._redis_lock = threading.Lock()  # not the slots' lock: the event loop never waits on a connect

    async def run(self, request: PreviewRequest) -> dict[str, Any]:
        """The preview's answer (``Preview.to_dict()``); ``Busy`` when ``slots`` previews are running."""
        return await self.call(lambda previewer: previewer.preview(request).to_dict())

    async def call(self, work: Callable[[Previewer], T]) -> T:
        """``work(previewer)`` in a preview slot (a definition saved after its preview, say);
        ``Busy`` when ``slots`` previews are running."""
        with self._lock:
            if self._running >= self.slots:
                raise Busy(
                    f"{self._running} previews are running, as many as preview_concurrency ({self.slots}) allows; "
                    "try again when one has finished, or raise [funnel] preview_concurrency"
                )
            self._running += 1
        try:
            future = self._pool.submit(self._with_previewer, work)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _future: object) -> None:
        with self._lock:
            self._running -= 1

    def _with_previewer(self, work: Callable[[Previewer], T]) -> T:
        with self._redis_lock:
            if self._redis is None:
                self._redis = wiring.redis_client()
            client = self._redis
        with wiring.previewer(redis=client) as previewer:
            return work(previewer)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.close()
