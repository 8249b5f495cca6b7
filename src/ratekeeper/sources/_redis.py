"""RedisSource: limits in a Redis hash, so one change reaches every process of a fleet.

The hash maps limit names to specs (a rate string, or a JSON table) and holds a version
counter in its reserved field ``__version__``; every change made through :meth:`set` or
:meth:`delete` writes the entry and increments the counter in one MULTI, then PUBLISHes on
``<key>:changed``. Keeping the counter inside the hash keeps both on one key (one cluster
slot), and a reader gets entries and counter from one HGETALL.

A source reads the counter (one HGET) at most every ``interval`` seconds, and re-reads the
hash only when it moved; a listener thread makes the source look as soon as a change is
published. This module must never let Redis fail or slow a call: a read that fails keeps
the last good limits and is reported, and a bad entry is reported and skipped.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

from ratekeeper._rates import DEFAULT_ALGORITHM, Policy, PolicySpec
from ratekeeper.exceptions import ConfigError, StorageError
from ratekeeper.sources._base import Snapshot
from ratekeeper.sources._polling import PollingSource, Problem, logger, parse_text

try:
    import redis
    import redis.cluster
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - the extra is installed in development
    raise ImportError("RedisSource needs redis: pip install 'ratekeeper[redis]'") from exc

__all__ = ["VERSION_FIELD", "RedisSource", "encode_spec"]

VERSION_FIELD = "__version__"
_LISTEN_TIMEOUT = 0.25  # how often the listener checks whether close() was called
_MAX_BACKOFF = 5.0
_UNREAD = object()


def encode_spec(spec: PolicySpec) -> str:
    """The text a spec is stored as: a rate string as written, anything else as JSON."""
    policy = Policy.parse(spec)
    if isinstance(spec, str):
        text = spec.strip()
    else:
        table: dict[str, Any] = {"rate": ";".join(map(str, policy.rates))}
        if policy.algorithm != DEFAULT_ALGORITHM:
            table["algorithm"] = policy.algorithm
        if policy.burst is not None:
            table["burst"] = policy.burst
        if policy.mode != "enforce":
            table["mode"] = policy.mode
        text = json.dumps(table)
        try:
            same = parse_text(text) == policy
        except ConfigError:
            same = False
        if not same:
            raise ConfigError(f"{policy} cannot be written as a rate string (a fractional period?)")
    return text


class RedisSource(PollingSource):
    """Limits in the Redis hash ``key``, shared by every process that reads it.

    ``client`` is a ``redis.Redis``; :meth:`from_url` builds one with short timeouts and no
    retries, so a config read never holds a call for long. Operators change limits with
    :meth:`set` and :meth:`delete` (or ``ratekeeper set``); an entry written by other means
    is seen when the ``__version__`` field of the hash is incremented too. With
    ``subscribe=True`` a daemon thread listens on ``<key>:changed`` and makes the source
    look at once; :meth:`close` stops it and the looks. ``clock`` is as in FileSource.
    """

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        key: str = "ratekeeper:limits",
        interval: float = 1.0,
        *,
        subscribe: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"RedisSource needs a non-empty key, got {key!r}")
        super().__init__(interval, clock)
        self._client = client
        self._key = key
        self._channel = f"{key}:changed"
        self._seen: object = _UNREAD  # the counter of the table last read
        self._owns_client = False
        self._closed = threading.Event()
        self._subscribed = threading.Event()  # for tests: the listener is receiving
        self._notified = threading.Event()  # for tests: a notification arrived
        self.refresh()
        self._listener: threading.Thread | None = None
        if subscribe:
            self._listener = threading.Thread(
                target=self._listen, name=f"ratekeeper-source-{key}", daemon=True
            )
            self._listener.start()
        self._start()

    @classmethod
    def from_url(
        cls,
        url: str,
        interval: float = 1.0,
        *,
        key: str = "ratekeeper:limits",
        subscribe: bool = True,
        timeout: float = 0.25,
        clock: Callable[[], float] | None = None,
    ) -> RedisSource:
        """A source on a client of its own for ``url`` (closed by :meth:`close`)."""
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
        )
        try:
            source = cls(client, key, interval, subscribe=subscribe, clock=clock)
        except BaseException:
            client.close()
            raise
        source._owns_client = True
        return source

    @property
    def key(self) -> str:
        """The Redis hash that holds the limits."""
        return self._key

    @property
    def channel(self) -> str:
        """The pub/sub channel on which changes are announced."""
        return self._channel

    def set(self, name: str, spec: PolicySpec) -> None:
        """Add or change one limit for every process; a bad spec writes nothing."""
        _check_name(name)
        try:
            text = encode_spec(spec)
        except ConfigError as exc:
            raise ConfigError(f"limit {name!r}: {exc}") from None
        self._write(name, lambda pipe: pipe.hset(self._key, name, text))

    def delete(self, name: str) -> None:
        """Remove one limit for every process; a missing name is not an error."""
        _check_name(name)
        self._write(name, lambda pipe: pipe.hdel(self._key, name))

    def close(self) -> None:
        """Stop the listener and the looks, and close the client if :meth:`from_url` made it.

        The limits last read stay in force.
        """
        self._closed.set()
        super().close()
        if self._listener is not None:
            self._listener.join(timeout=4 * _LISTEN_TIMEOUT)
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> RedisSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write(self, name: str, change: Callable[[Any], object]) -> None:
        try:
            with self._client.pipeline(transaction=True) as pipe:
                change(pipe)
                pipe.hincrby(self._key, VERSION_FIELD, 1)
                pipe.execute()
            # Outside the transaction: a notification needs no atomicity, and Redis
            # Cluster refuses PUBLISH in a transaction. A lost one costs an interval.
            self._client.publish(self._channel, name)
        except redis.RedisError as exc:
            raise StorageError(f"{self!r}: could not write limit {name!r}: {exc}") from exc
        # Read back at once, so this process's next call obeys what it just wrote.
        self.refresh()

    def _poll(self) -> None:
        try:
            if self._client.hget(self._key, VERSION_FIELD) == self._seen:
                return
            table = self._client.hgetall(self._key)
        except redis.RedisError as exc:
            self._seen = _UNREAD  # read everything again once Redis answers
            error = StorageError(f"{self!r}: cannot read the limits: {exc}")
            error.__cause__ = exc
            problem = Problem(self._origin(), None, None, f"cannot read the limits: {exc}")
            self._report([problem], error)
            return
        self._apply(table)

    def _apply(self, table: Mapping[bytes | str, bytes | str]) -> None:
        if not table and len(self.snapshot()):
            # The hash is gone (deleted, or lost in a restart of a Redis without
            # persistence), not emptied: removing limits one by one keeps the counter.
            # Dropping every limit of a running fleet is never what that meant.
            self._seen = None
            problem = Problem(
                self._origin(),
                None,
                None,
                "the hash is gone (deleted, or lost in a Redis restart): write the limits "
                "again (ratekeeper set) to replace the last good ones",
            )
            self._report([problem])
            return
        policies: dict[str, Policy] = {}
        problems: list[Problem] = []
        counter: object = None
        for raw_name, raw_value in table.items():
            try:
                name = _text(raw_name)
            except UnicodeDecodeError:
                problems.append(
                    Problem(self._origin(), None, None, f"field {raw_name!r} is not UTF-8")
                )
                continue
            if name == VERSION_FIELD:
                counter = raw_value
                continue
            try:
                value = _text(raw_value)
                policies[name] = parse_text(value)
            except UnicodeDecodeError:
                problems.append(Problem(self._origin(), None, name, "the value is not UTF-8"))
            except ConfigError as exc:
                problems.append(Problem(self._origin(), None, name, f"{exc} (value {value!r})"))
        self._seen = counter
        before = self._version
        self._publish(Snapshot(policies))
        if self._version is not before:
            logger.info("%s: limits reloaded (%d entries)", self._origin(), len(policies))
        self._report(problems, consequence="skipping it")

    def _listen(self) -> None:
        backoff = 0.1
        while not self._closed.is_set():
            pubsub = None
            try:
                pubsub = self._client.pubsub()
                pubsub.subscribe(self._channel)
                while not self._closed.is_set():
                    message = pubsub.get_message(timeout=_LISTEN_TIMEOUT)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # Changes may have been missed while (re)connecting.
                        self.invalidate()
                        self._subscribed.set()
                        backoff = 0.1
                    elif message["type"] == "message":
                        self.invalidate()
                        self._notified.set()
            except Exception:  # any failure: reconnect quietly; polling still works
                self._subscribed.clear()
                self._closed.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            finally:
                if pubsub is not None:
                    with suppress(Exception):
                        pubsub.close()

    def _origin(self) -> str:
        return f"redis hash {self._key!r}"

    def __repr__(self) -> str:
        return f"RedisSource(key={self._key!r})"


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"a limit name must be a non-empty string, got {name!r}")
    if name == VERSION_FIELD:
        raise ConfigError(f"{VERSION_FIELD!r} is reserved for the version counter")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
