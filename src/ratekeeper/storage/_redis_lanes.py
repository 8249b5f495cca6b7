"""Lanes: decisions sent straight on connections kept from a redis-py client's pool.

A decision is one round trip of a few dozen microseconds, and redis-py's generic command
path (pool checkout and release, retry wrapper, argument encoding, telemetry; on asyncio
also a timeout context and a task per write) costs about as much again. A lane takes a
connection from the client's pool once and keeps it on an idle list between decisions
(popping and appending a list is atomic, so two threads or tasks never share one), and
writes each decision already encoded in the Redis protocol. What it keeps from redis-py:
connecting and the handshake, the check a pool makes before lending a connection (a
connection the server closed while idle is replaced before anything is sent), the socket
timeouts, and the parsing and error replies.

A decision is never retried here either: any failure but an error reply disconnects the
connection and hands it back to the pool, and the next call takes a fresh one. A forked
child drops the connections it inherited (they share their sockets with the parent), and
``close`` returns the kept ones to the pool. A client that a lane does not cover (a
cluster, a subclass, a single-connection client, client-side caching, rotating
credentials, an older redis-py or Python) gets no lane and keeps ``execute_command``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import weakref
from collections.abc import Awaitable
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["AsyncLane", "Lane"]


def _covered(client: object, kind: type, pools: tuple[type, ...]) -> Any:
    """The pool of ``client`` if a lane can use it, else None."""
    if (
        type(client) is not kind
        or getattr(client, "connection", None) is not None
        or getattr(client, "single_connection_client", False)
        or getattr(client, "_single_connection_client", False)
    ):
        return None
    pool: Any = getattr(client, "connection_pool", None)
    if (
        type(pool) not in pools
        or getattr(pool, "cache", None) is not None
        or pool.connection_kwargs.get("credential_provider") is not None
        or not hasattr(pool, "ensure_connection")
        or not hasattr(pool.connection_class, "should_reconnect")
    ):
        return None
    return pool


class Lane:
    """The lane of a sync ``redis.Redis``."""

    __slots__ = ("__weakref__", "_idle", "_pool")

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._idle: list[Any] = []
        _LANES.add(self)

    @classmethod
    def of(cls, client: object) -> Lane | None:
        pool = _covered(client, redis.Redis, (redis.ConnectionPool, redis.BlockingConnectionPool))
        return None if pool is None else cls(pool)

    def call(self, packed: bytes) -> Any:
        """Send one packed command and return its reply; an error reply is raised."""
        return self._exchange(packed, ())

    def command(self, *args: Any) -> Any:
        """Send one command and return its raw reply (no response callback applied)."""
        return self._exchange(None, args)

    def _exchange(self, packed: bytes | None, args: tuple[Any, ...]) -> Any:
        idle = self._idle
        pool = self._pool
        try:
            connection = idle.pop()
        except IndexError:
            connection = pool.get_connection()
        else:
            try:
                pool.ensure_connection(connection)
            except BaseException:
                pool.release(connection)
                raise
        try:
            if packed is None:
                connection.send_command(*args)
            else:
                connection.send_packed_command((packed,))
            reply = connection.read_response()
        except ResponseError:
            # The error reply was read whole: the connection is still in step.
            idle.append(connection)
            raise
        except BaseException:
            # Whatever was sent may be half-sent or half-answered: never reuse it.
            connection.disconnect()
            pool.release(connection)
            raise
        if connection.should_reconnect():  # the server announced maintenance: let the pool
            pool.release(connection)
        else:
            idle.append(connection)
        return reply

    def close(self) -> None:
        idle = self._idle
        while idle:
            self._pool.release(idle.pop())

    def forget(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            # In the child, disconnect() only closes this process's copy of the socket (it
            # shuts a socket down only in the process that opened it).
            with contextlib.suppress(Exception):
                connection.disconnect()


class AsyncLane:
    """The lane of a ``redis.asyncio.Redis``.

    The socket timeout is kept by one timer per lane instead of one per call: each call
    notes its deadline, and the timer, armed at the earliest one, cancels the calls past
    theirs (which then raise redis' TimeoutError, as a timed-out read does) and re-arms
    itself at the next. Under a steady load it fires about once per timeout period.
    """

    __slots__ = (
        "__weakref__",
        "_deadlines",
        "_expired",
        "_idle",
        "_loop",
        "_pool",
        "_timeout",
        "_timer",
    )

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        timeout = pool.connection_kwargs.get("socket_timeout")
        self._timeout: float | None = timeout or None
        self._idle: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # Tasks are typed Any here: Task.cancelling() and uncancel() are Python 3.11's, the
        # only versions this lane runs on, and the type check also covers 3.10.
        self._deadlines: dict[Any, float] = {}
        # Tasks this lane cancelled, with the cancellation requests they had before.
        self._expired: dict[Any, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        _LANES.add(self)

    @classmethod
    def of(cls, client: object) -> AsyncLane | None:
        if not hasattr(asyncio.Task, "uncancel"):  # Python 3.10: no cancellation counts
            return None
        pool = _covered(
            client,
            redis.asyncio.Redis,
            (redis.asyncio.ConnectionPool, redis.asyncio.BlockingConnectionPool),
        )
        return None if pool is None else cls(pool)

    def call(self, packed: bytes) -> Awaitable[Any]:
        """Send one packed command and return its reply; an error reply is raised."""
        return self._exchange(packed, ())

    def command(self, *args: Any) -> Awaitable[Any]:
        """Send one command and return its raw reply (no response callback applied)."""
        return self._exchange(None, args)

    async def _exchange(self, packed: bytes | None, args: tuple[Any, ...]) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            await self._move(loop)
        idle = self._idle
        pool = self._pool
        try:
            connection = idle.pop()
        except IndexError:
            connection = await pool.get_connection()
        else:
            # A connection the server closed while it was idle is replaced before anything
            # is sent, as the pool does before lending one; the loop has seen the EOF or
            # the reset by now, so looking at the stream is enough (the pool's own check,
            # ensure_connection(), costs a coroutine and a retry wrapper per call).
            stream = connection._reader
            if stream is None or stream.at_eof() or stream.exception() is not None:
                try:
                    await pool.ensure_connection(connection)
                except BaseException:
                    await pool.release(connection)
                    raise
        task: Any = None
        timeout = self._timeout
        if timeout is not None:
            # Outside a task nothing could be cancelled: no deadline then.
            task = asyncio.current_task()
            if task is not None:
                deadline = loop.time() + timeout
                self._deadlines[task] = deadline
                if self._timer is None:
                    self._timer = loop.call_at(deadline, self._expire)
        try:
            # The write never blocks: the transport sends at once or buffers, and one
            # short command per connection never reaches its high-water mark. The reply
            # is read by the connection's parser, as its read_response() does, without
            # the timeout context that this lane's timer replaces.
            if packed is None:
                connection._writer.writelines(connection.pack_command(*args))
            else:
                connection._writer.write(packed)
            reply = await connection._parser.read_response()
        except OSError as error:
            await self._drop(connection)
            raise RedisConnectionError(
                f"Error while reading from {connection.host}: {error!r}"
            ) from error
        except asyncio.CancelledError:
            await self._drop(connection)
            # Cancelled by this lane's timer and by nobody else: a timeout.
            if (
                task is not None
                and task in self._expired
                and task.uncancel() <= self._expired.pop(task)
            ):
                raise RedisTimeoutError(f"Timeout reading from {connection.host}") from None
            raise
        except BaseException:
            await self._drop(connection)
            raise
        finally:
            if task is not None:
                del self._deadlines[task]
        if connection.should_reconnect():
            await pool.release(connection)
        else:
            idle.append(connection)
        if isinstance(reply, ResponseError):  # an error reply, read whole
            raise reply
        return reply

    def _expire(self) -> None:
        """Cancel the calls past their deadline; re-arm at the next one."""
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        earliest = math.inf
        for task, deadline in self._deadlines.items():
            if deadline <= now:
                if task not in self._expired:
                    self._expired[task] = task.cancelling()
                    task.cancel()
            elif deadline < earliest:
                earliest = deadline
        if earliest < math.inf:
            self._timer = loop.call_at(earliest, self._expire)

    async def _drop(self, connection: Any) -> None:
        await connection.disconnect(nowait=True)
        await self._pool.release(connection)

    async def _move(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start over on ``loop``: connections and timers belong to the loop they ran on."""
        old = self._idle
        self._idle = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines.clear()
        self._expired.clear()
        self._loop = loop
        for connection in old:
            # Its loop may be closed already: the connection is gone either way.
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)
            await self._pool.release(connection)

    async def aclose(self) -> None:
        idle = self._idle
        while idle:
            await self._pool.release(idle.pop())

    def forget(self) -> None:
        self._idle = []


_LANES: weakref.WeakSet[Lane | AsyncLane] = weakref.WeakSet()


def _forget_in_child() -> None:
    # The kept connections share their sockets with the parent: drop them unused (their
    # pools reset themselves in the child too).
    for lane in list(_LANES):
        lane.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
