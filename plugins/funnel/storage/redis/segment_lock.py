"""One refresh per segment at a time: a Redis lock held on a short, often renewed lease.

The lock key lives in the segment's hash slot, so the Redis swap can check it in the
same script. Its value names the holder (JSON: DAG, run, try, host, pid, since), so a
waiting refresh can say who holds it. A background thread renews the lease every third
of its length while the holder works (a Hive query can run for long before its first
row); a holder that dies stops renewing, and the lock is free within one lease
(``lock_ttl_seconds``, 30 s by default), not minutes.

A later try of the same Airflow task instance (same DAG, run and segment, higher try
number) takes the lock over at once: by Airflow's rules the earlier try is dead. If it
is in fact still running somewhere, it can no longer swap: every swap checks the lock.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from typing import Any

from airflow.utils.net import get_hostname

from funnel.core.errors import LockLost, SegmentBusy
from funnel.storage import layout

log = logging.getLogger(__name__)

# KEYS: lock. ARGV: our value, lease ms, dag_id, run_id, try_number.
# 1: acquired; 0: held by another; the earlier holder's value: taken over from an earlier try
# of the same task instance.
_ACQUIRE_LUA = """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
local ok, held = pcall(cjson.decode, current)
if ok and type(held) == 'table' and held['dag_id'] == ARGV[3] and held['run_id'] == ARGV[4]
   and tonumber(held['try_number'] or 0) < tonumber(ARGV[5]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return current
end
return 0
"""
# Delete / extend only if the lock still holds our value (never someone else's lock).
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def holder_in_words(holder: dict[str, Any]) -> str:
    """A lock holder in words, for log lines and errors."""
    if not holder:
        return "another refresh (the lock was released meanwhile)"
    where = f", on {holder['host']} pid {holder['pid']}" if holder.get("host") else ""
    return (
        f"{holder.get('dag_id')}/{holder.get('run_id')} (try {holder.get('try_number')}, "
        f"since {holder.get('since')}{where})"
    )


class SegmentLock:
    """A per-segment Redis lock on a renewed lease; use as a context manager.

    :param holder: who holds it: ``dag_id``, ``run_id``, ``try_number`` (used for the
        takeover from an earlier try) and anything else worth showing to a waiting refresh.
    :param ttl_seconds: the lease; renewed every third of it while held.
    :param wait_seconds: how long ``acquire`` waits for another holder before ``SegmentBusy``.
    :param log_every_seconds: how often a waiting ``acquire`` says whom it waits for.
    """

    def __init__(
        self,
        client: Any,
        segment_id: str,
        holder: dict[str, Any],
        ttl_seconds: float,
        wait_seconds: float,
        poll_seconds: float = 0.5,
        log_every_seconds: float = 30.0,
    ) -> None:
        self.client = client
        self.segment_id = segment_id
        self.key = layout.lock_key(segment_id)
        # Airflow's name for this host ([core] hostname_callable), as in the task instance's
        # hostname, so a waiting refresh names the worker that holds the lock.
        self._holder = {"host": get_hostname(), "pid": os.getpid(), **holder}
        self.value = json.dumps({**self._holder, "token": uuid.uuid4().hex}, sort_keys=True, default=str)
        self.ttl_ms = max(int(ttl_seconds * 1000), 1)
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.log_every_seconds = log_every_seconds
        self._acquire = client.register_script(_ACQUIRE_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._renew = client.register_script(_RENEW_LUA)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        #: How long the last ``acquire`` waited for another holder (seconds; 0 when the lock was free).
        self.waited_seconds = 0.0

    def acquire(self) -> None:
        """Take the lock, waiting up to ``wait_seconds`` (and saying so) while another refresh holds it."""
        started = last_log = time.monotonic()
        args = [
            self.value,
            self.ttl_ms,
            str(self._holder.get("dag_id", "")),
            str(self._holder.get("run_id", "")),
            int(self._holder.get("try_number") or 0),
        ]
        while True:
            outcome = self._acquire(keys=[self.key], args=args)
            self.waited_seconds = time.monotonic() - started
            if isinstance(outcome, bytes | str):
                log.warning(
                    "segment %s: took the refresh lock over from %s, an earlier try of this task "
                    "(Airflow considers it ended; it can no longer swap)",
                    self.segment_id,
                    holder_in_words(_decode(outcome)),
                )
                break
            if outcome:
                break
            now = time.monotonic()
            waited = now - started
            if waited >= self.wait_seconds:
                holder = self.holder()
                raise SegmentBusy(self.segment_id, holder, waited, holder_in_words(holder))
            if now - last_log >= self.log_every_seconds:
                last_log = now
                log.info(
                    "segment %s: waiting for the refresh lock held by %s; waited %.0fs of %.0fs",
                    self.segment_id,
                    holder_in_words(self.holder()),
                    waited,
                    self.wait_seconds,
                )
            time.sleep(min(self.poll_seconds, max(self.wait_seconds - waited, 0.01)))
        self._stop.clear()
        self._renewer = threading.Thread(target=self._keep_renewing, name=f"funnel-lock-{self.segment_id}", daemon=True)
        self._renewer.start()

    def holder(self) -> dict[str, Any]:
        """Who holds the lock now (empty when nobody does)."""
        return _decode(self.client.get(self.key))

    def check(self) -> None:
        """Raise ``LockLost`` unless this refresh still holds the lock (call before swapping)."""
        if not self._renew(keys=[self.key], args=[self.value, self.ttl_ms]):
            raise LockLost(
                f"segment {self.segment_id!r}: the refresh lock expired or was taken over "
                f"(now held by {holder_in_words(self.holder())}); nothing was swapped. Fix: none needed if a "
                "newer try took over; otherwise retry, and if Redis was unreachable for long, check it"
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
        """Stop renewing and delete the lock if it is still ours; safe to call more than once."""
        self._stop.set()
        renewer, self._renewer = self._renewer, None
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join(timeout=5)
        try:
            self._release(keys=[self.key], args=[self.value])
        except Exception as exc:  # never hide the refresh's own outcome; the lease runs out anyway
            log.warning("funnel: could not release the lock of segment %s (%s); it expires", self.segment_id, exc)

    def __enter__(self) -> SegmentLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _decode(raw: bytes | str | None) -> dict[str, Any]:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}
