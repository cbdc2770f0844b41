"""One webhook POST: the signed body to the receiver, with connect and read timeouts.

Redirects are not followed (a 3xx is a failure, named in the reason): a POST body must not
be dropped or re-sent elsewhere silently.

With ``refuse_private`` (``[funnel] webhook_refuse_private``) the receiver's host is resolved
once per attempt, refused when any of its addresses is loopback, private or link-local
(``funnel.core.webhook_subscription.private_receiver``), and the connection goes to the
addresses checked, never to a second resolution of the name: a DNS answer that changes between
the check and the connection (a rebind) cannot slip through. The Host header, and for https
the SNI name and the certificate check, still use the host's name. Proxies from the
environment (``http_proxy``) are not used then: a proxy would resolve the name itself.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from funnel.core.webhook_batches import delivery_id
from funnel.core.webhook_signing import sign
from funnel.core.webhook_subscription import PRIVATE_RECEIVER_FIX, private_receiver

#: How much of a failed response's body the reason keeps.
EXCERPT_CHARS = 200
USER_AGENT = "funnel-webhooks/1"


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: ``ok`` (2xx) or the reason it failed, in words."""

    ok: bool
    reason: str = ""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def headers(segment_id: str, version: int, batch: int, secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one delivery: idempotency key, timestamp, signature."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Funnel-Delivery": delivery_id(segment_id, version, batch),
        "X-Funnel-Timestamp": str(timestamp),
        "X-Funnel-Signature": sign(secret, timestamp, body),
    }


def post(url: str, body: bytes, header_map: dict[str, str], timeout_seconds: float, refuse_private: bool) -> Outcome:
    """POST ``body``; never raises for what the receiver or the network did. With
    ``refuse_private``, a receiver resolving to a loopback, private or link-local address is a
    failed attempt that sends nothing, and the connection is pinned to the addresses checked."""
    if not refuse_private:
        return _post(_OPENER, url, body, header_map, timeout_seconds)
    urllib.request.Request(url)  # a URL urllib cannot send fails as it would unchecked (ValueError)
    host = urlsplit(url).hostname or ""
    try:
        addresses = resolve(host)
    except OSError as exc:
        return Outcome(False, f"cannot reach {_origin(url)}: {host!r} does not resolve ({exc})")
    refused = private_receiver(host, addresses)
    if refused is not None:
        return Outcome(False, f"refused, nothing was sent: the URL {refused}. Fix: {PRIVATE_RECEIVER_FIX}")
    return post_pinned(url, body, header_map, timeout_seconds, addresses)


def post_pinned(
    url: str, body: bytes, header_map: dict[str, str], timeout_seconds: float, addresses: Sequence[str]
) -> Outcome:
    """POST ``body`` over a connection to one of ``addresses`` (checked beforehand, tried in
    order), never resolving the URL's host again; the host still names the Host header, and for
    https the SNI name and the certificate check. No proxy, no redirects."""
    return _post(_pinned_opener(addresses), url, body, header_map, timeout_seconds)


def _post(
    opener: urllib.request.OpenerDirector, url: str, body: bytes, header_map: dict[str, str], timeout_seconds: float
) -> Outcome:
    request = urllib.request.Request(url, data=body, headers=header_map, method="POST")
    try:
        with opener.open(request, timeout=timeout_seconds) as response:
            response.read(EXCERPT_CHARS)
            status = response.status
    except urllib.error.HTTPError as exc:
        try:
            excerpt = exc.read(EXCERPT_CHARS).decode("utf-8", "replace").strip()
        except Exception:
            excerpt = ""
        shown = f": {excerpt}" if excerpt else ""
        return Outcome(False, f"HTTP {exc.code} {exc.reason}{shown}"[: EXCERPT_CHARS + 40])
    except urllib.error.URLError as exc:
        return Outcome(False, f"cannot reach {_origin(url)}: {exc.reason}")
    except (TimeoutError, OSError) as exc:
        return Outcome(False, f"cannot reach {_origin(url)}: {type(exc).__name__}: {exc}")
    if 200 <= status < 300:
        return Outcome(True)
    return Outcome(False, f"HTTP {status} (not 2xx)")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to now (an IP literal: itself), in the resolver's order,
    each once. Raises ``OSError`` when it does not resolve."""
    found: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM):
        address = str(sockaddr[0])
        if address not in found:
            found.append(address)
    if not found:
        raise OSError(f"no address for {host!r}")
    return found


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP connection to addresses checked beforehand: the host's name is not resolved again
    (it still names the Host header, and for https the SNI name and the certificate check)."""

    addresses: tuple[str, ...] = ()

    def connect(self) -> None:
        failure: OSError | None = None
        for address in self.addresses:  # in the resolver's order, as socket.create_connection tries them
            try:
                self.sock = socket.create_connection((address, self.port), self.timeout, self.source_address)
            except OSError as exc:
                failure = exc
                continue
            with contextlib.suppress(OSError):  # as HTTPConnection.connect: headers and body go out at once
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return
        raise failure or OSError(f"no address to connect to for {self.host!r}")


class _PinnedHTTPSConnection(http.client.HTTPSConnection, _PinnedConnection):
    """``HTTPSConnection.connect`` opens the socket with ``_PinnedConnection.connect``, then wraps it
    in TLS for ``self.host`` (the name): the certificate is checked against the name."""


def _pinned(connection: type[_PinnedConnection], addresses: tuple[str, ...], host: str, **kwargs: Any) -> Any:
    made = connection(host, **kwargs)
    made.addresses = addresses
    return made


class _PinnedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, addresses: tuple[str, ...]) -> None:
        super().__init__()
        self._addresses = addresses

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(functools.partial(_pinned, _PinnedConnection, self._addresses), req)


class _PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, addresses: tuple[str, ...]) -> None:
        super().__init__()
        self._addresses = addresses

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(
            functools.partial(_pinned, _PinnedHTTPSConnection, self._addresses), req, context=self._context
        )


def _pinned_opener(addresses: Sequence[str]) -> urllib.request.OpenerDirector:
    """http and https to ``addresses`` only: none of ``build_opener``'s proxy, ftp or file handlers."""
    pinned = tuple(addresses)
    opener = urllib.request.OpenerDirector()
    for handler in (
        _PinnedHTTPHandler(pinned),
        _PinnedHTTPSHandler(pinned),
        _NoRedirects(),
        urllib.request.HTTPDefaultErrorHandler(),  # a status that is not 2xx raises HTTPError
        urllib.request.HTTPErrorProcessor(),
        urllib.request.UnknownHandler(),  # any other scheme: URLError "unknown url type"
    ):
        opener.add_handler(handler)
    return opener
