"""The sans-I/O core of the Redis storages: script, keys, arguments, failure policy.

:class:`~ratekeeper.RedisStorage` and :class:`~ratekeeper.AsyncRedisStorage` share all of
this and differ only where one awaits the client. Nothing here imports redis or touches a
socket: it assembles the Lua script from the package's ``lua/*.lua`` files (one file per
algorithm step, plus the driver that decides every rate of a policy at once) and the
back-off script of adaptive limits, builds escaped, length-bounded keys that share one
hash tag per (limit name, key), precomputes the EVALSHA arguments per
:class:`~ratekeeper._algorithms.BoundLimit`, and runs the circuit breaker and the failure
policy.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import threading
from collections.abc import Callable
from importlib import resources
from typing import Literal, get_args
from urllib.parse import quote

from ratekeeper._adaptive import FULL
from ratekeeper._algorithms import BoundLimit, Outcome
from ratekeeper.exceptions import ConfigError, StorageError
from ratekeeper.storage._memory import MemoryStorage, micros

__all__ = [
    "ADAPT_SCRIPT",
    "ADAPT_SHA",
    "SCRIPT",
    "SCRIPT_SHA",
    "OnStorageError",
    "RedisCore",
    "key_component",
    "redis_key",
]

OnStorageError = Literal["raise", "allow", "deny", "local"]
ON_STORAGE_ERROR: tuple[OnStorageError, ...] = get_args(OnStorageError)

_LUA_PARTS = ("common", "fixed_window", "sliding_window", "sliding_log", "token_bucket", "decide")
_ADAPT_PARTS = ("common", "adaptive")


def _assemble(parts: tuple[str, ...]) -> str:
    folder = resources.files("ratekeeper.storage").joinpath("lua")
    return "\n".join(folder.joinpath(f"{p}.lua").read_text(encoding="utf-8") for p in parts)


SCRIPT = _assemble(_LUA_PARTS)
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
_SHA_BYTES = SCRIPT_SHA.encode()
# Back-off is read and recorded by its own script: it is not on a decision's round trip
# (the limiter caches the scale), and the decision script stays as small as it can.
ADAPT_SCRIPT = _assemble(_ADAPT_PARTS)
ADAPT_SHA = hashlib.sha1(ADAPT_SCRIPT.encode()).hexdigest()

# Key layout: <prefix>:v2:{<name>|<key>}:<algorithm>:<period_us>, and
# <prefix>:v2:{<name>|<key>}:bo for an adaptive limit's back-off. The braces make the
# escaped (name, key) pair the hash tag, so every rate of one decision lands in one Cluster
# slot while different keys spread over the cluster. The amount is never part of the key:
# a changed rate keeps its count. The version names the format of the stored states (v2:
# packed doubles; v1 was text), so code never reads a format it does not know.
KEY_VERSION = "v2"
_CODES = {
    "fixed-window": ("fw", 1),
    "sliding-window": ("sw", 2),
    "sliding-log": ("sl", 3),
    "token-bucket": ("tb", 4),
}
# Escaping is injective: '%' itself and the separators ('{', '}', ':', '|') are encoded,
# and so is '#', which starts a hashed component.
_SAFE = "-._~!$&'()*+,;=@/"
_COMPONENT_MAX = 56
_PREFIX_MAX = 40
_HEADS_MAX = 4096  # cached (limit, key) -> EVALSHA head; cleared when full
# With clock=, TTLs are counted on that clock, which need not run at the server's pace (a
# ManualClock stands still): keep keys a minute longer so one never vanishes before its
# state is stale on that clock. A stale state left behind counts for nothing.
CLOCK_TTL_SLACK_MS = 60_000

_log = logging.getLogger("ratekeeper")


def key_component(text: str) -> str:
    """``text`` percent-encoded, or ``#`` and a blake2b digest when that would be long."""
    if text.isascii() and text.isalnum():
        escaped = text
    else:
        escaped = quote(text, safe=_SAFE, errors="surrogatepass")
    if len(escaped) <= _COMPONENT_MAX:
        return escaped
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=20)
    return "#" + digest.hexdigest()


