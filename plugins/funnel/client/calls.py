"""The API's operations as calls (method, path, query, body, answer model), shared by the sync
and the async client, and what a client does with an answer: parse it, raise ``ApiError``, or
wait and try again (``retry_after``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from funnel.api import answers
from funnel.core.errors import FunnelError

#: Where a retry's wait comes from when the answer has no ``Retry-After``.
DEFAULT_WAIT = 1.0


class ApiError(FunnelError):
    """An answer of 4xx or 5xx: its status and the API's message (``{"error": ...}``)."""

    def __init__(self, status: int, message: str, method: str, path: str) -> None:
        super().__init__(f"{method} {path}: {status}: {message}")
        self.http_status = status
        self.message = message


@dataclass(frozen=True)
class Call:
    """One request and the model of its answer."""

    method: str
    path: str
    model: Any
    params: Mapping[str, Any] = field(default_factory=dict)
    body: Any = None
    #: A 503 may be tried again: the request changes nothing twice (reads, events by event_id).
    retry_unavailable: bool = True
    headers: Mapping[str, str] = field(default_factory=dict)

    def request(self) -> dict[str, Any]:
        params = {k: v for k, v in self.params.items() if v is not None}
        return {"method": self.method, "url": self.path, "params": params, "json": self.body, "headers": self.headers}


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def parse(call: Call, response: httpx.Response) -> Any:
    """The answer as ``call.model``, or ``ApiError``."""
    if response.status_code >= 400:
        try:
            message = str(response.json().get("error", response.text))
        except ValueError:
            message = response.text[:500]
        raise ApiError(response.status_code, message, call.method, call.path)
    if call.model not in _ADAPTERS:
        _ADAPTERS[call.model] = TypeAdapter(call.model)
    return _ADAPTERS[call.model].validate_json(response.content)


def retry_after(call: Call, response: httpx.Response) -> float | None:
    """Seconds to wait before trying ``call`` again, or None when its answer is final."""
    if response.status_code == 429 or (response.status_code == 503 and call.retry_unavailable):
        raw = response.headers.get("retry-after", "")
        return float(raw) if raw.replace(".", "", 1).isdigit() else DEFAULT_WAIT
    return None


def _segment(segment_id: str) -> str:
    return f"/v1/segments/{quote(segment_id, safe='')}"


def _saving(preview: bool, force: bool) -> dict[str, str | None]:
    """The query of a definition's save: previewed unless ``preview`` is False; ``force``."""
    return {"preview": None if preview else "false", "force": "true" if force else None}


def _time(value: dt.datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime) else value


