"""Where the command line's log lines go: stderr, so stdout holds a command's answer alone (the
``report`` table, ``preview --json | jq``, ``history --json``)."""

from __future__ import annotations

import logging
import sys

import structlog

from funnel import settings  # noqa: F401 - imports Airflow, which sets up logging (to stdout) first


def logs_to_stderr() -> None:
    """Point every log output that writes to stdout at stderr.

    Airflow's logging config, set up when Airflow is imported, writes to stdout twice over: the
    stdlib root handler (funnel's loggers, and Airflow's that use ``logging``) and the structlog
    loggers (Airflow's task SDK), whose factory writes to stdout when given no stream. They get
    the process's own stderr (``sys.__stderr__``, never swapped or closed: a test's capture of
    ``sys.stderr`` comes and goes, and a log line must not write into a closed one).
    """
    loggers = [logging.root, *(x for x in logging.root.manager.loggerDict.values() if isinstance(x, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.__stdout__):
                handler.setStream(sys.__stderr__)
    factory = structlog.get_config().get("logger_factory")
    if getattr(factory, "io", False) is None:  # Airflow's LoggerFactory: None is stdout
        binary = issubclass(getattr(factory, "cls", object), structlog.BytesLogger)  # [logging] json_logs
        factory.io = sys.__stderr__.buffer if binary else sys.__stderr__  # type: ignore[union-attr]
