"""Real servers for the test suite: redis-server on a free loopback port, stopped by pid.

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
                return sock.recv(16).startswith(b"+PONG")
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
