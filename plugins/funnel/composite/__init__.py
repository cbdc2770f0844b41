"""Composite segments: set expressions over other segments (``expr``), checked against the catalog
(``graph``), computed from the operands' live versions without Hive (``funnel.stores.composite``)."""
