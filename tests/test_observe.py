"""Decision listeners and per-limit stats: what they are told, what they count, what it costs."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from ratekeeper import (
    AsyncLimiter,
    Decision,
    DictSource,
    Limiter,
    LimitStats,
    MemoryStorage,
    RateLimitExceeded,
)
from ratekeeper._algorithms import BoundLimit, Outcome
from ratekeeper._rates import PolicySpec
from ratekeeper.testing import ManualClock


class Recorder:
    """A listener that keeps every decision it is given."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def __call__(self, decision: Decision) -> None:
        self.decisions.append(decision)

    def outcomes(self) -> list[tuple[bool, bool, float]]:
        return [(d.allowed, d.shadow, d.waited) for d in self.decisions]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


def make(limits: dict[str, PolicySpec], clock: ManualClock) -> tuple[Limiter, Recorder]:
    limiter = Limiter(DictSource(limits), MemoryStorage(clock=clock), sleep=clock.sleep)
    recorder = Recorder()
    limiter.add_listener(recorder)
    return limiter, recorder


def make_async(limits: dict[str, PolicySpec], clock: ManualClock) -> tuple[AsyncLimiter, Recorder]:
    limiter = AsyncLimiter(DictSource(limits), MemoryStorage(clock=clock), sleep=clock.async_sleep)
    recorder = Recorder()
    limiter.add_listener(recorder)
    return limiter, recorder


def test_listener_sees_every_hit_but_no_peek(clock: ManualClock) -> None:
    """hit reports admitted and refused decisions; peek reports nothing."""
    limiter, recorder = make({"jobs": "1/minute"}, clock)
    first = limiter.hit("jobs", key="k")
    limiter.peek("jobs", key="k")
    second = limiter.hit("jobs", key="k")
    assert recorder.decisions == [first, second]
    assert [d.allowed for d in recorder.decisions] == [True, False]


def test_acquire_reports_how_long_the_caller_waited(clock: ManualClock) -> None:
    """acquire reports one admitted decision whose waited is the time slept."""
    limiter, recorder = make({"w": {"rate": "1/second", "algorithm": "fixed-window"}}, clock)
    limiter.hit("w")
    start = clock()
    decision = limiter.acquire("w", timeout=5.0)
    assert decision.allowed
    assert decision.waited == pytest.approx(clock() - start)
    assert decision.waited > 0
    assert recorder.decisions[-1] == decision
    assert len(recorder.decisions) == 2


def test_token_bucket_reservation_counts_as_waited(clock: ManualClock) -> None:
    """A reserved slot is reported once, with waited equal to the reservation."""
    limiter, recorder = make({"tb": {"rate": "2/second", "algorithm": "token-bucket"}}, clock)
    limiter.hit("tb", cost=2)
    decision = limiter.acquire("tb")
    assert decision.allowed
    assert decision.waited == pytest.approx(0.5)
    assert recorder.decisions[-1] == decision


def test_refusal_past_the_timeout_is_reported_before_raising(clock: ManualClock) -> None:
    """acquire that cannot be admitted in time reports the refused decision, then raises."""
    limiter, recorder = make({"slow": "1/hour"}, clock)
    limiter.hit("slow")
    with pytest.raises(RateLimitExceeded) as info:
        limiter.acquire("slow", timeout=1.0)
    assert recorder.decisions[-1] == info.value.decision
    assert not recorder.decisions[-1].allowed


def test_decorator_reports_admitted_refused_and_waited_calls(clock: ManualClock) -> None:
    """A decorated function reports each call's decision, with the wait when it waited."""
    limiter, recorder = make({"f": {"rate": "1/second", "algorithm": "fixed-window"}}, clock)

    @limiter.limit("f")
    def refusing() -> str:
        return "ran"

    @limiter.limit("f", on_exceeded="wait")
    def pacing() -> str:
        return "ran"

    assert refusing() == "ran"
    with pytest.raises(RateLimitExceeded):
        refusing()
    assert pacing() == "ran"
    assert recorder.outcomes() == [(True, False, 0.0), (False, False, 0.0), (True, False, 1.0)]


def test_async_limiter_and_decorator_report_like_the_sync_one(clock: ManualClock) -> None:
    """AsyncLimiter's hit, acquire and decorator report the same decisions; peek none."""
    limiter, recorder = make_async({"a": {"rate": "1/second", "algorithm": "fixed-window"}}, clock)

    @limiter.limit("a", on_exceeded="wait")
    async def paced() -> int:
        return 7

    async def scenario() -> None:
        assert (await limiter.hit("a")).allowed
        await limiter.peek("a")
        assert not (await limiter.hit("a")).allowed
        assert (await limiter.acquire("a")).waited == pytest.approx(1.0)
        assert await paced() == 7

    asyncio.run(scenario())
    assert recorder.outcomes() == [
        (True, False, 0.0),
        (False, False, 0.0),
        (True, False, pytest.approx(1.0)),
        (True, False, pytest.approx(1.0)),
    ]


