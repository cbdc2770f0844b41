"""Freshness: is each segment as fresh as its kind promises, and the alert before a slot is missed.

- ``rules``: the objectives and the verdict (``fresh`` / ``stale`` / ``failing``, with the
  reason in words), pure;
- ``deadline``: the dynamic DAG's Airflow ``DeadlineAlert`` and its callback.

The run history they read is ``funnel.stores.history``; the API, the CLI ``report`` and the
Segments page show the verdicts.
"""
