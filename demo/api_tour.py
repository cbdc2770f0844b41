"""What a product service sees: a few answers from funnel's serving API, over HTTP.

Run by ``scripts/demo`` against the API it started: ``python demo/api_tour.py URL TOKEN
WRITE_TOKEN``. It asks through ``funnel.client``, as a product service would: typed answers
(the freshness fields are attributes), retries on 429 and 503, timeouts.
"""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from typing import Any

from funnel.client import FunnelClient


def show(label: str, answer: Any, keys: tuple[str, ...]) -> None:
    print(f"  {label:<46} " + ", ".join(f"{k}={getattr(answer, k)}" for k in keys))


def main(base: str, read: str, write: str) -> None:
    with FunnelClient(base, read, timeout=30) as funnel, FunnelClient(base, write, timeout=30) as service:
        german = funnel.is_member("german_users", "5")
        show(f"GET german_users/members/5 ({german.source})", german, ("member", "version"))
        user = next(funnel.members("two_orders", page_size=1))
        before = funnel.is_member("frequent_buyers", user)
        show(f"GET frequent_buyers/members/{user} (proxy)", before, ("member", "version"))
        mine = funnel.user_segments(user)
        print(f"  {'GET users/' + user + '/segments':<46} {', '.join(mine.segments)}")
        at = dt.datetime.now(dt.UTC)
        event = {"event_id": f"demo-{uuid.uuid4().hex}", "type": "order", "user_id": user, "at": at}
        posted = service.send_events([event])
        show(f"POST events: one order by {user}", posted, ("accepted", "duplicates"))
        again = service.send_events([event])
        show("POST the same event again (a retry)", again, ("accepted", "duplicates"))
        after = funnel.is_member("frequent_buyers", user)
        show(f"GET frequent_buyers/members/{user}, at once", after, ("member", "version"))
        if before.member or not after.member:
            raise SystemExit("the order did not move the user into frequent_buyers")


if __name__ == "__main__":
    main(*sys.argv[1:4])
