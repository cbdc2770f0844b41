# Sourced by every funnel script and by the test suite: the one place that names
# the project's folders, the Airflow settings and the Airflow connections.
# Every value can be overridden from the caller's environment.

FUNNEL_ROOT=${FUNNEL_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export FUNNEL_ROOT
export FUNNEL_VENV=${FUNNEL_VENV:-$FUNNEL_ROOT/.venv}
# The project's airflow, python and ruff first (airflow standalone starts `airflow` itself).
case ":$PATH:" in *":$FUNNEL_VENV/bin:"*) ;; *) export PATH=$FUNNEL_VENV/bin:$PATH ;; esac
# Services' state (Hive metastore, warehouse, logs, pid files): git-ignored.
export FUNNEL_RUN_DIR=${FUNNEL_RUN_DIR:-$FUNNEL_ROOT/.run}

export FUNNEL_MYSQL_HOST=${FUNNEL_MYSQL_HOST:-127.0.0.1}
export FUNNEL_MYSQL_PORT=${FUNNEL_MYSQL_PORT:-3306}
export FUNNEL_MYSQL_DB=${FUNNEL_MYSQL_DB:-funnel}
export FUNNEL_REDIS_HOST=${FUNNEL_REDIS_HOST:-127.0.0.1}
export FUNNEL_REDIS_PORT=${FUNNEL_REDIS_PORT:-6379}
export FUNNEL_REDIS_DB=${FUNNEL_REDIS_DB:-0}
export FUNNEL_HIVE_HOST=${FUNNEL_HIVE_HOST:-127.0.0.1}
export FUNNEL_HIVE_PORT=${FUNNEL_HIVE_PORT:-10000}

# Airflow: a project-local home, the project's dags/ and plugins/.
export AIRFLOW_HOME=${AIRFLOW_HOME:-$FUNNEL_ROOT/.airflow}
export AIRFLOW__CORE__DAGS_FOLDER=${AIRFLOW__CORE__DAGS_FOLDER:-$FUNNEL_ROOT/dags}
export AIRFLOW__CORE__PLUGINS_FOLDER=${AIRFLOW__CORE__PLUGINS_FOLDER:-$FUNNEL_ROOT/plugins}
export AIRFLOW__CORE__LOAD_EXAMPLES=${AIRFLOW__CORE__LOAD_EXAMPLES:-False}
export AIRFLOW__API__HOST=${AIRFLOW__API__HOST:-127.0.0.1}
export PYTHONPATH=$FUNNEL_ROOT/plugins${PYTHONPATH:+:$PYTHONPATH}

# The three Airflow connections funnel's hooks use (ids are settings in funnel.settings).
export AIRFLOW_CONN_FUNNEL_HIVE=${AIRFLOW_CONN_FUNNEL_HIVE:-"hiveserver2://funnel@$FUNNEL_HIVE_HOST:$FUNNEL_HIVE_PORT/default?auth_mechanism=NONE"}
export AIRFLOW_CONN_FUNNEL_MYSQL=${AIRFLOW_CONN_FUNNEL_MYSQL:-"mysql://root@$FUNNEL_MYSQL_HOST:$FUNNEL_MYSQL_PORT/$FUNNEL_MYSQL_DB"}
export AIRFLOW_CONN_FUNNEL_REDIS=${AIRFLOW_CONN_FUNNEL_REDIS:-"redis://$FUNNEL_REDIS_HOST:$FUNNEL_REDIS_PORT?db=$FUNNEL_REDIS_DB"}

# The local stack's user tags (the demo warehouse's tag query) and the serving API's tokens.
# These tokens are fine for this loopback-only stack; anywhere else, set your own (README).
export AIRFLOW__FUNNEL__TAG_QUERY=${AIRFLOW__FUNNEL__TAG_QUERY:-$(cat "$FUNNEL_ROOT/demo/tag_query.hql")}
export AIRFLOW__FUNNEL__API_TOKENS=${AIRFLOW__FUNNEL__API_TOKENS:-read:funnel-demo-read,write:funnel-demo-write}
