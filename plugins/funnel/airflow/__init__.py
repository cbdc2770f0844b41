"""Airflow entry point: the DAG factory, the operators and the deadline callback."""
