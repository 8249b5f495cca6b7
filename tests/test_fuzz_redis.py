"""Hostile input against a real Redis: junk written straight into a RedisSource hash,
arbitrary keys and limit names on RedisStorage, and junk names and costs between good
calls. Bad entries are reported and skipped, keys stay escaped, bounded and apart."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import pytest
import redis
from hypothesis import example, given
from hypothesis import strategies as st

from ratekeeper import DictSource, Limiter, Policy, RedisStorage
from ratekeeper.sources import RedisSource
from ratekeeper.sources._polling import parse_text
from ratekeeper.storage._redis_core import KEY_VERSION, key_component
from ratekeeper.testing import ManualClock
from tests.fuzzing import (
    FUZZ,
    MODEL_LIMITS,
    Operation,
    guarded,
    key_inputs,
    operations,
    run_model,
)
from tests.strategies import hostile_text, specs

pytestmark = pytest.mark.redis

HASH = "fuzz:limits"
# prefix (at most 40) + ":vN:{" + two components of at most 57 + "}:xx:" + a period in µs.
MAX_KEY = 40 + 5 + 57 + 1 + 57 + 5 + 16
_prefixes = itertools.count()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A raw client of the session's (flushed) redis-server."""
    raw = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        yield raw
    finally:
        raw.close()


def fresh_prefix() -> str:
    return f"fz{next(_prefixes)}"


def as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def spec_text(spec: object) -> str | bytes:
    """A spec as an operator might have stored it: JSON for tables, text otherwise."""
    if isinstance(spec, (str, bytes)):
        return spec
    try:
        return json.dumps(spec)
    except (TypeError, ValueError):
        return repr(spec)


field_names = st.one_of(hostile_text(), st.binary(min_size=1, max_size=6)).filter(
    lambda n: as_bytes(n) not in (b"good", b"__version__")
)
field_values = st.one_of(st.binary(max_size=40), specs().map(spec_text))


@FUZZ
@given(junk=st.dictionaries(field_names, field_values, max_size=6))
@example(junk={b"\xff\xfe": b"1/second", "bad": b"\xff", "deep": "{" + '"a":{' * 5000})
@example(junk={"huge": '{"rate": "1/second", "burst": ' + "9" * 5000 + "}", "nan": "NaN"})
def test_redis_source_reports_and_skips_junk_entries(
    client: redis.Redis, junk: dict[str | bytes, str | bytes]
) -> None:
    """Junk written into the hash with a raw client: each bad entry is a problem naming
    it, each good one is read, and the good limit still counts correctly."""
    fields = {as_bytes(name): as_bytes(value) for name, value in junk.items()}
    client.delete(HASH)
    pipe = client.pipeline()
    for field, value in [*fields.items(), (b"good", b"2/hour"), (b"__version__", b"1")]:
        pipe.hset(HASH, field, value)
    pipe.execute()
    source = guarded(RedisSource, client, HASH, subscribe=False, clock=ManualClock())
    try:
        snapshot = source.snapshot()
        assert snapshot["good"] == Policy.parse("2/hour")
        named = {p.name for p in source.problems}
        for raw_name, raw_value in fields.items():
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError:
                assert any(repr(raw_name) in p.message for p in source.problems)
                continue
            try:
                expected: Policy | None = parse_text(raw_value.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):  # ConfigError is a ValueError
                expected = None
            if expected is None:
                assert name in named
                assert name not in snapshot
            else:
                assert snapshot[name] == expected
                assert name not in named
        limiter = Limiter(source, RedisStorage(client, prefix=fresh_prefix()))
        assert [guarded(limiter.hit, "good").allowed for _ in range(3)] == [True, True, False]
    finally:
        source.close()


def written_keys(client: redis.Redis) -> set[bytes]:
    return {k if isinstance(k, bytes) else k.encode() for k in client.keys("*")}


@FUZZ
@given(keys=st.lists(key_inputs, min_size=1, max_size=12, unique=True))
@example(keys=["a:b", "a", "{a}", "a|b", "a%3Ab", "#" + "0" * 40, "x" * 100_000, "x" * 99_999])
@example(keys=["\x00", "\n", "\ud800", "\udfff", "é", "e\u0301", "*", "?", "[", "]"])
def test_keys_in_redis_are_escaped_bounded_and_apart(client: redis.Redis, keys: list[str]) -> None:
    """Distinct keys never share state; every Redis key written starts with the prefix
    and the limit's own space, and none is longer than the bound."""
    prefix = fresh_prefix()
    storage = RedisStorage(client, prefix=prefix, clock=ManualClock(1000.0))
    limiter = Limiter(
        DictSource({"one": "1/hour", "two": {"rate": "1/hour;5/day", "algorithm": "sliding-log"}}),
        storage,
    )
    before = written_keys(client)
    for name in ("one", "two"):
        assert all(guarded(limiter.hit, name, key=k).allowed for k in keys)
        assert not any(guarded(limiter.hit, name, key=k).allowed for k in keys)
    new = written_keys(client) - before
    assert len(new) == 3 * len(keys)  # one key per rate, per limit, per user key
    for name in ("one", "two"):
        space = f"{prefix}:{KEY_VERSION}:{{{key_component(name)}|".encode()
        mine = {k for k in new if k.startswith(space)}
        assert len(mine) == len(keys) * len(limiter.bound(name).meters)
        assert mine == {k.encode() for key in keys for k in storage.keys(limiter.bound(name), key)}
    assert all(len(k) <= MAX_KEY for k in new)


@FUZZ
@given(
    names=st.lists(hostile_text().filter(str.strip), min_size=1, max_size=8, unique=True),
)
@example(names=["a", "a*", "*", "[a]", "a:b", "{x}", "n" * 10_000, "\ud800"])
def test_limit_names_in_redis_are_escaped_and_apart(client: redis.Redis, names: list[str]) -> None:
    """Any limit names (globs, separators, surrogates, 10 kB): each name counts alone,
    under the prefix, within the key bound."""
    prefix = fresh_prefix()
    limiter = Limiter(
        DictSource(dict.fromkeys(names, "1/hour")),
        RedisStorage(client, prefix=prefix, clock=ManualClock(1000.0)),
    )
    # A glob need not match itself ("a[bc]"): only names that resolve can be hit.
    snapshot = limiter.source.snapshot()
    hit = [name for name in names if snapshot.resolve(name) is not None]
    before = written_keys(client)
    assert all(guarded(limiter.hit, name).allowed for name in hit)
    assert not any(guarded(limiter.hit, name).allowed for name in hit)
    new = written_keys(client) - before
    assert len(new) == len(hit)
    assert all(k.startswith(f"{prefix}:{KEY_VERSION}:{{".encode()) for k in new)
    assert all(len(k) <= MAX_KEY for k in new)


@FUZZ
@given(operations)
def test_redis_limiter_fed_junk_still_decides_right(
    client: redis.Redis, ops: list[Operation]
) -> None:
    """Bad names and costs (negative, bool, float, 10**30) are ConfigErrors that touch
    nothing; every good call is decided by the Lua script exactly as the model says."""
    storage = RedisStorage(client, prefix=fresh_prefix(), clock=ManualClock(1000.0))
    run_model(Limiter(DictSource(MODEL_LIMITS), storage), ops)
