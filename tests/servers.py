"""Real servers for the test suite: redis-server on a free loopback port, stopped by pid,
and a three-master Redis Cluster made of such servers.

When no server can be started the Redis tests fail, they do not skip, unless the user
opts out explicitly with ``RATEKEEPER_SKIP_REDIS=1``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

SKIP_VARIABLE = "RATEKEEPER_SKIP_REDIS"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_unavailable(reason: str) -> None:
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"{reason} ({SKIP_VARIABLE}=1)")
    pytest.fail(
        f"{reason}. Install redis-server (./dev check does), or set {SKIP_VARIABLE}=1 to "
        "skip the Redis tests explicitly.",
        pytrace=False,
    )


@dataclass
class RedisServer:
    """A running redis-server process we started."""

    port: int
    process: subprocess.Popen[bytes]
    directory: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                # A server started with --requirepass answers NOAUTH: it is up all the same.
                return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        # Nothing in it outlives the process (persistence is off); a restart on the same
        # port gets a directory of its own.
        shutil.rmtree(self.directory, ignore_errors=True)


def start_redis(*extra: str, port: int | None = None, attempts: int = 3) -> RedisServer:
    """Start redis-server on 127.0.0.1 with persistence off; raise RuntimeError on failure."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH")
    last_error = ""
    for _ in range(attempts):
        chosen = port or free_port()
        directory = tempfile.mkdtemp(prefix="ratekeeper-redis-")
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(chosen),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
                "--protected-mode",
                "no",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        server = RedisServer(chosen, process, directory)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process.poll() is not None:
                last_error = (process.stderr.read() if process.stderr else b"").decode()[-500:]
                break
            if server.ping():
                return server
            time.sleep(0.02)
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    raise RuntimeError(f"redis-server did not start: {last_error or 'no answer to PING'}")


@contextmanager
def redis_server(*extra: str) -> Iterator[RedisServer]:
    try:
        server = start_redis(*extra)
    except RuntimeError as exc:
        redis_unavailable(str(exc))
        raise  # pragma: no cover - pytest.fail/skip raised
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


# A cluster node also listens on its bus port, port + 10000, which must exist and be free.
_BUS_OFFSET = 10_000
_CLUSTER_MASTERS = 3


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free as well."""
    for _ in range(100):
        port = free_port()
        if port + _BUS_OFFSET > 65_535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", port + _BUS_OFFSET))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class RedisClusterServers:
    """A running Redis Cluster of masters we started, one redis-server each."""

    nodes: list[RedisServer]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming one node (the client discovers the others)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    @property
    def plain_url(self) -> str:
        """The URL redis-py's own ``RedisCluster.from_url`` takes."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_state(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"CLUSTER INFO\r\n")
            reply = b""
            while b"cluster_state:" not in reply or not reply.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return ""
    for line in reply.decode(errors="replace").splitlines():
        if line.startswith("cluster_state:"):
            return line.partition(":")[2].strip()
    return ""


def _start_cluster_node(attempts: int = 3) -> RedisServer:
    error = RuntimeError("no cluster node started")
    for _ in range(attempts):
        # A fresh port pair each time: another process may take a free port before we do.
        port = free_cluster_port()
        try:
            return start_redis(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",  # relative to the node's own --dir
                "--cluster-node-timeout",
                "5000",
                port=port,
                attempts=1,
            )
        except RuntimeError as exc:
            error = exc
    raise error


def start_cluster(masters: int = _CLUSTER_MASTERS) -> RedisClusterServers:
    """Start ``masters`` cluster-enabled servers, join them with ``redis-cli --cluster
    create`` (no replicas) and wait until every node reports ``cluster_state:ok``."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not on PATH")
    nodes: list[RedisServer] = []
    try:
        for _ in range(masters):
            nodes.append(_start_cluster_node())
        created = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            output = (created.stdout + created.stderr).decode(errors="replace")[-800:]
            raise RuntimeError(f"redis-cli --cluster create failed: {output}")
        deadline = time.monotonic() + 30
        while not all(_cluster_state(node.port) == "ok" for node in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        RedisClusterServers(nodes).stop()
        raise
    return RedisClusterServers(nodes)


@contextmanager
def redis_cluster() -> Iterator[RedisClusterServers]:
    try:
        cluster = start_cluster()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        redis_unavailable(f"the Redis Cluster did not start: {exc}")
        raise  # pragma: no cover - pytest.fail/skip raised
    try:
        yield cluster
    finally:
        cluster.stop()
