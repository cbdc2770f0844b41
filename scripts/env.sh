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

# Ports, databases and settings shared with docker-compose.yaml: scripts/stack.env (a value
# already in the caller's environment wins, as everywhere in this file).
while IFS= read -r _funnel_line || [ -n "$_funnel_line" ]; do
  case $_funnel_line in '' | '#'*) continue ;; esac
  _funnel_key=${_funnel_line%%=*}
  [ -n "${!_funnel_key:-}" ] || export "$_funnel_key=${_funnel_line#*=}"
  export "$_funnel_key"
done < <(cat "$FUNNEL_ROOT/scripts/stack.env" "$FUNNEL_ROOT/scripts/redis-databases.env")
unset _funnel_line _funnel_key

# The services' hosts, as seen from this machine (the compose services see each other by name).
export FUNNEL_MYSQL_HOST=${FUNNEL_MYSQL_HOST:-127.0.0.1}
export FUNNEL_REDIS_HOST=${FUNNEL_REDIS_HOST:-127.0.0.1}
export FUNNEL_HIVE_HOST=${FUNNEL_HIVE_HOST:-127.0.0.1}

# Airflow: a project-local home, the project's dags/ and plugins/.
export AIRFLOW_HOME=${AIRFLOW_HOME:-$FUNNEL_ROOT/.airflow}
export AIRFLOW__CORE__DAGS_FOLDER=${AIRFLOW__CORE__DAGS_FOLDER:-$FUNNEL_ROOT/dags}
export AIRFLOW__CORE__PLUGINS_FOLDER=${AIRFLOW__CORE__PLUGINS_FOLDER:-$FUNNEL_ROOT/plugins}
export AIRFLOW__API__HOST=${AIRFLOW__API__HOST:-127.0.0.1}
export PYTHONPATH=$FUNNEL_ROOT/plugins${PYTHONPATH:+:$PYTHONPATH}

# The three Airflow connections funnel's hooks use (ids are settings in funnel.settings).
export AIRFLOW_CONN_FUNNEL_HIVE=${AIRFLOW_CONN_FUNNEL_HIVE:-"hiveserver2://funnel@$FUNNEL_HIVE_HOST:$FUNNEL_HIVE_PORT/default?auth_mechanism=NONE"}
export AIRFLOW_CONN_FUNNEL_MYSQL=${AIRFLOW_CONN_FUNNEL_MYSQL:-"mysql://root@$FUNNEL_MYSQL_HOST:$FUNNEL_MYSQL_PORT/$FUNNEL_MYSQL_DB"}
export AIRFLOW_CONN_FUNNEL_REDIS=${AIRFLOW_CONN_FUNNEL_REDIS:-"redis://$FUNNEL_REDIS_HOST:$FUNNEL_REDIS_PORT?db=$FUNNEL_REDIS_DB"}

# The local stack's webhook receivers listen on loopback (README, Webhooks), which funnel refuses
# by default (webhook_refuse_private): allowed here, on this loopback-only stack.
export AIRFLOW__FUNNEL__WEBHOOK_REFUSE_PRIVATE=${AIRFLOW__FUNNEL__WEBHOOK_REFUSE_PRIVATE:-False}

# The local stack's user tags: the demo warehouse's tag query. (The serving API's tokens
# come from scripts/stack.env.)
export AIRFLOW__FUNNEL__TAG_QUERY=${AIRFLOW__FUNNEL__TAG_QUERY:-$(cat "$FUNNEL_ROOT/demo/tag_query.hql")}
