"""``AsyncFunnelClient``: the API over ``httpx.AsyncClient`` (``funnel.client``); every operation
of ``FunnelClient`` is a coroutine here, and the listings are async iterators."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from funnel.client.calls import ApiMethods, Call, Operations, client_options, parse, retry_after


class AsyncFunnelClient(ApiMethods):
    """funnel's API, asynchronous (``await client.is_member(...)``)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        max_wait: float = 30.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retries, self.max_wait = retries, max_wait
        self._http = httpx.AsyncClient(transport=transport, **client_options(base_url, token, timeout, headers))

    async def _send(self, call: Call) -> Any:
        waited = 0.0
        for attempt in range(self.retries + 1):
            response = await self._http.request(**call.request())
            wait = retry_after(call, response)
            if wait is None or attempt == self.retries or waited + wait > self.max_wait:
                return parse(call, response)
            await asyncio.sleep(wait)
            waited += wait
        raise AssertionError("unreachable")

    async def members(self, segment_id: str, page_size: int | None = None) -> AsyncIterator[str]:
        """Every member, page after page; the pages all read the version the first one did."""
        cursor = None
        while True:
            page = await self._send(Operations.member_page(segment_id, page_size, cursor))
            for user_id in page.members:
                yield user_id
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def changes(
        self, segment_id: str, change: str = "entered", page_size: int | None = None
    ) -> AsyncIterator[str]:
        """Who entered (or exited) in the latest refresh, page after page."""
        cursor = None
        while True:
            page = await self._send(Operations.change_page(segment_id, change, page_size, cursor))
            for user_id in page.user_ids:
                yield user_id
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncFunnelClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
