"""What a product service sees: a few answers from funnel's serving API, over HTTP.

Run by ``scripts/demo`` against the API it started: ``python demo/api_tour.py URL TOKEN
WRITE_TOKEN``. Only the standard library: any client that speaks HTTP and JSON will do.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import urllib.request
import uuid


def call(base: str, token: str, path: str, body: object = None) -> tuple[dict, str]:
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response), response.headers.get("X-Funnel-Source", "-")


def show(label: str, answer: dict, keys: tuple[str, ...]) -> None:
    print(f"  {label:<46} " + ", ".join(f"{k}={answer[k]}" for k in keys))


def main(base: str, read: str, write: str) -> None:
    german, source = call(base, read, "/v1/segments/german_users/members/5")
    show(f"GET german_users/members/5 ({source})", german, ("member", "version"))
    listed, _ = call(base, read, "/v1/segments/two_orders/members?limit=1")
    user = listed["members"][0]
    before, _ = call(base, read, f"/v1/segments/frequent_buyers/members/{user}")
    show(f"GET frequent_buyers/members/{user} (proxy)", before, ("member", "version"))
    mine, _ = call(base, read, f"/v1/users/{user}/segments")
    print(f"  {'GET users/' + user + '/segments':<46} {', '.join(mine['segments'])}")
    event = {
        "event_id": f"demo-{uuid.uuid4().hex}",
        "type": "order",
        "user_id": user,
        "at": dt.datetime.now(dt.UTC).isoformat(),
    }
    posted, _ = call(base, write, "/v1/events", {"events": [event]})
    show(f"POST events: one order by {user}", posted, ("accepted", "duplicates"))
    again, _ = call(base, write, "/v1/events", {"events": [event]})
    show("POST the same event again (a retry)", again, ("accepted", "duplicates"))
    after, _ = call(base, read, f"/v1/segments/frequent_buyers/members/{user}")
    show(f"GET frequent_buyers/members/{user}, at once", after, ("member", "version"))
    if before["member"] or not after["member"]:
        raise SystemExit("the order did not move the user into frequent_buyers")


if __name__ == "__main__":
    main(*sys.argv[1:4])
