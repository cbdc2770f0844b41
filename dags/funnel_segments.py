"""Airflow DAG file: funnel's segment-refresh DAGs, built from the segment catalog."""

from funnel.factory import register_dags

register_dags(globals())
