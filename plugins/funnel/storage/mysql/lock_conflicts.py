"""MySQL's lock conflicts, and trying a transaction again after one.

InnoDB rolls a transaction back when it is chosen as a deadlock's victim (1213) and, with
``innodb_rollback_on_timeout``, when it waited longer than ``innodb_lock_wait_timeout`` for a
row lock (1205; otherwise only the statement, and ``retried`` rolls back the rest). Writing the
same transaction again is then safe and usually succeeds. funnel's transactions take their row
locks in one order (sorted keys), so conflicts are rare; ``retried`` absorbs the rest, with one
warning line each, and raises ``LockConflict`` (a 503) only when they keep coming.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import MySQLdb

from funnel.core.errors import LockConflict

log = logging.getLogger(__name__)

T = TypeVar("T")

#: MySQL's lock conflicts by error code.
LOCK_CONFLICTS = {1213: "deadlock", 1205: "lock wait timeout"}

#: The pause before the next try grows with each (seconds, times a random factor in [0.5, 1)):
#: the other transaction usually commits within milliseconds.
_PAUSE_SECONDS = 0.005


def lock_conflict(exc: BaseException) -> str | None:
    """The lock conflict ``exc`` reports in words (``"deadlock"``), or None when it is another error."""
    if isinstance(exc, MySQLdb.OperationalError) and exc.args:
        return LOCK_CONFLICTS.get(exc.args[0])
    return None


def retried(conn: Any, transaction: Callable[[], T], retries: int, what: str) -> T:
    """``transaction()`` (which commits), tried again up to ``retries`` times when MySQL rolls it back
    on a lock conflict. Every other error passes through at once.

    ``what`` names the transaction in the warning line each conflict logs. After the last try,
    raises ``LockConflict``, naming the conflict and the fix, from MySQL's error.
    """
    tries = 0
    while True:
        try:
            return transaction()
        except MySQLdb.OperationalError as exc:
            conflict = lock_conflict(exc)
            if conflict is None:
                raise
            conn.rollback()  # 1205 may have rolled back the statement only
            tries += 1
            if tries > retries:
                raise LockConflict(
                    f"{what}: MySQL rolled it back on a lock conflict ({conflict}, {exc.args[0]}) {tries} time(s) in "
                    f"a row; nothing of it was written. Fix: send it again; if this keeps happening, look for a long "
                    f"transaction holding the same rows, or raise mysql_lock_retries (now {retries})"
                ) from exc
            log.warning("%s: MySQL %s (%s), trying again (%d of %d)", what, conflict, exc.args[0], tries, retries)
            time.sleep(_PAUSE_SECONDS * tries * random.uniform(0.5, 1.0))
