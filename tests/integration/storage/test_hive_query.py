"""Streaming a query's first column out of the real HiveServer2: batches, Hive's errors, timeouts, cancel.

The local HiveServer2 is the Spark Thrift Server with ``incrementalCollect`` on: a query is
FINISHED at once and its rows are computed while they are fetched. Setting
``spark.sql.thriftServer.incrementalCollect=false`` for a session makes it behave like
Apache Hive (RUNNING while it computes, CANCELED after a cancel).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import freezable_proxy, silent_server

from funnel.core.errors import HiveQueryCancelled, HiveQueryError, HiveUnavailable
from funnel.storage.hive.hive_query import HiveQuery, cancel_operation, hive_error_message, stream_first_column
from funnel.storage.hooks import FunnelHiveHook

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

#: About 30 s of work for the server's one core, so only ever run to be cancelled.
SLOW_QUERY = "SELECT a.id FROM range(100000) a CROSS JOIN range(100000) b WHERE a.id + b.id < 0"
#: About 2 s.
SLOWISH_QUERY = "SELECT a.id FROM range(30000) a CROSS JOIN range(30000) b WHERE a.id + b.id < 0"
LIKE_APACHE_HIVE = {"spark.sql.thriftServer.incrementalCollect": "false"}


@pytest.mark.services
def test_first_column_arrives_in_batches_of_the_requested_size(hive_conn: Any) -> None:
    query = "SELECT IF(id = 3, NULL, id) AS user_id, 'ignored' AS other FROM range(25) ORDER BY id"
    batches = list(stream_first_column(hive_conn, query, batch_size=10))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert [v for b in batches for v in b] == [None if i == 3 else i for i in range(25)]


@pytest.mark.services
def test_empty_result_yields_no_batch(hive_conn: Any) -> None:
    assert list(stream_first_column(hive_conn, "SELECT id FROM range(0)", batch_size=10)) == []


@pytest.fixture
def hook() -> FunnelHiveHook:
    return FunnelHiveHook(hiveserver2_conn_id="funnel_hive", connect_timeout=5, read_timeout=30)


@pytest.fixture
def conn(hook: FunnelHiveHook) -> Iterator[Any]:
    with contextlib.closing(hook.get_conn()) as connection:
        yield connection


@pytest.mark.services
@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "SELECT user_id FROM funnel_test.no_such_table",
            "[TABLE_OR_VIEW_NOT_FOUND] The table or view `funnel_test`.`no_such_table` cannot be found. "
            "Verify the spelling and correctness of the schema and catalog. (SQLSTATE 42P01)",
        ),
        ("SELEC user_id", "[PARSE_SYNTAX_ERROR] Syntax error at or near 'SELEC'. SQLSTATE: 42601 (line 1, pos 0)"),
        (  # fails while the rows are fetched, not while the query runs
            "SELECT assert_true(id < 3, 'user id out of range') FROM range(10)",
            "[USER_RAISED_EXCEPTION] user id out of range SQLSTATE: P0001",
        ),
    ],
)
def test_a_failing_query_raises_hives_one_line_message(conn: Any, query: str, message: str) -> None:
    with pytest.raises(HiveQueryError) as caught:
        list(HiveQuery(conn, query, segment_id="lost", batch_size=10))
    assert str(caught.value) == f"segment 'lost': Hive query failed: {message}"
    assert not isinstance(caught.value, HiveQueryCancelled)


@pytest.mark.services
def test_a_blocking_execute_error_is_lifted_out_of_the_thrift_reply(conn: Any) -> None:
    cursor = conn.cursor()
    with pytest.raises(Exception, match=r"^TExecuteStatementResp\(status=TStatus\(statusCode=3") as caught:
        cursor.execute("SELECT user_id FROM funnel_test.no_such_table")  # pyhive's own, blocking call
    assert hive_error_message(caught.value) == (
        "[TABLE_OR_VIEW_NOT_FOUND] The table or view `funnel_test`.`no_such_table` cannot be found. "
        "Verify the spelling and correctness of the schema and catalog. (SQLSTATE 42P01)"
    )


def _point_funnel_hive_at(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_HIVE", f"hiveserver2://funnel@127.0.0.1:{port}/default?auth_mechanism=NONE")


def _timed(action: Callable[[], Any]) -> tuple[BaseException, float]:
    started = time.monotonic()
    with pytest.raises(Exception) as caught:  # noqa: PT011 (the callers check type and message)
        action()
    return caught.value, time.monotonic() - started


def test_a_server_that_accepts_and_never_answers_fails_within_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with silent_server() as port:
        _point_funnel_hive_at(monkeypatch, port)
        error, elapsed = _timed(FunnelHiveHook(connect_timeout=1, read_timeout=30).get_conn)
    assert isinstance(error, HiveUnavailable)
    assert str(error) == (
        f"HiveServer2 connection 'funnel_hive' at 127.0.0.1:{port} accepted the connection but did not answer "
        "the handshake in time (connect timeout 1 s). Fix: check that HiveServer2 is healthy there (it accepts "
        "connections and then stays silent: hung or overloaded), or raise [funnel] hive_connect_timeout_seconds "
        "if it is only slow"
    )
    assert 0.9 < elapsed < 2


def test_a_port_with_nothing_listening_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    _point_funnel_hive_at(monkeypatch, port)
    error, elapsed = _timed(FunnelHiveHook(connect_timeout=5).get_conn)
    assert isinstance(error, HiveUnavailable)
    assert str(error) == (
        f"HiveServer2 connection 'funnel_hive' at 127.0.0.1:{port} refused the connection (nothing listens on "
        "that port) (connect timeout 5 s). Fix: start HiveServer2, or correct the host and port of the Airflow "
        "connection"
    )
    assert elapsed < 0.5


@pytest.mark.services
def test_a_server_that_hangs_after_the_handshake_fails_the_next_call_after_the_read_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = FunnelHiveHook().connection
    with freezable_proxy(real.host, real.port) as proxy:
        port = proxy.port
        _point_funnel_hive_at(monkeypatch, port)
        conn = FunnelHiveHook(connect_timeout=5, read_timeout=1).get_conn()
        assert list(HiveQuery(conn, "SELECT id FROM range(3)", batch_size=10)) == [[0, 1, 2]]
        proxy.freeze()
        error, elapsed = _timed(lambda: list(HiveQuery(conn, "SELECT id FROM range(3)", segment_id="s", batch_size=10)))
        started = time.monotonic()
        conn.close()  # drops the socket: no CloseSession waiting for a second timeout
        closing = time.monotonic() - started
    assert isinstance(error, HiveUnavailable)
    assert re.fullmatch(
        rf"segment 's': HiveServer2 at 127\.0\.0\.1:{port} did not answer within 1 s \(query state SUBMITTED, "
        r"after \ds\)\. Fix: check HiveServer2's health; if it is only slow, raise "
        r"\[funnel\] hive_read_timeout_seconds",
        str(error),
    )
    assert 0.9 < elapsed < 2
    assert closing < 0.1


class _Streamer:
    """Consumes a HiveQuery on a thread of its own, as the refresh does, and notes how it ended."""

    def __init__(self, query: HiveQuery) -> None:
        self.query = query
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for _ in self.query:
                pass
        except BaseException as exc:
            self.error = exc
        self.ended_at = time.monotonic()

    def wait_for_state(self, *states: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.query.state not in states:
            assert time.monotonic() < deadline, f"query still in state {self.query.state}"
            time.sleep(0.05)


@contextlib.contextmanager
def _streaming(hook: FunnelHiveHook, query: HiveQuery) -> Iterator[_Streamer]:
    streamer = _Streamer(query)
    try:
        yield streamer
    finally:
        if streamer.thread.is_alive():  # the test failed: never leave the slow query running
            query.cancel(hook.get_conn)
        streamer.thread.join(10)


@pytest.mark.services
def test_cancel_from_another_connection_stops_a_query_whose_rows_are_being_computed(
    hook: FunnelHiveHook, conn: Any
) -> None:
    query = HiveQuery(conn, SLOW_QUERY, segment_id="slow", batch_size=10, poll_seconds=0.1)
    with _streaming(hook, query) as streamer:
        streamer.wait_for_state("FETCHING")
        time.sleep(0.5)
        started = time.monotonic()
        with contextlib.closing(hook.get_conn()) as other:
            assert cancel_operation(other, query.operation_handle) == "CLOSED"
        streamer.thread.join(5)
    assert isinstance(streamer.error, HiveQueryCancelled)
    assert re.fullmatch(
        r"segment 'slow': Hive query cancelled after \ds: \[SPARK_JOB_CANCELLED\] Job \d+ cancelled part of "
        r"cancelled job group [0-9a-f-]+ SQLSTATE: XXKDA",
        str(streamer.error),
    )
    assert streamer.ended_at is not None
    assert streamer.ended_at - started < 1.5


@pytest.mark.services
def test_cancel_from_another_connection_shows_as_canceled_state_while_hive_computes(
    hook: FunnelHiveHook, conn: Any
) -> None:
    query = HiveQuery(conn, SLOW_QUERY, segment_id="slow", batch_size=10, hive_conf=LIKE_APACHE_HIVE)
    with _streaming(hook, query) as streamer:
        streamer.wait_for_state("SUBMITTED")
        time.sleep(1)
        started = time.monotonic()
        with contextlib.closing(hook.get_conn()) as other:
            assert cancel_operation(other, query.operation_handle) == "CANCELED"
        streamer.thread.join(5)
    assert isinstance(streamer.error, HiveQueryCancelled)
    assert re.fullmatch(r"segment 'slow': Hive query cancelled after \ds \(state CANCELED\)", str(streamer.error))
    assert streamer.ended_at is not None
    assert streamer.ended_at - started < 1.5


@pytest.mark.services
def test_on_kill_path_cancel_stops_the_query_and_says_it_was_asked_to(
    hook: FunnelHiveHook, conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    query = HiveQuery(conn, SLOW_QUERY, segment_id="slow", batch_size=10, connect=hook.get_conn)
    with _streaming(hook, query) as streamer, caplog.at_level(logging.INFO, logger="funnel.storage.hive.hive_query"):
        streamer.wait_for_state("FETCHING")
        time.sleep(0.5)
        started = time.monotonic()
        assert query.cancel() == "CLOSED"
        streamer.thread.join(5)
    assert isinstance(streamer.error, HiveQueryCancelled)
    assert str(streamer.error).startswith("segment 'slow': Hive query cancelled after ")
    assert streamer.ended_at is not None
    assert streamer.ended_at - started < 1.5
    assert re.search(r"segment slow: Hive query cancelled \(CLOSED\) after \ds", caplog.text)


@pytest.mark.services
def test_a_cancel_request_stops_the_stream_at_the_next_batch(conn: Any) -> None:
    cancel = threading.Event()
    batches = iter(HiveQuery(conn, "SELECT id FROM range(100)", segment_id="s", batch_size=10, cancel_requested=cancel))
    assert next(batches) == list(range(10))
    cancel.set()
    with pytest.raises(HiveQueryCancelled, match=r"^segment 's': Hive query cancelled on request after 0s$"):
        next(batches)


@pytest.mark.services
def test_a_long_query_says_it_is_still_running(conn: Any, caplog: pytest.LogCaptureFixture) -> None:
    query = HiveQuery(conn, SLOWISH_QUERY, segment_id="slowish", batch_size=10, log_every_seconds=0.5)
    with caplog.at_level(logging.INFO, logger="funnel.storage.hive.hive_query"):
        assert list(query) == []
    lines = [r.getMessage() for r in caplog.records if "still running" in r.getMessage()]
    assert lines  # the rows are computed in the first fetch on this server, hence FETCHING
    expected = r"segment slowish: Hive query still running after \ds \(state FETCHING\)"
    assert all(re.fullmatch(expected, line) for line in lines), lines


@pytest.mark.services
def test_a_read_timeout_mid_query_cancels_the_query_from_a_new_connection(
    hook: FunnelHiveHook, caplog: pytest.LogCaptureFixture
) -> None:
    # On this server a fetch computes the rows, so a read timeout shorter than the query ends it;
    # dropping the socket alone would leave the server computing until the query is done.
    impatient = FunnelHiveHook(connect_timeout=5, read_timeout=1).get_conn()
    query = HiveQuery(impatient, SLOW_QUERY, segment_id="slow", batch_size=10, connect=hook.get_conn)
    with caplog.at_level(logging.INFO, logger="funnel.storage.hive.hive_query"):
        error, elapsed = _timed(lambda: list(query))
    impatient.close()
    assert isinstance(error, HiveUnavailable)
    assert "did not answer within 1 s (query state FETCHING" in str(error)
    assert elapsed < 2
    assert re.search(r"segment slow: Hive query cancelled \(CLOSED\) after \ds", caplog.text)
    with contextlib.closing(hook.get_conn()) as other, pytest.raises(HiveQueryError, match="Invalid OperationHandle"):
        cancel_operation(other, query.operation_handle)  # nothing left to cancel


@pytest.mark.services
def test_a_task_timeout_in_the_middle_of_a_fetch_cancels_the_query(
    hook: FunnelHiveHook, caplog: pytest.LogCaptureFixture
) -> None:
    # Airflow's execution_timeout: SIGALRM raises AirflowTaskTimeout wherever the task is, here in a
    # blocked FetchResults; the connection is then out of step, so the query is cancelled from another.
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.timeout import timeout

    conn = hook.get_conn()
    query = HiveQuery(conn, SLOW_QUERY, segment_id="slow", batch_size=10, connect=hook.get_conn)
    started = time.monotonic()
    with (
        caplog.at_level(logging.INFO, logger="funnel.storage.hive.hive_query"),
        pytest.raises(AirflowTaskTimeout),
        timeout(1),
    ):
        list(query)
    elapsed = time.monotonic() - started
    assert conn.broken
    conn.close()
    assert elapsed < 2
    assert re.search(r"segment slow: Hive query cancelled \(CLOSED\) after \ds", caplog.text)
