"""``serve``: the serving API on uvicorn, one process per worker on a shared port."""

from __future__ import annotations


def serve(host: str, port: int, workers: int) -> None:
    """Run the serving API with uvicorn (loopback by default: put a proxy in front to expose it).

    Each worker is its own process with its own listening socket on the same port
    (``SO_REUSEPORT``): the kernel spreads connections evenly, where one shared socket
    lets the busiest worker take most of them. Stopping the parent (SIGTERM, Ctrl-C)
    stops every worker; if a worker dies, the others are stopped and the exit code says so.
    """
    import multiprocessing
    import multiprocessing.connection
    import signal

    if workers <= 1:
        _serve_one(host, port)
        return
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_serve_one, args=(host, port), daemon=True) for _ in range(workers)]
    for child in children:
        child.start()

    def stop(*_: object) -> None:
        for child in children:
            if child.is_alive():
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        multiprocessing.connection.wait([child.sentinel for child in children])
    finally:
        stop()
        for child in children:
            child.join(10)
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
