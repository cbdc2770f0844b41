"""One refresh per segment at a time: a Redis lock with an expiry.

The lock key lives in the segment's hash slot. Its value names the holder (JSON), so a
waiting refresh can say who holds it. A background thread renews the expiry while the
holder works (a Hive query can run for long before its first row); if the holder dies,
the lock expires after ``ttl_seconds`` and the next refresh proceeds. Before swapping,
the holder checks it still holds the lock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

from funnel import layout
from funnel.errors import FunnelError

log = logging.getLogger(__name__)

# Delete / extend only if the lock still holds our token (never someone else's lock).
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class SegmentBusy(FunnelError):
    """Another refresh of the same segment holds the lock."""

    def __init__(self, segment_id: str, holder: dict[str, Any], waited_seconds: float) -> None:
        self.segment_id = segment_id
        self.holder = holder
        super().__init__(
            f"segment {segment_id!r} is being refreshed by {holder.get('dag_id')}/{holder.get('run_id')} "
            f"(try {holder.get('try_number')}, since {holder.get('since')}); waited {waited_seconds:.0f}s"
        )


class LockLost(FunnelError):
    """The lock expired or was taken over while this refresh still worked; it must not swap."""


class SegmentLock:
    """A per-segment Redis lock; use as a context manager."""

    def __init__(
        self,
        client: Any,
        segment_id: str,
        holder: dict[str, Any],
        ttl_seconds: int,
        wait_seconds: float,
        poll_seconds: float = 1.0,
    ) -> None:
        self.client = client
        self.segment_id = segment_id
        self.key = layout.lock_key(segment_id)
        self.value = json.dumps({**holder, "token": uuid.uuid4().hex}, sort_keys=True, default=str)
        self.ttl_ms = int(ttl_seconds * 1000)
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self._release = client.register_script(_RELEASE_LUA)
        self._renew = client.register_script(_RENEW_LUA)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> None:
        started = time.monotonic()
        while not self.client.set(self.key, self.value, nx=True, px=self.ttl_ms):
            waited = time.monotonic() - started
            if waited >= self.wait_seconds:
                raise SegmentBusy(self.segment_id, self.holder(), waited)
            time.sleep(min(self.poll_seconds, max(self.wait_seconds - waited, 0.01)))
        self._stop.clear()
        self._renewer = threading.Thread(target=self._keep_renewing, name=f"funnel-lock-{self.segment_id}", daemon=True)
        self._renewer.start()

    def holder(self) -> dict[str, Any]:
        raw = self.client.get(self.key)
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return {}

    def check(self) -> None:
        """Raise ``LockLost`` unless this refresh still holds the lock (call before swapping)."""
        if not self._renew(keys=[self.key], args=[self.value, self.ttl_ms]):
            raise LockLost(
                f"segment {self.segment_id!r}: the refresh lock expired or was taken over; "
                "nothing was swapped. Fix: retry; if Redis was unreachable for long, check it"
            )

    def _keep_renewing(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self._renew(keys=[self.key], args=[self.value, self.ttl_ms]):
                    log.warning("funnel: lost the refresh lock of segment %s", self.segment_id)
                    return
            except Exception as exc:  # Redis blips: try again at the next tick
                log.warning("funnel: could not renew the lock of segment %s (%s)", self.segment_id, exc)

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        try:
            self._release(keys=[self.key], args=[self.value])
        except Exception as exc:  # never hide the refresh's own outcome; the lock expires anyway
            log.warning("funnel: could not release the lock of segment %s (%s); it expires", self.segment_id, exc)

    def __enter__(self) -> SegmentLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
