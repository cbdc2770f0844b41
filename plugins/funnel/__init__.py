"""funnel: keeps user segments fresh in Redis and MySQL, orchestrated by Airflow 3."""
