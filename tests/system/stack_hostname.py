"""The ``[core] hostname_callable`` of the system stack's Celery workers.

Every worker of ``airflow_stack.py`` runs on this one machine, so the default (the machine's
FQDN) would give all their task instances the same ``hostname``; each worker's environment
names it in ``FUNNEL_STACK_HOSTNAME`` instead, as separate machines' names would.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("FUNNEL_STACK_HOSTNAME") or socket.getfqdn()
