"""The Redis key layout is a spec: keys are compared byte for byte."""

from __future__ import annotations

from funnel import layout


def test_keys_share_one_hash_tag_per_segment() -> None:
    assert layout.members_key("big_spenders") == "funnel:{big_spenders}:members"
    assert layout.meta_key("big_spenders") == "funnel:{big_spenders}:meta"
    assert layout.staging_key("big_spenders") == "funnel:{big_spenders}:staging"


def test_table_names() -> None:
    assert layout.SEGMENTS_TABLE == "funnel_segments"
    assert layout.CURRENT_MEMBERS_VIEW == "funnel_current_members"