class Operations:
    """Every operation of the API as a ``Call``; the clients send them."""

    @staticmethod
    def ready() -> Call:
        return Call("GET", "/readyz", answers.Readiness, retry_unavailable=False)

    @staticmethod
    def access() -> Call:
        return Call("GET", "/v1/access", answers.Access)

    @staticmethod
    def segments(stale: bool | None = None, owner: str | None = None, labels: Sequence[str] = ()) -> Call:
        flag = None if stale is None else ("true" if stale else "false")
        params = {"stale": flag, "owner": owner, "label": list(labels) or None}
        return Call("GET", "/v1/segments", answers.SegmentList, params)

    @staticmethod
    def segment(segment_id: str) -> Call:
        return Call("GET", _segment(segment_id), answers.SegmentDetail)

    @staticmethod
    def add_segment(
        definition: Mapping[str, Any], comment: str | None = None, preview: bool = True, force: bool = False
    ) -> Call:
        body = {**definition, **({"comment": comment} if comment else {})}
        return Call(
            "POST", "/v1/segments", answers.SavedRevision, _saving(preview, force), body=body, retry_unavailable=False
        )

    @staticmethod
    def edit_segment(
        segment_id: str,
        changes: Mapping[str, Any],
        expect_revision: int | None = None,
        comment: str | None = None,
        preview: bool = True,
        force: bool = False,
        replace: bool = False,
    ) -> Call:
        body = {**changes, **({"comment": comment} if comment else {})}
        headers = {} if expect_revision is None else {"If-Match": f'"{int(expect_revision)}"'}
        method = "PUT" if replace else "PATCH"
        params = _saving(preview, force)
        return Call(method, _segment(segment_id), answers.SavedRevision, params, body=body, headers=headers)

    @staticmethod
    def retire_segment(segment_id: str, retire: bool = True, comment: str | None = None) -> Call:
        action = "retire" if retire else "restore"
        body = {"comment": comment} if comment else None
        return Call("POST", f"{_segment(segment_id)}:{action}", answers.SegmentRevision, body=body)

    @staticmethod
    def revisions(segment_id: str) -> Call:
        return Call("GET", _segment(segment_id) + "/revisions", answers.RevisionList)

    @staticmethod
    def dependents(segment_id: str) -> Call:
        return Call("GET", _segment(segment_id) + "/dependents", answers.Dependents)

    @staticmethod
    def versions(segment_id: str) -> Call:
        return Call("GET", _segment(segment_id) + "/versions", answers.VersionList)

    @staticmethod
    def runs(segment_id: str, limit: int | None = None) -> Call:
        return Call("GET", _segment(segment_id) + "/runs", answers.RunList, {"limit": limit})

    @staticmethod
    def is_member(segment_id: str, user_id: str, at: dt.datetime | str | None = None) -> Call:
        path = f"{_segment(segment_id)}/members/{quote(str(user_id), safe='')}"
        model = answers.Membership if at is None else answers.MembershipAt
        return Call("GET", path, model, {"at": _time(at)})

    @staticmethod
    def check(segment_id: str, user_ids: Sequence[str]) -> Call:
        body = {"user_ids": list(user_ids)}
        return Call("POST", _segment(segment_id) + "/members:check", answers.CheckAnswer, body=body)

    @staticmethod
    def member_page(segment_id: str, limit: int | None, cursor: str | None) -> Call:
        params = {"limit": limit, "cursor": cursor}
        return Call("GET", _segment(segment_id) + "/members", answers.MemberPage, params)

    @staticmethod
    def change_page(segment_id: str, change: str, limit: int | None, cursor: str | None) -> Call:
        params = {"type": change, "limit": limit, "cursor": cursor}
        return Call("GET", _segment(segment_id) + "/changes", answers.ChangePage, params)

    @staticmethod
    def user_segments(user_id: str) -> Call:
        return Call("GET", f"/v1/users/{quote(str(user_id), safe='')}/segments", answers.UserSegments)

    @staticmethod
    def user_history(
        user_id: str,
        segment_id: str | None = None,
        since: dt.datetime | str | None = None,
        until: dt.datetime | str | None = None,
        limit: int | None = None,
    ) -> Call:
        params = {"segment": segment_id, "since": _time(since), "until": _time(until), "limit": limit}
        return Call("GET", f"/v1/users/{quote(str(user_id), safe='')}/history", answers.UserHistory, params)

    @staticmethod
    def send_events(events: Iterable[Mapping[str, Any]]) -> Call:
        body = {"events": [{**event, "at": _time(event.get("at"))} for event in events]}
        return Call("POST", "/v1/events", answers.EventsResult, body=body)  # idempotent by event_id

    @staticmethod
    def preview(**fields: Any) -> Call:
        return Call("POST", "/v1/preview", answers.PreviewAnswer, body=fields)

    @staticmethod
    def subscribe(segment_id: str, url: str, secret: str | None = None, from_version: int | None = None) -> Call:
        body = {"segment_id": segment_id, "url": url, "secret": secret, "from_version": from_version}
        body = {k: v for k, v in body.items() if v is not None}
        return Call("POST", "/v1/webhooks", answers.NewWebhook, body=body, retry_unavailable=False)

    @staticmethod
    def webhooks() -> Call:
        return Call("GET", "/v1/webhooks", answers.WebhookList)

    @staticmethod
    def set_webhook_enabled(webhook_id: int, enabled: bool) -> Call:
        return Call("PATCH", f"/v1/webhooks/{int(webhook_id)}", answers.Webhook, body={"enabled": enabled})

    @staticmethod
    def remove_webhook(webhook_id: int) -> Call:
        return Call("DELETE", f"/v1/webhooks/{int(webhook_id)}", answers.RemovedWebhook, retry_unavailable=False)

    @staticmethod
    def deliveries(webhook_id: int, limit: int | None = None) -> Call:
        path = f"/v1/webhooks/{int(webhook_id)}/deliveries"
        return Call("GET", path, answers.WebhookDeliveries, {"limit": limit})