def redis_key(prefix: str, name: str, key: str, algorithm: str, period_us: int) -> str:
    """The Redis key holding the state of one rate of limit ``name`` for ``key``."""
    code = _CODES[algorithm][0]
    return (
        f"{prefix}:{KEY_VERSION}:{{{key_component(name)}|{key_component(key)}}}:{code}:{period_us}"
    )


def check_prefix(prefix: object) -> str:
    if (
        not isinstance(prefix, str)
        or not 1 <= len(prefix) <= _PREFIX_MAX
        or not all("!" <= c <= "~" for c in prefix)
        or "{" in prefix
        or "}" in prefix
    ):
        raise ConfigError(
            f"prefix must be 1 to {_PREFIX_MAX} printable ASCII characters without spaces "
            f"or braces, got {prefix!r}"
        )
    return prefix


class _Plan:
    """The EVALSHA arguments of one BoundLimit: computed once, reused by every decision.

    ``heads`` caches per key the command up to the packed policy (for redis-py's
    ``execute_command``), ``wires`` the same already in the Redis protocol (for a
    connection's ``send_packed_command``); the per-call arguments follow either.
    """

    __slots__ = ("argc", "heads", "limit", "name", "policy", "prefix", "suffixes", "wires")

    def __init__(self, limit: BoundLimit, prefix: str, slack_ms: int, timed: bool) -> None:
        self.limit = limit
        self.prefix = prefix
        self.name = key_component(limit.name)
        self.suffixes = tuple(
            f"}}:{_CODES[m.algorithm][0]}:{m.period_us}".encode() for m in limit.meters
        )
        numbers: list[int] = [slack_ms]
        for m in limit.meters:
            numbers += (_CODES[m.algorithm][1], m.amount, m.period_us, m.capacity, m.interval_us)
        # Doubles hold every one of these integers exactly (they are below 2**53), and the
        # script reads them with one struct.unpack instead of a tonumber() each.
        self.policy = struct.pack(f"<{len(numbers)}d", *numbers)
        # EVALSHA, sha, numkeys, keys, policy, cost, max_wait, commit[, now]
        self.argc = 7 + len(limit.meters) + timed
        self.heads: dict[str, tuple[object, ...]] = {}
        self.wires: dict[str, bytes] = {}

    def tag(self, key: str) -> bytes:
        return f"{self.prefix}:{KEY_VERSION}:{{{self.name}|{key_component(key)}".encode()

    def keys(self, key: str) -> tuple[bytes, ...]:
        tag = self.tag(key)
        return tuple(tag + suffix for suffix in self.suffixes)

    def backoff_key(self, key: str) -> bytes:
        return self.tag(key) + b"}:bo"

    def head(self, key: str) -> tuple[object, ...]:
        keys = self.keys(key)
        head = ("EVALSHA", SCRIPT_SHA, len(keys), *keys, self.policy)
        heads = self.heads
        if len(heads) >= _HEADS_MAX:
            heads.clear()
        heads[key] = head
        return head

    def wire(self, key: str) -> bytes:
        keys = self.keys(key)
        words = (b"EVALSHA", _SHA_BYTES, b"%d" % len(keys), *keys, self.policy)
        wire = b"*%d\r\n%b" % (self.argc, b"".join(map(_bulk, words)))
        wires = self.wires
        if len(wires) >= _HEADS_MAX:
            wires.clear()
        wires[key] = wire
        return wire


def _bulk(word: bytes) -> bytes:
    """``word`` as a bulk string of the Redis protocol."""
    return b"$%d\r\n%b\r\n" % (len(word), word)


def _tail(cost: int, max_wait_us: int, commit: bool) -> bytes:
    """A decision's own arguments, after its cached head, in the Redis protocol."""
    return b"%b%b%b" % (_bulk(b"%d" % cost), _bulk(b"%d" % max_wait_us), _COMMIT_WIRE[commit])


_COMMIT = (b"0", b"1")
# The script's reply: allowed, available, retry_after, reset_after, binding index.
_REPLY = struct.Struct("<5q").unpack
_COMMIT_WIRE = (b"$1\r\n0\r\n", b"$1\r\n1\r\n")
_TAILS_MAX = 1024  # cached (cost, max_wait, commit) -> the end of a packed decision


