"""Stream a segment query's first column out of HiveServer2 in batches, observably and cancellably.

Never ``get_records``: a segment can hold tens of millions of users, so rows are fetched
``batch_size`` at a time with the cursor's ``arraysize`` set to match.

A ``HiveQuery`` submits its query asynchronously and polls it, so a long query says in the
log that it is still running, stops when asked (a ``threading.Event``), and exposes its
operation handle: ``cancel_operation`` stops it from another connection (the operator's
``on_kill`` runs while the task's own connection is busy). Hive's errors come out as
``HiveQueryError`` carrying Hive's own first line, not pyhive's Thrift repr.

``pyhive.hive`` and its Thrift types are imported on first use: this module is imported at
DAG parse time (by the operator module), where 0.2 s per parse is too much.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pyhive import exc as hive_exc
from thrift.transport.TTransport import TTransportException

from funnel.core.errors import HiveQueryCancelled, HiveQueryError, HiveUnavailable

logger = logging.getLogger(__name__)

#: Longest Hive message kept (Spark's first lines can run long).
MAX_MESSAGE_CHARS = 500

_JAVA_EXCEPTION = re.compile(r"^\*?(?:[\w$]+\.)+[\w$]*(?:Exception|Error|Throwable)\s*:\s*")
_WRAPPERS = re.compile(r"^(?:Error running query|Error while processing statement|Error executing query)\s*:\s*")
_DUPLICATED_CLASS = re.compile(r"^(\[[A-Z0-9_.]+\])\s*(?:[\w$]+\.)+[\w$]*(?:Exception|Error)\s*:\s*\1\s*")
_TRAILING_POSITION = re.compile(r":\d+:\d+$")
_GONE = re.compile(r"Invalid OperationHandle")
_CANCELLED = re.compile(r"cancel|Invalid OperationHandle", re.IGNORECASE)

_TRANSPORT_ERRORS = (TTransportException, OSError, EOFError)


def hive_error_message(exc: BaseException) -> str:
    """Hive's own message, lifted out of pyhive's ``OperationalError(<Thrift reply>)``.

    Takes the reply's ``errorMessage`` (an operation status in ERROR_STATE) or its
    ``TStatus.errorMessage`` (a failed call), drops the Java stack trace, the wrapper
    exceptions' class names and Spark's query plan, and keeps the first line that names the
    problem, with the SQLSTATE (and a non-zero error code) when the line does not already
    carry them. A transport timeout becomes "HiveServer2 did not answer within N s"; anything
    else is ``str(exc)``.
    """
    if isinstance(exc, hive_exc.Error) and exc.args and hasattr(exc.args[0], "thrift_spec"):
        reply = exc.args[0]
        status = getattr(reply, "status", None)
        message = getattr(reply, "errorMessage", None)
        sql_state = getattr(reply, "sqlState", None)
        error_code = getattr(reply, "errorCode", None)
        if not message and status is not None:
            # a reply with only the stack as info messages: "*Class:message:line:column", then frames
            message = status.errorMessage or _TRAILING_POSITION.sub("", next(iter(status.infoMessages or []), ""))
            sql_state, error_code = status.sqlState, status.errorCode
        if message:
            return _first_line(message, sql_state, error_code)
        state = getattr(reply, "operationState", None)
        return f"{type(reply).__name__} without a message" + (f" (state {_state_name(state)})" if state else "")
    if isinstance(exc, TTransportException):
        if exc.type == TTransportException.TIMED_OUT and "within" not in str(exc.message):
            return f"HiveServer2 did not answer in time ({exc.message})"
        if exc.type == TTransportException.END_OF_FILE:
            return f"HiveServer2 closed the connection ({exc.message})"
        return str(exc.message or exc)
    if isinstance(exc, TimeoutError):
        return f"HiveServer2 did not answer in time ({exc or 'socket timeout'})"
    return str(exc) or type(exc).__name__


def _first_line(message: str, sql_state: str | None, error_code: int | None) -> str:
    text = message.split("\n\tat ", 1)[0]  # the Java stack trace
    previous = None
    while text != previous:
        previous = text
        text = _WRAPPERS.sub("", _JAVA_EXCEPTION.sub("", text.lstrip()))
        text = _DUPLICATED_CLASS.sub(r"\1 ", text)
    line = next((part.strip() for part in text.splitlines() if part.strip()), message.strip())
    if len(line) > MAX_MESSAGE_CHARS:
        line = line[: MAX_MESSAGE_CHARS - 1].rstrip() + "…"
    if sql_state and "SQLSTATE" not in line:
        line += f" (SQLSTATE {sql_state})"
    if error_code and str(error_code) not in line:
        line += f" (error code {error_code})"
    return line


def _ttypes() -> Any:
    from TCLIService import ttypes

    return ttypes


def _state_name(state: int | None) -> str:
    """``RUNNING`` for TOperationState.RUNNING_STATE, and so on."""
    name = _ttypes().TOperationState._VALUES_TO_NAMES.get(state, str(state))
    return name.removesuffix("_STATE")


def cancel_operation(conn: Any, operation_handle: Any) -> str:
    """Stop a Hive operation from any connection to the same HiveServer2; return how it ended.

    ``CANCELED``: HiveServer2 cancelled it (the owner's next poll sees CANCELED_STATE, and may
    have closed it already).
    ``CLOSED``: it was already FINISHED, which the Spark Thrift Server reports at once with
    ``spark.sql.thriftServer.incrementalCollect`` (the rows are computed while they are
    fetched, and a cancel is ignored), so it was closed instead: that stops the Spark job and
    the owner's blocked fetch fails at once. Any other state (ERROR, CLOSED, ...) means it was
    not running and is left alone. Raises ``HiveQueryError`` with Hive's message when the
    server refuses (``Invalid OperationHandle``: it is already gone).
    """
    ttypes = _ttypes()
    client = conn.client
    _check(client.CancelOperation(ttypes.TCancelOperationReq(operationHandle=operation_handle)))
    status = client.GetOperationStatus(
        ttypes.TGetOperationStatusReq(operationHandle=operation_handle, getProgressUpdate=False)
    )
    if status.status.statusCode not in (0, 1) and _GONE.search(status.status.errorMessage or ""):
        return "CANCELED"  # its owner saw it cancelled and closed it already
    _check(status)
    state = status.operationState
    states = ttypes.TOperationState
    if state in (states.FINISHED_STATE, states.RUNNING_STATE, states.PENDING_STATE, states.INITIALIZED_STATE):
        closed = client.CloseOperation(ttypes.TCloseOperationReq(operationHandle=operation_handle))
        if not _GONE.search(closed.status.errorMessage or ""):  # else its owner closed it meanwhile
            _check(closed)
        return "CLOSED"
    return _state_name(state)


def _check(reply: Any) -> None:
    if reply.status.statusCode not in (0, 1):  # SUCCESS_STATUS, SUCCESS_WITH_INFO_STATUS
        raise HiveQueryError(
            f"cannot cancel the Hive operation: {hive_error_message(hive_exc.OperationalError(reply))}"
        )


class HiveQuery:
    """One segment query on HiveServer2: submitted asynchronously, watched, cancellable, streamed.

    ``batches()`` (or iterating the object) submits the query (after ``set k=v`` for each
    ``hive_conf`` item), polls its state every ``poll_seconds`` until FINISHED (HiveServer2 may
    hold each poll up to its long-polling timeout, 5 s by default), then yields the first
    column (or, with ``columns`` > 1, the first ``columns`` columns as tuples) in batches of
    ``batch_size`` rows. While it waits on Hive (polling or in a fetch:
    the Spark Thrift Server computes rows while they are fetched) a background thread logs
    ``segment X: Hive query still running after 120s (state RUNNING)`` every
    ``log_every_seconds`` (0: never).

    It raises ``HiveQueryError`` with Hive's message when the query fails or ends in another
    state than FINISHED, ``HiveQueryCancelled`` when it was cancelled (``cancel_requested`` set,
    ``cancel()``, or someone cancelling its operation), and ``HiveUnavailable`` when the
    connection fails (a read timeout). ``operation_handle`` is the running operation's handle
    (None until it is submitted), for ``cancel_operation`` on another connection.

    ``connect`` opens another connection to the same server (``FunnelHiveHook.get_conn``). With
    it, a query whose connection failed half-way (a read timeout, a signal) is cancelled from a
    new connection: the Spark Thrift Server keeps computing a query whose client went away.
    """

    def __init__(
        self,
        conn: Any,
        query: str,
        *,
        segment_id: str | None = None,
        batch_size: int,
        hive_conf: Mapping[str, str] | None = None,
        poll_seconds: float = 1.0,
        log_every_seconds: float = 60.0,
        cancel_requested: threading.Event | None = None,
        connect: Callable[[], Any] | None = None,
        log: Any = None,
        columns: int = 1,
    ) -> None:
        self.conn = conn
        self.columns = columns
        self.query = query
        self.segment_id = segment_id
        self.batch_size = batch_size
        self.hive_conf = dict(hive_conf or {})
        self.poll_seconds = poll_seconds
        self.log_every_seconds = log_every_seconds
        self.cancel_requested = cancel_requested if cancel_requested is not None else threading.Event()
        self.connect = connect
        self.log = log if log is not None else logger
        self.operation_handle: Any = None
        self.state = "NOT_STARTED"
        self.rows = 0
        self._waiting = False
        self._started_at: float | None = None
        self._used = False
        self._cancel_lock = threading.Lock()
        self._cancelled_elsewhere = False

    def __iter__(self) -> Iterator[list[Any]]:
        return self.batches()

    @property
    def elapsed(self) -> float:
        """Seconds since the query was submitted (0 before)."""
        return 0.0 if self._started_at is None else time.monotonic() - self._started_at

    def batches(self) -> Iterator[list[Any]]:
        """Run the query; yield its first column, ``batch_size`` values at a time."""
        if self._used:
            raise RuntimeError("a HiveQuery runs once; make a new one")
        self._used = True
        cursor = self.conn.cursor()
        heartbeat = _Heartbeat(self)
        transport_failed = False
        try:
            try:
                self._waiting = True
                heartbeat.start()
                self._submit(cursor)
                self._wait(cursor)
                self.state = "FETCHING"
                while True:
                    self._stop_if_requested(cursor)
                    self._waiting = True
                    rows = cursor.fetchmany(self.batch_size)
                    self._waiting = False
                    if not rows:
                        self.state = "DONE"
                        return
                    self.rows += len(rows)
                    yield [row[0] for row in rows] if self.columns == 1 else [row[: self.columns] for row in rows]
            except hive_exc.Error as exc:
                raise self._error(exc) from exc
            except _TRANSPORT_ERRORS as exc:
                transport_failed = True
                timed_out = isinstance(exc, TimeoutError) or getattr(exc, "type", None) == TTransportException.TIMED_OUT
                fix = (
                    "check HiveServer2's health; if it is only slow, raise [funnel] hive_read_timeout_seconds"
                    if timed_out
                    else "check HiveServer2's health (its log says why the connection ended)"
                )
                raise HiveUnavailable(
                    f"{self._label()}{hive_error_message(exc)} (query state {self.state}, after "
                    f"{self.elapsed:.0f}s). Fix: {fix}"
                ) from exc
        finally:
            self._waiting = False
            heartbeat.stop()
            if transport_failed or getattr(self.conn, "broken", False):
                # The connection failed or was interrupted (a task timeout) in the middle of a call: it
                # cannot close the operation, and the Spark Thrift Server would go on computing it.
                if self.state != "DONE":
                    self._cancel_elsewhere()
            else:
                self._close(cursor)

    def cancel(self, connect: Callable[[], Any] | None = None) -> str | None:
        """Stop the query from any thread (``on_kill``): set ``cancel_requested``, then cancel the
        running operation over a new connection from ``connect`` (default: the query's
        ``connect``), since the query's own connection may be blocked in a call. Returns what
        ``cancel_operation`` returned, or None when nothing was running, no ``connect`` was
        given, or the cancel failed (logged, never raised: a kill must go on)."""
        self.cancel_requested.set()
        return self._cancel_elsewhere(connect)

    def _cancel_elsewhere(self, connect: Callable[[], Any] | None = None) -> str | None:
        connect = connect or self.connect
        handle = self.operation_handle
        if connect is None or handle is None or self.state == "DONE":
            return None
        # Never blocks: on_kill runs in a signal handler, maybe on a thread that holds the lock.
        if self._cancelled_elsewhere or not self._cancel_lock.acquire(blocking=False):
            return None
        try:
            with contextlib.closing(connect()) as conn:
                outcome = cancel_operation(conn, handle)
            self._cancelled_elsewhere = True
        except Exception as exc:
            self.log.warning("%sHive query not cancelled: %s", self._label(quoted=False), hive_error_message(exc))
            return None
        finally:
            self._cancel_lock.release()
        self.log.info("%sHive query cancelled (%s) after %.0fs", self._label(quoted=False), outcome, self.elapsed)
        return outcome

    def _label(self, *, quoted: bool = True) -> str:
        if self.segment_id is None:
            return ""
        return f"segment {self.segment_id!r}: " if quoted else f"segment {self.segment_id}: "

    def _submit(self, cursor: Any) -> None:
        for key, value in self.hive_conf.items():
            cursor.execute(f"set {key}={value}")
        cursor.arraysize = self.batch_size
        self._stop_if_requested(cursor)
        self._started_at = time.monotonic()
        self.state = "SUBMITTED"
        cursor.execute(self.query, async_=True)
        self.operation_handle = cursor._operationHandle  # pyhive keeps it private; nothing else names it

    def _wait(self, cursor: Any) -> None:
        states = _ttypes().TOperationState
        waiting = (states.INITIALIZED_STATE, states.PENDING_STATE, states.RUNNING_STATE)
        while True:
            self._stop_if_requested(cursor)
            reply = cursor.poll(False)
            self.state = _state_name(reply.operationState)
            if reply.operationState == states.FINISHED_STATE:
                return
            if reply.operationState in waiting:
                self.cancel_requested.wait(self.poll_seconds)
                continue
            message = hive_error_message(hive_exc.OperationalError(reply))
            if reply.operationState == states.CANCELED_STATE:
                raise HiveQueryCancelled(
                    f"{self._label()}Hive query cancelled after {self.elapsed:.0f}s (state {self.state})"
                )
            if reply.operationState == states.ERROR_STATE:
                raise HiveQueryError(f"{self._label()}Hive query failed: {message}")
            raise HiveQueryError(f"{self._label()}Hive query ended in state {self.state}: {message}")

    def _stop_if_requested(self, cursor: Any) -> None:
        if not self.cancel_requested.is_set():
            return
        if self.operation_handle is not None:
            with contextlib.suppress(hive_exc.Error):  # cancelled or closed already by cancel()
                cursor.cancel()
        raise HiveQueryCancelled(f"{self._label()}Hive query cancelled on request after {self.elapsed:.0f}s")

    def _error(self, exc: hive_exc.Error) -> HiveQueryError:
        message = hive_error_message(exc)
        if self.cancel_requested.is_set() or (self.operation_handle is not None and _CANCELLED.search(message)):
            return HiveQueryCancelled(f"{self._label()}Hive query cancelled after {self.elapsed:.0f}s: {message}")
        return HiveQueryError(f"{self._label()}Hive query failed: {message}")

    def _close(self, cursor: Any) -> None:
        """Close the operation (CloseOperation also stops a query still computing)."""
        try:
            cursor.close()
        except Exception as exc:  # already closed or cancelled elsewhere: nothing left to free
            self.log.debug("%sclosing the Hive operation: %s", self._label(quoted=False), hive_error_message(exc))


class _Heartbeat:
    """Logs that a query is still running while it waits on Hive, every ``log_every_seconds``."""

    def __init__(self, query: HiveQuery) -> None:
        self.query = query
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.query.log_every_seconds and self.query.log_every_seconds > 0:
            self._thread = threading.Thread(target=self._run, name="funnel-hive-heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        query = self.query
        while not self._stop.wait(query.log_every_seconds):
            if query._waiting and query._started_at is not None:
                rows = f", {query.rows:,} rows read" if query.rows else ""
                query.log.info(
                    "%sHive query still running after %.0fs (state %s%s)",
                    query._label(quoted=False),
                    query.elapsed,
                    query.state,
                    rows,
                )


def stream_first_column(
    conn: Any, query: str, batch_size: int, hive_conf: Mapping[str, str] | None = None
) -> Iterator[list[Any]]:
    """Run ``query`` on a DB-API HiveServer2 connection; yield its first column in batches.

    A ``HiveQuery`` with the default poll and log intervals and no cancel request.
    """
    return HiveQuery(conn, query, batch_size=batch_size, hive_conf=hive_conf).batches()
