"""RedisStorage and AsyncRedisStorage: one exact limit shared by many processes and hosts.

Each decision is one ``EVALSHA`` of the package's Lua script, which decides every rate of
the policy on the server, against the server's clock, and writes only when the request is
admitted. A script missing from the server's cache (restart, failover, ``SCRIPT FLUSH``)
is loaded and the call retried once, which is safe because the script did not run; any
other failure is never retried, since a timed-out script may have run. Everything except
the client calls lives in the sans-I/O core (:mod:`ratekeeper.storage._redis_core`).
The back-off state of adaptive limits is read and recorded by a second script, under a key
with the same hash tag as the limit's rates, on the same clock.

On a standalone client a decision skips redis-py's generic command path, which costs
about as much as the round trip itself: it is sent already encoded on a connection the
storage keeps (see :mod:`ratekeeper.storage._redis_lanes`). A cluster client, or a client
with settings that path does not cover, goes through ``execute_command``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

try:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.exceptions import NoScriptError, RedisClusterException, RedisError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "the Redis storage needs the redis package: pip install 'ratekeeper[redis]'"
    ) from exc

from ratekeeper._algorithms import BoundLimit, Outcome
from ratekeeper.storage._redis_core import ADAPT_SCRIPT, SCRIPT, OnStorageError, RedisCore
from ratekeeper.storage._redis_lanes import AsyncLane, Lane
from ratekeeper.storage._redis_url import client_options

__all__ = ["AsyncRedisStorage", "RedisStorage"]

# What counts as "Redis could not decide": connection and timeout errors, error replies
# (OOM, READONLY, BUSY...) and the cluster client's own errors.
_FAILURES = (RedisError, RedisClusterException)


class RedisStorage(RedisCore):
    """Counting state in Redis, shared by every process and host that uses the same server.

    ``client`` is a ``redis.Redis`` or ``redis.cluster.RedisCluster``; :meth:`from_url`
    builds one with short timeouts and no retries. The time is the server's ``TIME``
    unless ``clock`` (seconds, e.g. a :class:`~ratekeeper.testing.ManualClock`) is given.
    ``prefix`` starts every key, so applications can share a server. When Redis fails,
    ``on_storage_error`` decides: ``"raise"`` a :class:`~ratekeeper.StorageError`,
    ``"allow"``, ``"deny"``, or ``"local"`` (decide in this process's memory); then for
    ``retry_interval`` seconds no call touches Redis, and the next one probes it.
    A client passed in is used as it is: give it short timeouts and no retries, since a
    decision that timed out may have run and must not run again. On a standalone client
    the storage keeps the connections it uses (one per thread deciding at once) out of
    the client's pool until :meth:`close`.
    """

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        prefix: str = "ratekeeper",
        clock: Callable[[], float] | None = None,
        on_storage_error: OnStorageError = "raise",
        retry_interval: float = 1.0,
    ) -> None:
        super().__init__(
            prefix=prefix,
            clock=clock,
            on_storage_error=on_storage_error,
            retry_interval=retry_interval,
        )
        self._client: Any = client
        self._owned = False
        # Without a lane every call goes through the client; with one, every call takes
        # the lane, so the storage never needs a second connection of the client's pool.
        self._lane = Lane.of(client)
        self._execute: Callable[..., Any] = (
            client.execute_command if self._lane is None else self._lane.command
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool | None = None,
        prefix: str = "ratekeeper",
        clock: Callable[[], float] | None = None,
        on_storage_error: OnStorageError = "raise",
        retry_interval: float = 1.0,
        socket_timeout: float = 0.25,
        socket_connect_timeout: float = 0.25,
        **options: Any,
    ) -> RedisStorage:
        """A storage with its own client for ``url`` (``redis://``, ``rediss://``, or
        ``redis+cluster://`` / ``cluster=True`` for a Redis Cluster).

        The client has 0.25 s socket and connect timeouts and no retries; ``options`` go
        to redis-py's ``from_url`` (``max_connections=``, ``ssl_ca_certs=``, ...).
        """
        url, is_cluster, kwargs = client_options(
            url, cluster, socket_timeout, socket_connect_timeout, options
        )
        kwargs["retry"] = Retry(NoBackoff(), 0)
        client: Any
        if is_cluster:
            # RedisCluster reads the topology when it is built, so build it at the first
            # decision: a cluster that is down then goes through the failure policy.
            client = _LazyCluster(lambda: redis.cluster.RedisCluster.from_url(url, **kwargs))
        else:
            client = redis.Redis.from_url(url, **kwargs)
        storage = cls(
            client,
            prefix=prefix,
            clock=clock,
            on_storage_error=on_storage_error,
            retry_interval=retry_interval,
        )
        storage._owned = True
        return storage

    @property
    def client(self) -> Any:
        """The redis-py client this storage talks to."""
        client = self._client
        return client.client() if isinstance(client, _LazyCluster) else client

    def decide(
        self, limit: BoundLimit, key: str, cost: int, max_wait_us: int = 0, commit: bool = True
    ) -> Outcome:
        """Apply ``limit`` to ``key`` in one round trip; see :class:`~ratekeeper.Storage`."""
        if self._open_until is not None and self._skip():
            return self._degraded(limit, key, cost, max_wait_us, commit, None)
        try:
            try:
                reply = self._send(limit, key, cost, max_wait_us, commit)
            except NoScriptError:
                self._script_load(SCRIPT)
                reply = self._send(limit, key, cost, max_wait_us, commit)
        except _FAILURES as error:
            self._trip(error)
            return self._degraded(limit, key, cost, max_wait_us, commit, error)
        if self._open_until is not None:
            self._recovered()
        return self._outcome(reply)

    def _send(self, limit: BoundLimit, key: str, cost: int, max_wait_us: int, commit: bool) -> Any:
        lane = self._lane
        if lane is None:
            return self._execute(*self._command(limit, key, cost, max_wait_us, commit))
        return lane.call(self._packed(limit, key, cost, max_wait_us, commit))

    def _script_load(self, script: str) -> object:
        # A cluster client loads a script on every primary: only it knows them.
        if self._lane is None:
            return self._client.script_load(script)
        return self._lane.command("SCRIPT", "LOAD", script)

    def reset(self, limit: BoundLimit, key: str) -> None:
        """Forget the state of ``key`` under every rate of ``limit``."""
        self._reset_fallback(limit, key)
        if self._open_until is not None and self._skip():
            self._reset_failed(None)
            return
        try:
            self._execute(*self._reset_command(limit, key))
        except _FAILURES as error:
            self._trip(error)
            self._reset_failed(error)
            return
        if self._open_until is not None:
            self._recovered()

    def scale(self, limit: BoundLimit, key: str) -> int:
        """The back-off scale (permille) in force for ``key`` under an adaptive limit."""
        return self._adapt(limit, key, None)

    def throttle(self, limit: BoundLimit, key: str, params: tuple[int, int, int, int, int]) -> int:
        """Record a throttle signal for every process sharing this Redis; returns the scale
        now in force."""
        return self._adapt(limit, key, params)

    def _adapt(
        self, limit: BoundLimit, key: str, params: tuple[int, int, int, int, int] | None
    ) -> int:
        if self._open_until is not None and self._skip():
            return self._adapt_degraded(limit, key, params, None)
        command = self._adapt_command(limit, key, params)
        try:
            try:
                reply = self._execute(*command)
            except NoScriptError:
                self._script_load(ADAPT_SCRIPT)
                reply = self._execute(*command)
        except _FAILURES as error:
            self._trip(error)
            return self._adapt_degraded(limit, key, params, error)
        if self._open_until is not None:
            self._recovered()
        return int(reply)

    def close(self) -> None:
        """Close the client if :meth:`from_url` made it; a client passed in is the caller's.
        Either way the connections this storage kept go back to the client's pool."""
        if self._lane is not None:
            self._lane.close()
        if self._owned:
            self._client.close()

    def __enter__(self) -> RedisStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRedisStorage(RedisCore):
    """The asyncio twin of :class:`RedisStorage`, for :class:`~ratekeeper.AsyncLimiter`.

    ``client`` is a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``;
    everything else is as in :class:`RedisStorage`.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
        *,
        prefix: str = "ratekeeper",
        clock: Callable[[], float] | None = None,
        on_storage_error: OnStorageError = "raise",
        retry_interval: float = 1.0,
    ) -> None:
        super().__init__(
            prefix=prefix,
            clock=clock,
            on_storage_error=on_storage_error,
            retry_interval=retry_interval,
        )
        self._client: Any = client
        self._owned = False
        self._lane = AsyncLane.of(client)
        self._execute: Callable[..., Awaitable[Any]] = (
            client.execute_command if self._lane is None else self._lane.command
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool | None = None,
        prefix: str = "ratekeeper",
        clock: Callable[[], float] | None = None,
        on_storage_error: OnStorageError = "raise",
        retry_interval: float = 1.0,
        socket_timeout: float = 0.25,
        socket_connect_timeout: float = 0.25,
        **options: Any,
    ) -> AsyncRedisStorage:
        """A storage with its own asyncio client for ``url``; see
        :meth:`RedisStorage.from_url`. The client connects at the first decision."""
        url, is_cluster, kwargs = client_options(
            url, cluster, socket_timeout, socket_connect_timeout, options
        )
        kwargs["retry"] = AsyncRetry(NoBackoff(), 0)
        client: Any
        if is_cluster:
            client = redis.asyncio.cluster.RedisCluster.from_url(url, **kwargs)
        else:
            client = redis.asyncio.Redis.from_url(url, **kwargs)
        storage = cls(
            client,
            prefix=prefix,
            clock=clock,
            on_storage_error=on_storage_error,
            retry_interval=retry_interval,
        )
        storage._owned = True
        return storage

    @property
    def client(self) -> Any:
        """The redis-py asyncio client this storage talks to."""
        return self._client

    async def decide(
        self, limit: BoundLimit, key: str, cost: int, max_wait_us: int = 0, commit: bool = True
    ) -> Outcome:
        """Apply ``limit`` to ``key`` in one round trip; see :class:`~ratekeeper.AsyncStorage`."""
        if self._open_until is not None and self._skip():
            return self._degraded(limit, key, cost, max_wait_us, commit, None)
        try:
            try:
                reply = await self._send(limit, key, cost, max_wait_us, commit)
            except NoScriptError:
                await self._script_load(SCRIPT)
                reply = await self._send(limit, key, cost, max_wait_us, commit)
        except _FAILURES as error:
            self._trip(error)
            return self._degraded(limit, key, cost, max_wait_us, commit, error)
        if self._open_until is not None:
            self._recovered()
        return self._outcome(reply)

    def _send(
        self, limit: BoundLimit, key: str, cost: int, max_wait_us: int, commit: bool
    ) -> Awaitable[Any]:
        # A plain function handing back the call's awaitable: no coroutine frame of its own.
        lane = self._lane
        if lane is None:
            return self._execute(*self._command(limit, key, cost, max_wait_us, commit))
        return lane.call(self._packed(limit, key, cost, max_wait_us, commit))

    def _script_load(self, script: str) -> Awaitable[object]:
        if self._lane is None:
            return self._client.script_load(script)  # type: ignore[no-any-return]
        return self._lane.command("SCRIPT", "LOAD", script)

    async def reset(self, limit: BoundLimit, key: str) -> None:
        """Forget the state of ``key`` under every rate of ``limit``."""
        self._reset_fallback(limit, key)
        if self._open_until is not None and self._skip():
            self._reset_failed(None)
            return
        try:
            await self._execute(*self._reset_command(limit, key))
        except _FAILURES as error:
            self._trip(error)
            self._reset_failed(error)
            return
        if self._open_until is not None:
            self._recovered()

    async def scale(self, limit: BoundLimit, key: str) -> int:
        """The back-off scale (permille) in force for ``key`` under an adaptive limit."""
        return await self._adapt(limit, key, None)

    async def throttle(
        self, limit: BoundLimit, key: str, params: tuple[int, int, int, int, int]
    ) -> int:
        """Record a throttle signal for every process sharing this Redis; returns the scale
        now in force."""
        return await self._adapt(limit, key, params)

    async def _adapt(
        self, limit: BoundLimit, key: str, params: tuple[int, int, int, int, int] | None
    ) -> int:
        if self._open_until is not None and self._skip():
            return self._adapt_degraded(limit, key, params, None)
        command = self._adapt_command(limit, key, params)
        try:
            try:
                reply = await self._execute(*command)
            except NoScriptError:
                await self._script_load(ADAPT_SCRIPT)
                reply = await self._execute(*command)
        except _FAILURES as error:
            self._trip(error)
            return self._adapt_degraded(limit, key, params, error)
        if self._open_until is not None:
            self._recovered()
        return int(reply)

    async def aclose(self) -> None:
        """Close the client if :meth:`from_url` made it; a client passed in is the caller's.
        Either way the connections this storage kept go back to the client's pool."""
        if self._lane is not None:
            await self._lane.aclose()
        if self._owned:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncRedisStorage:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _LazyCluster:
    """A sync RedisCluster built at its first command (building one reads the topology)."""

    __slots__ = ("_client", "_factory")

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client

    def execute_command(self, *args: Any) -> Any:
        return self.client().execute_command(*args)

    def script_load(self, script: str) -> Any:
        return self.client().script_load(script)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
