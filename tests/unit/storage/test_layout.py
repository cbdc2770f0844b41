"""The Redis key layout is a spec: keys are compared byte for byte."""

from __future__ import annotations

from funnel.core import ids
from funnel.storage import layout


def test_keys_share_one_hash_tag_per_segment() -> None:
    assert layout.members_key("big_spenders") == "funnel:{big_spenders}:members"
    assert layout.meta_key("big_spenders") == "funnel:{big_spenders}:meta"
    assert layout.staging_key("big_spenders") == "funnel:{big_spenders}:staging"
    assert layout.feed_key("big_spenders") == "funnel:{big_spenders}:feed"


def test_table_names() -> None:
    assert layout.SEGMENTS_TABLE == "funnel_segments"
    assert layout.CURRENT_MEMBERS_VIEW == "funnel_current_members"


def test_user_tag_keys_share_one_slot_no_segment_can_take() -> None:
    assert layout.tag_keys() == ("funnel:{_tags}:first_seen", "funnel:{_tags}:order_count", "funnel:{_tags}:seq")
    assert layout.tag_keys("staging").order_count == "funnel:{_tags}:staging:order_count"
    assert layout.tag_keys("previous").seq == "funnel:{_tags}:previous:seq"
    assert layout.tags_meta_key() == "funnel:{_tags}:meta"
    assert layout.lock_key(layout.TAGS_ID) == "funnel:{_tags}:lock"


def test_a_valid_user_id_is_printable_ascii_kept_exactly() -> None:
    assert ids.user_id_problem("12345") is None
    assert ids.user_id_problem('a"b\\c d') is None
    assert ids.user_id_problem("") == "is empty"
    assert ids.user_id_problem("x" * 65) == "is 65 characters long (at most 64)"
    assert "printable ASCII" in (ids.user_id_problem("a\tb") or "")
    assert ids.user_id_problem(" a") == "has leading or trailing whitespace"


def test_the_user_id_pattern_says_what_the_rule_says() -> None:
    samples = ["1", "a", "x" * 64, "x" * 65, "", " ", "a b", " a", "a ", "a\tb", "caf\u00e9", "~!", '"q"', "\\N", "a\n"]
    for sample in samples:
        matched = ids.USER_ID_PATTERN.fullmatch(sample) is not None
        assert matched == (ids.user_id_problem(sample) is None), sample