class RedisCore:
    """What RedisStorage and AsyncRedisStorage share: everything but the awaiting."""

    def __init__(
        self,
        *,
        prefix: str,
        clock: Callable[[], float] | None,
        on_storage_error: OnStorageError,
        retry_interval: float,
    ) -> None:
        self._prefix = check_prefix(prefix)
        if on_storage_error not in ON_STORAGE_ERROR:
            raise ConfigError(
                f"unknown on_storage_error {on_storage_error!r} "
                f"(expected one of: {', '.join(ON_STORAGE_ERROR)})"
            )
        if (
            isinstance(retry_interval, bool)
            or not isinstance(retry_interval, (int, float))
            or not 0 <= retry_interval < 86400 * 365
        ):
            raise ConfigError(
                f"retry_interval must be a number of seconds >= 0, got {retry_interval!r}"
            )
        self._on_error: OnStorageError = on_storage_error
        self._retry_us = round(retry_interval * 1_000_000)
        self._clock = clock
        # The script's "now": None means the server's TIME.
        self._now: Callable[[], int] | None = None if clock is None else micros(clock)
        self._breaker_now = micros(clock)
        self._slack_ms = 0 if clock is None else CLOCK_TTL_SLACK_MS
        self._plans: dict[str, _Plan] = {}
        self._tails: dict[tuple[int, int, bool], bytes] = {}
        self._fallback = MemoryStorage(clock=clock) if on_storage_error == "local" else None
        # None: the breaker is closed. Otherwise the instant (breaker clock, µs) before
        # which no call touches Redis; past it, the first call probes and re-arms it.
        self._open_until: int | None = None
        self._last_error: BaseException | None = None
        self._breaker_lock = threading.Lock()
        # Per limit name: [decisions Redis did not make, those the failure policy answered].
        self._failures: dict[str, list[int]] = {}

    @property
    def prefix(self) -> str:
        """The first part of every key this storage writes."""
        return self._prefix

    @property
    def on_storage_error(self) -> OnStorageError:
        """What a decision does when Redis cannot answer."""
        return self._on_error

    def failure_counts(self) -> dict[str, tuple[int, int]]:
        """Per limit name, since this storage was made: (decisions Redis did not make,
        because it failed or the breaker was open; those the failure policy answered
        instead of raising). Limiters report them in ``stats()``."""
        with self._breaker_lock:
            return {name: (counts[0], counts[1]) for name, counts in self._failures.items()}

    def keys(self, limit: BoundLimit, key: str) -> list[str]:
        """The Redis keys that hold the state of ``key`` under every rate of ``limit``."""
        return [k.decode() for k in self._plan(limit).keys(key)]

    def _plan(self, limit: BoundLimit) -> _Plan:
        plan = self._plans.get(limit.name)
        if plan is None or plan.limit is not limit:
            plan = _Plan(limit, self._prefix, self._slack_ms, self._now is not None)
            self._plans[limit.name] = plan
        return plan

    def _command(
        self, limit: BoundLimit, key: str, cost: int, max_wait_us: int, commit: bool
    ) -> tuple[object, ...]:
        plan = self._plans.get(limit.name)
        if plan is None or plan.limit is not limit:
            plan = self._plan(limit)
        head = plan.heads.get(key)
        if head is None:
            head = plan.head(key)
        if self._now is None:
            return (*head, cost, max_wait_us, _COMMIT[commit])
        return (*head, cost, max_wait_us, _COMMIT[commit], self._now())

    def _packed(
        self, limit: BoundLimit, key: str, cost: int, max_wait_us: int, commit: bool
    ) -> bytes:
        """The EVALSHA of :meth:`_command`, already in the Redis protocol."""
        plan = self._plans.get(limit.name)
        if plan is None or plan.limit is not limit:
            plan = self._plan(limit)
        wire = plan.wires.get(key)
        if wire is None:
            wire = plan.wire(key)
        tails = self._tails
        tail = tails.get((cost, max_wait_us, commit))
        if tail is None:
            if len(tails) >= _TAILS_MAX:
                tails.clear()
            tail = tails[cost, max_wait_us, commit] = _tail(cost, max_wait_us, commit)
        if self._now is None:
            return wire + tail
        return wire + tail + _bulk(b"%d" % self._now())

    @staticmethod
    def _outcome(reply: bytes) -> Outcome:
        allowed, available, retry_after, reset_after, binding = _REPLY(reply)
        return (allowed == 1, None, available, retry_after, reset_after, binding)

    def _reset_command(self, limit: BoundLimit, key: str) -> tuple[object, ...]:
        plan = self._plan(limit)
        return ("DEL", *plan.keys(key), plan.backoff_key(key))

    def _adapt_command(
        self, limit: BoundLimit, key: str, params: tuple[int, int, int, int, int] | None
    ) -> tuple[object, ...]:
        """The EVALSHA that reads the back-off scale (``params`` None) or records a throttle."""
        now = b"" if self._now is None else self._now()
        head = ("EVALSHA", ADAPT_SHA, 1, self._plan(limit).backoff_key(key), now)
        if params is None:
            return (*head, b"s", self._slack_ms)
        return (*head, b"t", self._slack_ms, *params)

    def _adapt_degraded(
        self,
        limit: BoundLimit,
        key: str,
        params: tuple[int, int, int, int, int] | None,
        error: BaseException | None,
    ) -> int:
        """The scale the failure policy gives when Redis did not answer a back-off call."""
        if self._on_error == "local":
            assert self._fallback is not None
            if params is None:
                return self._fallback.scale(limit, key)
            return self._fallback.throttle(limit, key, params)
        if self._on_error == "raise":
            raise self._storage_error(error)
        # "allow" and "deny" decide without Redis; the configured rate is what is known.
        return FULL

    # The breaker. The closed state costs one attribute test per call; the lock is taken
    # only around a failure or an open breaker.

    def _skip(self) -> bool:
        """With the breaker open: True while this call must not touch Redis; the first
        call past the retry interval gets False and probes, the others keep skipping."""
        now = self._breaker_now()
        with self._breaker_lock:
            until = self._open_until
            if until is None:
                return False
            if now < until:
                return True
            self._open_until = now + self._retry_us
            return False

    def _trip(self, error: BaseException) -> None:
        with self._breaker_lock:
            if self._open_until is None:
                _log.warning(
                    "Redis storage failed (%s: %s); on_storage_error=%r for %.3g s",
                    type(error).__name__,
                    error,
                    self._on_error,
                    self._retry_us / 1e6,
                )
            self._open_until = self._breaker_now() + self._retry_us
            self._last_error = error

    def _recovered(self) -> None:
        with self._breaker_lock:
            if self._open_until is not None:
                self._open_until = None
                self._last_error = None
                _log.warning("Redis storage answers again")

    def _degraded(
        self,
        limit: BoundLimit,
        key: str,
        cost: int,
        max_wait_us: int,
        commit: bool,
        error: BaseException | None,
    ) -> Outcome:
        """The outcome the failure policy gives when Redis did not (or may not) answer."""
        policy = self._on_error
        if commit:  # a peek is not a decision: it is not counted
            with self._breaker_lock:
                counts = self._failures.setdefault(limit.name, [0, 0])
                counts[0] += 1
                counts[1] += policy != "raise"
        if policy == "local":
            assert self._fallback is not None
            return self._fallback.decide(limit, key, cost, max_wait_us, commit)
        if policy == "allow":
            return (True, None, 0, 0, 0, 0)
        if policy == "deny":
            until = self._open_until
            wait = self._retry_us if until is None else until - self._breaker_now()
            return (False, None, 0, max(wait, 1), 0, 0)
        raise self._storage_error(error)

    def _storage_error(self, error: BaseException | None) -> StorageError:
        if error is None:  # the breaker is open: no call was made, report the last failure
            error = self._last_error
            message = f"Redis storage unavailable (retrying after {self._retry_us / 1e6:g} s)"
        else:
            message = "Redis storage failed"
        failure = StorageError(f"{message}: {type(error).__name__}: {error}")
        failure.__cause__ = error
        return failure

    def _reset_failed(self, error: BaseException | None) -> None:
        if self._on_error == "raise":
            raise self._storage_error(error)

    def _reset_fallback(self, limit: BoundLimit, key: str) -> None:
        if self._fallback is not None:
            self._fallback.reset(limit, key)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(prefix={self._prefix!r}, on_storage_error={self._on_error!r})"
        )
