"""``FunnelClient``: the API over ``httpx.Client`` (``funnel.client``)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from funnel.client.calls import ApiMethods, Call, Operations, client_options, parse, retry_after


class FunnelClient(ApiMethods):
    """funnel's API, synchronous. ``retries``: how many times a 429 or 503 is tried again;
    ``max_wait``: the most seconds all those waits may add up to."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        max_wait: float = 30.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retries, self.max_wait = retries, max_wait
        self._http = httpx.Client(transport=transport, **client_options(base_url, token, timeout, headers))

    def _send(self, call: Call) -> Any:
        waited = 0.0
        for attempt in range(self.retries + 1):
            response = self._http.request(**call.request())
            wait = retry_after(call, response)
            if wait is None or attempt == self.retries or waited + wait > self.max_wait:
                return parse(call, response)
            time.sleep(wait)
            waited += wait
        raise AssertionError("unreachable")

    def members(self, segment_id: str, page_size: int | None = None) -> Iterator[str]:
        """Every member, page after page; the pages all read the version the first one did."""
        cursor = None
        while True:
            page = self._send(Operations.member_page(segment_id, page_size, cursor))
            yield from page.members
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def changes(self, segment_id: str, change: str = "entered", page_size: int | None = None) -> Iterator[str]:
        """Who entered (or exited) in the latest refresh, page after page."""
        cursor = None
        while True:
            page = self._send(Operations.change_page(segment_id, change, page_size, cursor))
            yield from page.user_ids
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FunnelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
