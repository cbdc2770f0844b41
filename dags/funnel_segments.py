"""Airflow DAG file: funnel's segment-refresh DAGs, built from the segment catalog."""

from funnel.airflow.dag_factory import register_dags

register_dags(globals())
