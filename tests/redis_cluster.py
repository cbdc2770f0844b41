"""A local three-master Redis Cluster for the tests, from Debian's ``redis-server``.

Three ``redis-server --cluster-enabled yes`` processes on free loopback ports (each port's
cluster bus, port + 10000, free too), in a temp dir of their own and one process group, no
persistence; ``redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`` joins
them and hands out the 16384 slots. ``stop()`` ends the group and removes the dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MASTERS = 3


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` loopback ports whose cluster bus ports (+10000) are free as well."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10_000 < 65_536 and port not in ports and _free(port + 10_000):
            ports.append(port)
    return ports


class LocalRedisCluster:
    """Start with ``start()``; ``ports``, ``host``; stop with ``stop()`` (always)."""

    host = "127.0.0.1"

    def __init__(self, server: str = "redis-server", cli: str = "redis-cli") -> None:
        self.server = shutil.which(server) or server
        self.cli = shutil.which(cli) or cli
        self.ports: list[int] = []
        self.dir: Path | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._pgid: int | None = None

    def start(self, timeout: float = 30.0) -> LocalRedisCluster:
        self.dir = Path(tempfile.mkdtemp(prefix="funnel-redis-cluster-"))
        self.ports = free_ports(MASTERS)
        try:
            for port in self.ports:
                node_dir = self.dir / str(port)
                node_dir.mkdir()
                args = [
                    self.server,
                    "--port", str(port),
                    "--bind", self.host,
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(node_dir / "nodes.conf"),
                    "--cluster-node-timeout", "5000",
                    "--dir", str(node_dir),
                    "--save", "",
                    "--appendonly", "no",
                    "--daemonize", "no",
                    "--logfile", str(node_dir / "redis.log"),
                ]  # fmt: skip
                group = {"process_group": 0 if self._pgid is None else self._pgid}
                proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **group)
                self._procs.append(proc)
                if self._pgid is None:
                    self._pgid = proc.pid
            deadline = time.monotonic() + timeout
            for port in self.ports:
                self._wait(lambda p=port: self._cli(p, "PING") == "PONG", deadline, f"redis-server on {port}")
            create = [self.cli, "--cluster", "create", *(f"{self.host}:{p}" for p in self.ports)]
            create += ["--cluster-replicas", "0", "--cluster-yes"]
            done = subprocess.run(create, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
            for port in self.ports:
                self._wait(lambda p=port: "cluster_state:ok" in self._cli(p, "CLUSTER", "INFO"), deadline, "cluster ok")
        except BaseException:
            self.stop()
            raise
        return self

    def _cli(self, port: int, *command: str) -> str:
        done = subprocess.run(
            [self.cli, "-h", self.host, "-p", str(port), *command], capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip()

    @staticmethod
    def _wait(ready: object, deadline: float, what: str) -> None:
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                if ready():  # type: ignore[operator]
                    return
            time.sleep(0.1)
        raise TimeoutError(f"the local Redis Cluster did not come up: {what}")

    def slot_owner(self, slot: int) -> int:
        """The port of the master that serves ``slot``."""
        for line in self._cli(self.ports[0], "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2]:
                continue
            for part in fields[8:]:
                low, _, high = part.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return int(fields[1].split(":")[1].split("@")[0])
        raise LookupError(f"slot {slot} is not served")

    def stop(self) -> None:
        if self._pgid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._pgid, signal.SIGTERM)
            for proc in self._procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self._pgid, signal.SIGKILL)
                    proc.wait(timeout=10)
            self._pgid = None
            self._procs = []
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