def test_sync_decorator_on_a_coroutine_function_reports(clock: ManualClock) -> None:
    """Limiter.limit on an async def reports admitted calls too."""
    limiter, recorder = make({"c": "5/second"}, clock)

    @limiter.limit("c")
    async def fetch() -> str:
        return "ok"

    assert asyncio.run(fetch()) == "ok"
    assert [d.limit_name for d in recorder.decisions] == ["c"]


def test_a_raising_listener_is_logged_and_never_breaks_the_call(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener that raises is logged on 'ratekeeper'; the call and later listeners go on."""
    limiter = Limiter(DictSource({"jobs": "5/minute"}), MemoryStorage(clock=clock))

    def broken(decision: Decision) -> None:
        raise RuntimeError("listener bug")

    after = Recorder()
    limiter.add_listener(broken)
    limiter.add_listener(after)

    @limiter.limit("jobs")
    def job() -> int:
        return 1

    with caplog.at_level(logging.ERROR, logger="ratekeeper"):
        assert job() == 1
        assert limiter.hit("jobs").allowed
    assert len(after.decisions) == 2
    failures = [r for r in caplog.records if r.name == "ratekeeper"]
    assert len(failures) == 2
    assert "decision listener" in failures[0].getMessage()
    assert "limit 'jobs' admitted cost 1" in failures[0].getMessage()
    assert failures[0].exc_info is not None


def test_remove_listener(clock: ManualClock) -> None:
    """A removed listener hears nothing more; removing a stranger is a ValueError."""
    limiter, recorder = make({"jobs": "5/minute"}, clock)
    limiter.hit("jobs")
    limiter.remove_listener(recorder)
    limiter.hit("jobs")
    assert len(recorder.decisions) == 1
    with pytest.raises(ValueError, match="is not a listener"):
        limiter.remove_listener(recorder)
    with pytest.raises(TypeError, match="must be callable"):
        limiter.add_listener("print")  # type: ignore[arg-type]


class CountingLimiter(Limiter):
    """A Limiter that counts how many Decision objects it builds."""

    built = 0

    @staticmethod
    def decision(
        bound: BoundLimit,
        key: str,
        cost: int,
        outcome: Outcome,
        *,
        consumed: bool = True,
        waited: float = 0.0,
    ) -> Decision:
        CountingLimiter.built += 1
        return Limiter.decision(bound, key, cost, outcome, consumed=consumed, waited=waited)


def test_unwatched_decorated_calls_build_no_decision() -> None:
    """With no listener, an admitted decorated call builds no Decision; with one, it does."""
    limiter = CountingLimiter(DictSource({"hot": "1000/second"}))

    @limiter.limit("hot")
    def hot() -> None:
        return None

    CountingLimiter.built = 0
    for _ in range(10):
        hot()
    assert CountingLimiter.built == 0
    limiter.enable_stats()
    hot()
    assert CountingLimiter.built == 1


def test_stats_count_per_limit_name(clock: ManualClock) -> None:
    """stats() counts admitted, denied and waited seconds per limit name."""
    limiter, _ = make(
        {"a": "2/minute", "b": {"rate": "1/second", "algorithm": "fixed-window"}}, clock
    )
    limiter.enable_stats()
    limiter.enable_stats()  # idempotent: decisions are not counted twice
    for _ in range(3):
        limiter.hit("a")
    limiter.hit("b")
    limiter.acquire("b")
    limiter.peek("a")
    assert limiter.stats() == {
        "a": LimitStats(admitted=2, denied=1),
        "b": LimitStats(admitted=2, waited=1.0),
    }


def test_stats_are_off_until_enabled() -> None:
    """stats() before enable_stats() says how to turn them on."""
    with pytest.raises(RuntimeError, match=r"enable_stats\(\)"):
        Limiter().stats()


def test_stats_lose_no_update_under_threads() -> None:
    """Eight threads hitting two limits: the counts add up exactly."""
    limiter = Limiter(DictSource({"many": "1000000/hour", "few": "100/hour"}))
    limiter.enable_stats()
    calls = 2_000
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(calls):
            limiter.hit("many")
            limiter.hit("few")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = limiter.stats()
    assert stats["many"] == LimitStats(admitted=8 * calls)
    assert stats["few"] == LimitStats(admitted=100, denied=8 * calls - 100)
