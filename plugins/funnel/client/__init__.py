"""``funnel.client``: funnel's serving API from Python, typed with the API's own answer models
(``funnel.api.answers``), sync (``FunnelClient``) and async (``AsyncFunnelClient``).

    from funnel.client import FunnelClient

    with FunnelClient("http://127.0.0.1:8081", token="...") as funnel:
        answer = funnel.is_member("big_spenders", "1001")
        answer.member, answer.version, answer.refreshed_at, answer.stale   # attributes, typed
        for user_id in funnel.members("big_spenders"):                    # every page, one version
            ...

A 429 or 503 is tried again after its ``Retry-After`` (at most ``retries`` times, never waiting
longer than ``max_wait`` seconds in all); every other 4xx and 5xx raises ``ApiError`` with the
status and the API's message (what was wrong and the fix). Each request has a ``timeout``.
"""

from funnel.client.async_client import AsyncFunnelClient
from funnel.client.calls import ApiError
from funnel.client.sync_client import FunnelClient

__all__ = ["ApiError", "AsyncFunnelClient", "FunnelClient"]
