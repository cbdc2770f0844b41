# The funnel image that docker-compose.yaml builds: Airflow 3.3.2 with funnel's requirements
# installed at build time (nothing is pip-installed when a container starts) and dags/ and
# plugins/ in place. Python 3.11: the version constraints.txt was resolved on.
# After a change under dags/ or plugins/: `docker compose --env-file scripts/stack.env build`.
FROM apache/airflow:3.3.2-python3.11

# mysqlclient (the mysql provider's driver) has no Linux wheel: when constraints.txt pins
# another version than the image's, pip builds it with what scripts/bootstrap installs for it.
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config default-libmysqlclient-dev build-essential \
 && apt-get autoremove -yqq --purge \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*
USER airflow

# requirements.txt pinned by constraints.txt, as scripts/bootstrap installs them, less the
# local tools: pyspark (here HiveServer2 is a container of its own), pytest, ruff, import-linter
# schemathesis and openapi-python-client.
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/funnel/
RUN grep -vE '^(pyspark|pytest|ruff|import-linter|schemathesis|openapi-python-client)([=<>!~ ]|$)' /opt/funnel/requirements.txt >/opt/funnel/requirements-image.txt \
 && pip install --no-cache-dir -r /opt/funnel/requirements-image.txt -c /opt/funnel/constraints.txt

# The DAG file and the plugin with the funnel package; `python -m funnel.cli` (airflow-init,
# the funnel API) imports funnel from plugins/, as Airflow's processes do.
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
ENV PYTHONPATH=/opt/airflow/plugins
# The mount point of the shared config volume (airflow.cfg, the passwords file), made here so
# that the volume starts owned by the airflow user.
RUN mkdir -p /opt/airflow/config
