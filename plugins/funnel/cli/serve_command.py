"""``serve``: the serving API on uvicorn, one process per worker on a shared port."""

from __future__ import annotations


def serve(host: str, port: int, workers: int) -> None:
    """Run the serving API with uvicorn (loopback by default: put a proxy in front to expose it).

    Each worker is its own process with its own listening socket on the same port
    (``SO_REUSEPORT``): the kernel spreads connections evenly, where one shared socket
    lets the busiest worker take most of them. Stopping the parent (SIGTERM, Ctrl-C)
    stops every worker; if a worker dies, the others are stopped and the exit code says so.
    The workers count their metrics in one directory (``api_metrics_dir``, emptied at start), so
    any worker's ``/metrics`` answers for them all.
    """
    import multiprocessing
    import multiprocessing.connection
    import shutil
    import signal

    from funnel import settings, wiring

    if workers <= 1:
        _serve_one(host, port)
        return
    metrics_dir = wiring.fresh_metrics_dir(settings.API_METRICS_DIR)  # before the workers start: they inherit it
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_serve_one, args=(host, port), daemon=True) for _ in range(workers)]

    def stop(*_: object) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                child.terminate()

    signal.signal(signal.SIGTERM, stop)  # before the workers start: a stop while they start stops them
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.start()
    try:
        multiprocessing.connection.wait([child.sentinel for child in children])
    finally:
        stop()
        for child in children:
            child.join(10)
            wiring.metrics_worker_gone(child.pid)
        if not settings.API_METRICS_DIR:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    codes = [child.exitcode for child in children]
    if any(code not in (0, -signal.SIGTERM) for code in codes):
        raise SystemExit(f"funnel API: a worker stopped with exit code {codes}")


def _serve_one(host: str, port: int) -> None:
    import socket

    import uvicorn

    from funnel.cli.log_output import logs_to_stderr

    logs_to_stderr()  # a spawned worker set up Airflow's logging anew
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    config = uvicorn.Config(
        "funnel.api.app:create_app",
        factory=True,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    uvicorn.Server(config).run(sockets=[sock])
