"""What a subscription may be: word-for-word errors naming the field and the fix."""

from __future__ import annotations

import pytest

from funnel.core.errors import WebhookError
from funnel.core.segment import Kind, Segment
from funnel.core.webhook_subscription import (
    check_from_version,
    check_secret,
    check_segment,
    check_url,
    is_private_address,
    new_secret,
    private_receiver,
)


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
        check_url(url, refuse_private=True)
    assert str(caught.value) == message


FIX = (
    "Fix: use a public receiver, or, where receivers are trusted internal services, set [funnel] "
    "webhook_refuse_private = False (AIRFLOW__FUNNEL__WEBHOOK_REFUSE_PRIVATE=False)"
)


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "0.0.0.0", "[::1]", "[fe80::1]",
     "[fc00::5]", "[::ffff:127.0.0.1]", "[::ffff:169.254.169.254]"],
)  # fmt: skip
def test_loopback_private_and_link_local_receivers_are_refused_naming_the_setting(host: str) -> None:
    url = f"http://{host}:8000/hook"
    with pytest.raises(WebhookError) as caught:
        check_url(url, refuse_private=True)
    assert str(caught.value) == (
        f"url: points at {host.strip('[]')!r}, a loopback, private or link-local address, which [funnel] "
        f"webhook_refuse_private forbids. {FIX}"
    )
    assert check_url(url, refuse_private=False) == url  # turned off: trusted internal receivers


def test_a_name_is_refused_when_any_of_its_addresses_is_private_and_says_which() -> None:
    def resolve(host: str) -> list[str]:  # a resolver's answer: one public address, one metadata address
        return {"hooks.example.com": ["93.184.216.34"], "rebound.example.com": ["93.184.216.34", "169.254.169.254"]}[
            host
        ]

    assert (
        check_url("https://hooks.example.com/f", refuse_private=True, resolve=resolve) == "https://hooks.example.com/f"
    )
    with pytest.raises(WebhookError) as caught:
        check_url("https://rebound.example.com/f", refuse_private=True, resolve=resolve)
    assert str(caught.value) == (
        "url: points at 'rebound.example.com', which resolves to 169.254.169.254, a loopback, private or "
        f"link-local address, which [funnel] webhook_refuse_private forbids. {FIX}"
    )


def test_the_one_classification_of_addresses() -> None:
    assert [is_private_address(a) for a in ("8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8")] == [False] * 3
    assert all(is_private_address(a) for a in ("127.0.0.2", "fe80::1%eth0", "::", "10.0.0.1"))
    assert private_receiver("hooks.example.com", []) is None  # does not resolve: the connection says so


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
