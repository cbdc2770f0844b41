"""Connections to funnel's stores, through the providers' hooks.

``FunnelMySqlHook`` is the provider's ``MySqlHook`` with timeouts: the catalog is read at
DAG parse time, where a MySQL that hangs must not hang the DAG processor.

``FunnelHiveHook`` is the provider's ``HiveServer2Hook`` with timeouts: a HiveServer2 that
accepts connections and never answers must fail the task, not leave it silent for hours.
"""

from __future__ import annotations

import errno
import functools
import socket
from typing import TYPE_CHECKING, Any

from airflow.providers.apache.hive.hooks.hive import HiveServer2Hook
from airflow.providers.common.compat.sdk import conf
from airflow.providers.mysql.hooks.mysql import MySqlHook
from pyhive import exc as hive_exc
from thrift.transport.TSocket import TSocket
from thrift.transport.TTransport import TBufferedTransport, TTransportException

from funnel import settings
from funnel.core.errors import HiveUnavailable
from funnel.storage.hive.hive_query import hive_error_message

if TYPE_CHECKING:
    from pyhive import hive


class FunnelMySqlHook(MySqlHook):
    """``MySqlHook`` (mysqlclient) with utf8mb4 and optional connect/read timeouts in seconds."""

    def __init__(
        self,
        *args: Any,
        connect_timeout: int | None = None,
        read_timeout: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("mysql_conn_id", settings.MYSQL_CONN_ID)
        super().__init__(*args, **kwargs)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout

    def _get_conn_config_mysql_client(self, conn: Any) -> dict:
        config = super()._get_conn_config_mysql_client(conn)
        config.setdefault("charset", "utf8mb4")
        config.setdefault("use_unicode", True)
        if self.connect_timeout:
            config["connect_timeout"] = self.connect_timeout
        if self.read_timeout:
            config["read_timeout"] = self.read_timeout
            config["write_timeout"] = self.read_timeout
        return config


class FunnelHiveHook(HiveServer2Hook):
    """``HiveServer2Hook`` whose connections time out: ``connect_timeout`` seconds for the TCP
    connect, the SASL handshake and OpenSession, then ``read_timeout`` seconds for every later
    Thrift call (None: wait forever, as the provider does).

    The read timeout bounds each single call, so it must exceed the longest one: HiveServer2's
    GetOperationStatus long-polls for up to ``hive.server2.long.polling.timeout`` (5 s by
    default), and the Spark Thrift Server with ``spark.sql.thriftServer.incrementalCollect``
    computes the rows while they are fetched, so a FetchResults can last as long as the query.
    """

    def __init__(
        self, *args: Any, connect_timeout: float | None = None, read_timeout: float | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("hiveserver2_conn_id", settings.HIVE_CONN_ID)
        super().__init__(*args, **kwargs)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout

    def get_conn(self, schema: str | None = None) -> hive.Connection:
        """A pyhive connection (a ``hive.Connection``) over a socket with this hook's timeouts.

        The Airflow connection is read as ``HiveServer2Hook.get_conn`` reads it (auth_mechanism
        from the extras, ``airflow`` as the user of an anonymous NONE login, Kerberos under
        ``[core] security = kerberos``), once per hook: ``on_kill`` can reuse the hook of
        ``execute`` without another lookup. Raises ``HiveUnavailable`` naming the connection,
        host:port, the timeout and the fix when no session can be opened.
        """
        db = self.connection
        auth_mechanism = db.extra_dejson.get("auth_mechanism", "NONE")
        username = db.login
        if auth_mechanism == "NONE" and username is None:
            username = "airflow"
        kerberos_service_name = None
        if conf.get("core", "security") == "kerberos":
            auth_mechanism = db.extra_dejson.get("auth_mechanism", "KERBEROS")
            kerberos_service_name = db.extra_dejson.get("kerberos_service_name", "hive")
        host = db.host or "localhost"
        port = int(db.port or 10000)
        where = f"HiveServer2 connection {self.get_conn_id()!r} at {host}:{port}"

        sock = HiveSocket(host, port)
        sock.set_timeout_seconds(self.connect_timeout)
        transport = _transport(
            sock,
            auth_mechanism,
            host=host,
            username=username,
            password=db.password or None,
            kerberos_service_name=kerberos_service_name,
            where=where,
        )
        try:
            conn = _connection_class()(
                sock, thrift_transport=transport, username=username, database=schema or db.schema or "default"
            )
        except (TTransportException, OSError, EOFError, hive_exc.Error) as exc:
            raise HiveUnavailable(_connect_failure(where, exc, self.connect_timeout)) from exc
        sock.set_timeout_seconds(self.read_timeout)
        return conn


class HiveSocket(TSocket):
    """A Thrift socket whose timeout error says how long it waited, and which remembers
    that a call failed half-way (the byte stream is then out of step: close, never reuse)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.timeout_seconds: float | None = None
        self.broken = False

    def set_timeout_seconds(self, seconds: float | None) -> None:
        self.timeout_seconds = seconds
        self.setTimeout(None if seconds is None else seconds * 1000)

    def read(self, sz: int) -> bytes:
        try:
            return super().read(sz)
        except TTransportException as exc:
            self.broken = True
            if self._timed_out(exc):
                raise self._timeout_error(exc) from exc
            raise
        except BaseException:  # a signal handler raised (task timeout) in the middle of a call
            self.broken = True
            raise

    def write(self, buff: bytes) -> None:
        try:
            super().write(buff)
        except TTransportException as exc:
            self.broken = True
            if self._timed_out(exc):
                raise self._timeout_error(exc) from exc
            raise
        except BaseException:
            self.broken = True
            raise

    def _timed_out(self, exc: TTransportException) -> bool:
        timed_out = exc.type == TTransportException.TIMED_OUT or isinstance(exc.inner, TimeoutError)
        return timed_out and self.timeout_seconds is not None

    def _timeout_error(self, exc: TTransportException) -> TTransportException:
        return TTransportException(
            type=TTransportException.TIMED_OUT,
            message=f"HiveServer2 at {self.host}:{self.port} did not answer within {self.timeout_seconds:g} s",
            inner=exc.inner,
        )


@functools.cache
def _connection_class() -> type[hive.Connection]:
    """pyhive's ``Connection`` over a ``HiveSocket``: after a call failed half-way, closing it only
    drops the socket (HiveServer2 then closes the session and cancels its operations).

    Built on first use: ``pyhive.hive`` takes 0.2 s to import, and this module is imported at
    DAG parse time (the catalog's MySQL hook).
    """
    from pyhive import hive

    class HiveConnection(hive.Connection):
        def __init__(self, sock: HiveSocket, **kwargs: Any) -> None:
            self.socket = sock
            super().__init__(**kwargs)

        @property
        def broken(self) -> bool:
            """A Thrift call failed half-way: the connection cannot be used any more."""
            return self.socket.broken

        def close(self) -> None:
            if self.broken:
                self._transport.close()
                return
            try:
                super().close()
            finally:
                self._transport.close()

    return HiveConnection


def _transport(
    sock: HiveSocket,
    auth_mechanism: str,
    *,
    host: str,
    username: str | None,
    password: str | None,
    kerberos_service_name: str | None,
    where: str,
) -> Any:
    """The Thrift transport pyhive's ``Connection`` would build for this auth mechanism."""
    if auth_mechanism == "NOSASL":
        return TBufferedTransport(sock)
    if auth_mechanism not in ("NONE", "LDAP", "CUSTOM", "KERBEROS"):
        raise HiveUnavailable(
            f"{where}: auth_mechanism {auth_mechanism!r} is not supported. Fix: set the connection's extra "
            "auth_mechanism to the server's hive.server2.authentication: NONE, NOSASL, LDAP, CUSTOM or KERBEROS"
        )
    import thrift_sasl
    from pyhive.hive import get_installed_sasl

    if auth_mechanism == "KERBEROS":
        sasl_auth = "GSSAPI"
    else:
        sasl_auth = "PLAIN"
        if password is None:
            password = "x"  # PLAIN needs a non-empty password, even when the server ignores it (NONE)

    def sasl_client() -> Any:
        return get_installed_sasl(
            host=host, sasl_auth=sasl_auth, service=kerberos_service_name, username=username, password=password
        )

    return thrift_sasl.TSaslClientTransport(sasl_client, sasl_auth, sock)


def _connect_failure(where: str, exc: BaseException, timeout: float | None) -> str:
    """Why no session could be opened, and what to do about it."""
    limit = "no connect timeout" if timeout is None else f"connect timeout {timeout:g} s"
    inner = getattr(exc, "inner", None)
    if isinstance(exc, TTransportException) and exc.type == TTransportException.TIMED_OUT:
        problem = "accepted the connection but did not answer the handshake in time"
        fix = (
            "check that HiveServer2 is healthy there (it accepts connections and then stays silent: hung or "
            "overloaded), or raise [funnel] hive_connect_timeout_seconds if it is only slow"
        )
    elif isinstance(inner, ConnectionRefusedError) or getattr(inner, "errno", None) == errno.ECONNREFUSED:
        problem = "refused the connection (nothing listens on that port)"
        fix = "start HiveServer2, or correct the host and port of the Airflow connection"
    elif isinstance(inner, TimeoutError):
        problem = "did not accept the TCP connection in time"
        fix = "check the host, the port and any firewall between the worker and HiveServer2"
    elif isinstance(inner, socket.gaierror):
        problem = "has a host name that does not resolve"
        fix = "correct the host of the Airflow connection"
    elif isinstance(exc, hive_exc.Error):
        problem = f"refused the session: {hive_error_message(exc)}"
        fix = "check the login and the schema (the database must exist) of the Airflow connection"
    else:
        problem = f"failed during the handshake: {hive_error_message(exc)}"
        fix = (
            "check that the connection's extra auth_mechanism matches the server's hive.server2.authentication "
            "(NONE is SASL PLAIN; NOSASL is not), and its login and password"
        )
    return f"{where} {problem} ({limit}). Fix: {fix}"
