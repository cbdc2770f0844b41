"""What a subscription may be: word-for-word errors naming the field and the fix."""

from __future__ import annotations

import pytest

from funnel.core.errors import WebhookError
from funnel.core.segment import Kind, Segment
from funnel.core.webhook_subscription import check_from_version, check_secret, check_segment, check_url, new_secret


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "ftp://x.example/hook",
            "url: has scheme 'ftp'. Fix: give an http:// or https:// URL (webhooks are HTTP POSTs)",
        ),
        ("https:///hook", "url: has no host. Fix: give the receiver's host, e.g. https://hooks.example.com/funnel"),
        (
            "https://u:p@x.example/",
            "url: holds credentials (user:password@). Fix: leave them out: the receiver authenticates funnel by the "
            "X-Funnel-Signature header",
        ),
        ("https://x.example/a b", "url: holds spaces, control or non-ASCII characters. Fix: percent-encode them"),
        ("", "url: is missing. Fix: give the receiver's URL, e.g. https://hooks.example.com/funnel"),
        (
            "http://x.example:99999/",
            "url: is not a valid URL (Port out of range 0-65535). Fix: give an http:// or https:// URL",
        ),
    ],
)
def test_bad_urls_are_refused_with_the_fix(url: str, message: str) -> None:
    with pytest.raises(WebhookError) as caught:
        check_url(url)
    assert str(caught.value) == message


def test_loopback_is_allowed_unless_the_setting_refuses_private_addresses() -> None:
    assert check_url("http://127.0.0.1:8000/hook") == "http://127.0.0.1:8000/hook"
    with pytest.raises(WebhookError, match="a loopback, private or link-local address"):
        check_url("http://127.0.0.1:8000/hook", refuse_private=True)


def test_proxy_and_unknown_segments_are_refused_saying_why() -> None:
    with pytest.raises(WebhookError, match="has no versions, so there are no version changes to deliver"):
        check_segment("p", Segment("p", "P", Kind.PROXY, rule='{"tag": "new_user"}'))
    with pytest.raises(WebhookError, match=r"^segment_id: segment 'nope' is not in the catalog\. Fix: "):
        check_segment("nope", None)
    check_segment("c", Segment("c", "C", Kind.COMPOSITE, rule="{}"))


def test_secrets_and_versions() -> None:
    assert new_secret() != new_secret()
    assert len(check_secret(new_secret())) == 70
    with pytest.raises(WebhookError, match="must be 16 to 128 printable ASCII characters without spaces"):
        check_secret("short")
    with pytest.raises(WebhookError, match=r"^from_version: must be a version number"):
        check_from_version(0)
    assert check_from_version(None) is None
