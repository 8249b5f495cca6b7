"""A small loopback TCP proxy for fault tests: it sits between a client and a real server
and can delay the server's replies, drop every connection, or swallow traffic.

It listens on 127.0.0.1 only, serves at most ``max_connections`` connections at a time,
and stops itself after ``lifetime`` seconds even if a test forgets to; its threads are
daemons. It must never reach anything but the one target port on 127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

__all__ = ["Proxy"]

_CHUNK = 65536
_POLL = 0.05  # how often idle threads look at the stop flag


class Proxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port``.

    ``latency`` (seconds, changeable at any time) delays each chunk of the server's reply
    before it is passed on; requests go through at once, so a request whose reply comes
    too late has still run on the server, as with a slow network. :meth:`drop` closes
    every open connection (new ones are accepted as before), and
    :meth:`drop_at_next_reply` does so when the next reply arrives, so that a request is
    lost mid-way; ``blackhole = True`` makes the proxy accept connections and read
    requests but forward nothing either way.
    """

    def __init__(
        self,
        target_port: int,
        *,
        latency: float = 0.0,
        max_connections: int = 64,
        lifetime: float = 120.0,
    ) -> None:
        self.target_port = target_port
        self.latency = latency
        self.blackhole = False
        self._max = max_connections
        self._deadline = time.monotonic() + lifetime
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: set[tuple[socket.socket, ...]] = set()  # (client,) or (client, upstream)
        self._stopped = threading.Event()
        self.accepted = 0  # connections accepted since the start
        self._drop_next_reply = False
        self._acceptor = threading.Thread(target=self._accept, name="test-proxy", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        """A redis:// URL that goes through the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def open_connections(self) -> int:
        """Client connections open right now."""
        with self._lock:
            return len(self._links)

    def drop(self) -> None:
        """Close every open connection, both sides, as a failing network would."""
        with self._lock:
            doomed = list(self._links)
            self._links.clear()
        for link in doomed:
            for sock in link:
                _close(sock)

    def drop_at_next_reply(self) -> None:
        """Drop every connection when the next reply arrives from the server, instead of
        passing it on: the request has run there, and the client sees a reset."""
        with self._lock:
            self._drop_next_reply = True

    def _take_drop(self) -> bool:
        with self._lock:
            armed, self._drop_next_reply = self._drop_next_reply, False
            return armed

    @contextmanager
    def delayed(self, latency: float) -> Iterator[None]:
        """Delay every reply chunk by ``latency`` seconds within the block."""
        before, self.latency = self.latency, latency
        try:
            yield
        finally:
            self.latency = before

    @contextmanager
    def swallowing(self) -> Iterator[None]:
        """Black-hole the traffic within the block; open connections are dropped after
        it, since their requests and replies are lost."""
        self.blackhole = True
        try:
            yield
        finally:
            self.blackhole = False
            self.drop()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the proxy to stop; True if it has."""
        self._acceptor.join(timeout)
        return not self._acceptor.is_alive()

    def close(self) -> None:
        """Stop accepting, close every connection and wait for the acceptor."""
        self._stopped.set()
        self.drop()
        self._acceptor.join(timeout=2)
        _close(self._listener)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _running(self) -> bool:
        return not self._stopped.is_set() and time.monotonic() < self._deadline

    def _accept(self) -> None:
        try:
            while self._running():
                try:
                    client, _ = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                self._serve(client)
        finally:
            self._stopped.set()
            self.drop()
            _close(self._listener)  # new connections are refused, not left hanging

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            full = len(self._links) >= self._max
        if full:
            _close(client)
            return
        self.accepted += 1
        if self.blackhole:
            upstream = None
        else:
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=1.0)
            except OSError:
                _close(client)  # the server is down: so is the connection
                return
        link = (client,) if upstream is None else (client, upstream)
        with self._lock:
            self._links.add(link)
        if upstream is None:
            threading.Thread(target=self._swallow, args=(link,), daemon=True).start()
            return
        for source, sink, delayed in ((client, upstream, False), (upstream, client, True)):
            threading.Thread(
                target=self._pump,
                args=(link, source, sink, delayed),
                name="test-proxy-pump",
                daemon=True,
            ).start()

    def _pump(
        self,
        link: tuple[socket.socket, ...],
        source: socket.socket,
        sink: socket.socket,
        delayed: bool,
    ) -> None:
        source.settimeout(_POLL)
        try:
            while self._running():
                try:
                    chunk = source.recv(_CHUNK)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                if self.blackhole:
                    continue
                if delayed and self._take_drop():
                    self.drop()  # the request ran on the server; its reply is lost
                    break
                if delayed and self.latency > 0:
                    self._hold(link, self.latency)
                sink.sendall(chunk)
        except OSError:
            pass  # the other side, or drop(), closed the connection
        finally:
            self._forget(link)

    def _hold(self, link: tuple[socket.socket, ...], latency: float) -> None:
        # In short steps, so a dropped connection's thread ends at once, not after the delay.
        deadline = time.monotonic() + latency
        while link in self._links and self._running():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, _POLL / 5))

    def _swallow(self, link: tuple[socket.socket, ...]) -> None:
        client = link[0]
        client.settimeout(_POLL)
        try:
            while self._running():
                try:
                    if not client.recv(_CHUNK):
                        break
                except TimeoutError:
                    continue
        except OSError:
            pass
        finally:
            self._forget(link)

    def _forget(self, link: tuple[socket.socket, ...]) -> None:
        with self._lock:
            self._links.discard(link)
        for sock in link:
            _close(sock)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        sock.close()
