"""Shadow mode end to end, and what ratekeeper logs (reloads, rejected config, storage)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratekeeper import (
    AsyncLimiter,
    DictSource,
    FileSource,
    Limiter,
    LimitStats,
    MemoryStorage,
    StorageError,
)
from ratekeeper._rates import PolicySpec
from ratekeeper.testing import ManualClock
from tests.test_observe import Recorder, make, make_async


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


# Shadow mode, end to end: reported and counted as refusals, never refusing or delaying.

SHADOW: dict[str, PolicySpec] = {"new": {"rate": "1/minute", "mode": "shadow"}}


def test_shadow_decorator_runs_every_call_and_reports_refusals(clock: ManualClock) -> None:
    """A shadow limit's decorated calls all run, unpaced; refusals reach listeners and stats."""
    limiter, recorder = make(SHADOW, clock)
    limiter.enable_stats()
    ran = []

    @limiter.limit("new")
    def refusing() -> None:
        ran.append(clock())

    @limiter.limit("new", on_exceeded="wait")
    def pacing() -> None:
        ran.append(clock())

    refusing()
    refusing()
    pacing()
    assert ran == [1000.0, 1000.0, 1000.0]  # never refused, never delayed
    assert recorder.outcomes() == [(True, True, 0.0), (False, True, 0.0), (False, True, 0.0)]
    assert limiter.stats()["new"] == LimitStats(admitted=1, shadow_denied=2)


def test_shadow_hit_and_acquire_report_but_never_wait(clock: ManualClock) -> None:
    """hit and acquire on a shadow limit return at once; listeners see shadow refusals."""
    limiter, recorder = make(SHADOW, clock)
    limiter.hit("new")
    assert limiter.hit("new").shadow
    assert not limiter.acquire("new", timeout=None).allowed
    assert clock() == 1000.0
    assert recorder.outcomes() == [(True, True, 0.0), (False, True, 0.0), (False, True, 0.0)]


def test_shadow_on_the_async_limiter(clock: ManualClock) -> None:
    """AsyncLimiter: shadow refusals are reported and counted, and calls run at once."""
    limiter, recorder = make_async(SHADOW, clock)
    limiter.enable_stats()

    @limiter.limit("new", on_exceeded="wait")
    async def call() -> str:
        return "ran"

    async def scenario() -> list[str]:
        await limiter.hit("new")
        await limiter.acquire("new")
        return [await call(), await call()]

    assert asyncio.run(scenario()) == ["ran", "ran"]
    assert clock() == 1000.0
    assert [d.allowed for d in recorder.decisions] == [True, False, False, False]
    assert all(d.shadow for d in recorder.decisions)
    assert limiter.stats()["new"] == LimitStats(admitted=1, shadow_denied=3)


def test_shadow_entry_in_a_toml_file(tmp_path: Path, clock: ManualClock) -> None:
    """mode = "shadow" in a limits file: the decorated call is never refused, only reported."""
    path = tmp_path / "ratelimits.toml"
    path.write_text('[limits."reports.export"]\nrate = "1/hour"\nmode = "shadow"\n')
    limiter = Limiter(FileSource(path, clock=clock), MemoryStorage(clock=clock))
    recorder = Recorder()
    limiter.add_listener(recorder)

    @limiter.limit("reports.export")
    def export() -> str:
        return "done"

    assert [export() for _ in range(3)] == ["done"] * 3
    assert [(d.allowed, d.shadow) for d in recorder.decisions] == [
        (True, True),
        (False, True),
        (False, True),
    ]
    assert recorder.decisions[-1].policy.mode == "shadow"


# Logging: the "ratekeeper" logger and its children.


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="ratekeeper"):
        yield caplog


def test_file_reload_and_rejected_config_are_logged(
    tmp_path: Path, clock: ManualClock, caplog_info: pytest.LogCaptureFixture
) -> None:
    """A reload is logged at INFO; a rejected file at WARNING with file, line and limit."""
    path = tmp_path / "limits.toml"
    path.write_text('[limits]\n"jobs" = "1/second"\n')
    source = FileSource(path, clock=clock)
    path.write_text('[limits]\n"jobs" = "2/second"\n')
    clock.advance(2.0)
    _ = source.version
    path.write_text('[limits]\n"jobs" = "2/second"\n"bad" = "5/fortnight"\n')
    clock.advance(2.0)
    _ = source.version
    messages = [(r.levelno, r.getMessage()) for r in caplog_info.records]
    assert (logging.INFO, f"{path}: limits reloaded (1 entries)") in messages
    warnings = [text for level, text in messages if level == logging.WARNING]
    assert len(warnings) == 1
    assert f"{path}:3: limit 'bad'" in warnings[0]
    assert "keeping the last good limits" in warnings[0]