class ApiMethods:
    """The operations, each sending its ``Call`` through ``self._send`` (the async client's
    ``_send`` is a coroutine function, so there each method returns an awaitable of the same)."""

    def _send(self, call: Call) -> Any:
        raise NotImplementedError

    def ready(self) -> answers.Readiness:
        """``GET /readyz`` (503 raises ``ApiError``: not tried again)."""
        return self._send(Operations.ready())  # type: ignore[no-any-return]

    def access(self) -> answers.Access:
        """What this client's token may do (``scope``) and who its changes are recorded as."""
        return self._send(Operations.access())  # type: ignore[no-any-return]

    def segments(
        self, stale: bool | None = None, owner: str | None = None, labels: Sequence[str] = ()
    ) -> answers.SegmentList:
        return self._send(Operations.segments(stale, owner, labels))  # type: ignore[no-any-return]

    def segment(self, segment_id: str) -> answers.SegmentDetail:
        return self._send(Operations.segment(segment_id))  # type: ignore[no-any-return]

    def versions(self, segment_id: str) -> answers.VersionList:
        return self._send(Operations.versions(segment_id))  # type: ignore[no-any-return]

    def add_segment(
        self, definition: Mapping[str, Any], comment: str | None = None, preview: bool = True, force: bool = False
    ) -> answers.SavedRevision:
        """A new segment (``segment_id``, ``name``, ``kind``, ``query`` / ``rule`` / ``run_at``...),
        previewed first unless ``preview`` is False (``force``: past ``max_share_of_users``)."""
        return self._send(Operations.add_segment(definition, comment, preview, force))  # type: ignore[no-any-return]

    def edit_segment(
        self,
        segment_id: str,
        changes: Mapping[str, Any],
        expect_revision: int | None = None,
        comment: str | None = None,
        preview: bool = True,
        force: bool = False,
    ) -> answers.SavedRevision:
        """Change some fields; ``expect_revision``: refused (409) when someone changed it since."""
        call = Operations.edit_segment(segment_id, changes, expect_revision, comment, preview, force)
        return self._send(call)  # type: ignore[no-any-return]

    def replace_segment(
        self,
        segment_id: str,
        definition: Mapping[str, Any],
        expect_revision: int | None = None,
        comment: str | None = None,
        preview: bool = True,
        force: bool = False,
    ) -> answers.SavedRevision:
        """Replace the whole definition (``PUT``: a field not given is emptied)."""
        call = Operations.edit_segment(segment_id, definition, expect_revision, comment, preview, force, replace=True)
        return self._send(call)  # type: ignore[no-any-return]

    def retire_segment(self, segment_id: str, comment: str | None = None) -> answers.SegmentRevision:
        """Retire it: no task, its answers 410, its data kept ``change_history_days``."""
        return self._send(Operations.retire_segment(segment_id, True, comment))  # type: ignore[no-any-return]

    def restore_segment(self, segment_id: str, comment: str | None = None) -> answers.SegmentRevision:
        """Bring a retired segment back as it was."""
        return self._send(Operations.retire_segment(segment_id, False, comment))  # type: ignore[no-any-return]

    def revisions(self, segment_id: str) -> answers.RevisionList:
        return self._send(Operations.revisions(segment_id))  # type: ignore[no-any-return]

    def dependents(self, segment_id: str) -> answers.Dependents:
        return self._send(Operations.dependents(segment_id))  # type: ignore[no-any-return]

    def runs(self, segment_id: str, limit: int | None = None) -> answers.RunList:
        return self._send(Operations.runs(segment_id, limit))  # type: ignore[no-any-return]

    def is_member(self, segment_id: str, user_id: str, at: dt.datetime | str | None = None) -> Any:
        """``Membership`` now, or ``MembershipAt`` with ``at`` (from the membership history)."""
        return self._send(Operations.is_member(segment_id, user_id, at))

    def check(self, segment_id: str, user_ids: Sequence[str]) -> answers.CheckAnswer:
        return self._send(Operations.check(segment_id, user_ids))  # type: ignore[no-any-return]

    def user_segments(self, user_id: str) -> answers.UserSegments:
        return self._send(Operations.user_segments(user_id))  # type: ignore[no-any-return]

    def user_history(self, user_id: str, **filters: Any) -> answers.UserHistory:
        """``segment_id``, ``since``, ``until``, ``limit``."""
        return self._send(Operations.user_history(user_id, **filters))  # type: ignore[no-any-return]

    def send_events(self, events: Iterable[Mapping[str, Any]]) -> answers.EventsResult:
        """Events as dicts (``event_id``, ``type``, ``user_id``, ``at``: a datetime or its text)."""
        return self._send(Operations.send_events(events))  # type: ignore[no-any-return]

    def preview(self, **fields: Any) -> answers.PreviewAnswer:
        """``segment_id``, ``query``, ``rule``, ``kind``."""
        return self._send(Operations.preview(**fields))  # type: ignore[no-any-return]

    def subscribe(
        self, segment_id: str, url: str, secret: str | None = None, from_version: int | None = None
    ) -> answers.NewWebhook:
        return self._send(Operations.subscribe(segment_id, url, secret, from_version))  # type: ignore[no-any-return]

    def webhooks(self) -> answers.WebhookList:
        return self._send(Operations.webhooks())  # type: ignore[no-any-return]

    def set_webhook_enabled(self, webhook_id: int, enabled: bool) -> answers.Webhook:
        return self._send(Operations.set_webhook_enabled(webhook_id, enabled))  # type: ignore[no-any-return]

    def remove_webhook(self, webhook_id: int) -> answers.RemovedWebhook:
        return self._send(Operations.remove_webhook(webhook_id))  # type: ignore[no-any-return]

    def deliveries(self, webhook_id: int, limit: int | None = None) -> answers.WebhookDeliveries:
        return self._send(Operations.deliveries(webhook_id, limit))  # type: ignore[no-any-return]


def client_options(
    base_url: str, token: str | None, timeout: float, headers: Mapping[str, str] | None
) -> dict[str, Any]:
    """The ``httpx`` client's options, the same for both clients."""
    sent = {"User-Agent": "funnel.client", **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    return {"base_url": base_url.rstrip("/"), "timeout": timeout, "headers": sent}
