"""Example Airflow DAG: a downstream job scheduled on "segment updated" (an Asset event).

Each successful refresh of a segment updates the Asset ``funnel://segment/<segment_id>``
with its version, size, entered and exited in the event's extra; this DAG runs after each
refresh of ``big_spenders`` and reads who entered and exited from Redis.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, task

from funnel.storage.layout import asset_uri

with DAG(
    dag_id="funnel_example_big_spenders_consumer",
    schedule=[Asset(asset_uri("big_spenders"))],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["funnel", "example"],
):

    @task
    def announce_changes(triggering_asset_events=None) -> dict:
        """Log each triggering refresh and return its extra (version, size, entered, exited)."""
        latest: dict = {}
        for events in (triggering_asset_events or {}).values():
            for event in events:
                latest = dict(event.extra)
                print(f"big_spenders refreshed: {latest}")
        return latest

    announce_changes()