def test_storage_failure_is_logged_once_and_counted(
    clock: ManualClock, caplog_info: pytest.LogCaptureFixture
) -> None:
    """Redis unreachable: one warning, then stats count errors and fallbacks per limit."""
    from ratekeeper import RedisStorage
    from tests.servers import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with RedisStorage.from_url(url, on_storage_error="allow", retry_interval=60.0) as storage:
        limiter = Limiter(DictSource({"sns.publish": "1/second"}), storage)
        limiter.enable_stats()
        assert all(limiter.hit("sns.publish").allowed for _ in range(3))
        limiter.peek("sns.publish")
        stats = limiter.stats()["sns.publish"]
    assert (stats.admitted, stats.storage_errors, stats.fallbacks) == (3, 3, 3)
    failures = [r for r in caplog_info.records if r.name == "ratekeeper"]
    assert len(failures) == 1
    assert failures[0].levelno == logging.WARNING
    assert "Redis storage failed" in failures[0].getMessage()
    assert "on_storage_error='allow'" in failures[0].getMessage()


def test_storage_errors_that_raise_are_counted_without_fallbacks() -> None:
    """on_storage_error='raise': each failed decision counts as an error, not a fallback."""
    from ratekeeper import RedisStorage
    from tests.servers import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    with RedisStorage.from_url(url, on_storage_error="raise") as storage:
        limiter = Limiter(DictSource({"q": "1/second"}), storage)
        limiter.enable_stats()
        for _ in range(2):
            with pytest.raises(StorageError):
                limiter.hit("q")
        assert limiter.stats() == {"q": LimitStats(storage_errors=2)}


def test_enforcing_a_shadow_limit_keeps_its_counts(clock: ManualClock) -> None:
    """Dropping mode="shadow" enforces from the state built while shadowing."""
    limiter, _ = make({"new": {"rate": "2/minute", "mode": "shadow"}}, clock)
    source = limiter.source
    assert isinstance(source, DictSource)
    assert [limiter.hit("new").allowed for _ in range(3)] == [True, True, False]
    source.set("new", "2/minute")
    decision = limiter.hit("new")
    assert (decision.allowed, decision.shadow) == (False, False)


@pytest.mark.redis
def test_redis_source_reload_is_logged(
    redis_url: str, clock: ManualClock, caplog_info: pytest.LogCaptureFixture
) -> None:
    """A RedisSource logs at INFO when it loads changed limits, and not when nothing moved."""
    from ratekeeper import RedisSource

    with RedisSource.from_url(redis_url, subscribe=False, clock=clock) as source:
        source.set("jobs", "1/second")
        clock.advance(2.0)
        _ = source.version
        clock.advance(2.0)
        _ = source.version
    reloads = [r.getMessage() for r in caplog_info.records if "reloaded" in r.getMessage()]
    assert reloads == ["redis hash 'ratekeeper:limits': limits reloaded (1 entries)"]


def test_async_redis_storage_failures_reach_stats() -> None:
    """AsyncLimiter over an unreachable AsyncRedisStorage: 'deny' fallbacks are counted."""
    from ratekeeper import AsyncRedisStorage
    from tests.servers import free_port

    async def scenario() -> dict[str, LimitStats]:
        url = f"redis://127.0.0.1:{free_port()}/0"
        async with AsyncRedisStorage.from_url(url, on_storage_error="deny") as storage:
            limiter = AsyncLimiter(DictSource({"q": "5/second"}), storage)
            limiter.enable_stats()
            assert not (await limiter.hit("q")).allowed
            assert not (await limiter.hit("q")).allowed
            return limiter.stats()

    stats = asyncio.run(scenario())
    assert stats == {"q": LimitStats(denied=2, storage_errors=2, fallbacks=2)}
