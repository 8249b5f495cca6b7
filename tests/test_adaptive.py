"""Adaptive back-off: throttle signals scale the effective rate down, quiet time restores it."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratekeeper import AsyncLimiter, ConfigError, DictSource, Limiter, MemoryStorage, Rate
from ratekeeper._adaptive import FULL, Backoff, scale_at, scale_policy, throttled
from ratekeeper.testing import ManualClock

NAME = "aws.sns.Publish"


def make(rate: str = "10/second", **backoff: float) -> tuple[Limiter, ManualClock]:
    clock = ManualClock(1000.0)
    limiter = Limiter(DictSource({NAME: rate}), MemoryStorage(clock=clock), sleep=clock.sleep)
    limiter.adapt("aws.*", Backoff(refresh=0.0, **backoff))
    return limiter, clock


def test_throttle_halves_the_effective_rate_shown_by_peek() -> None:
    """A throttle signal halves the rate, and peek shows the effective rate."""
    limiter, _ = make()
    assert limiter.peek(NAME, "us-east-1").rate == Rate(10, 1.0)
    assert limiter.throttle(NAME, "us-east-1") == 0.5
    assert limiter.peek(NAME, "us-east-1").rate == Rate(5, 1.0)


def test_back_off_is_per_key() -> None:
    """A throttle in one region leaves another region's rate alone."""
    limiter, _ = make()
    limiter.throttle(NAME, "us-east-1")
    assert limiter.peek(NAME, "eu-west-1").rate == Rate(10, 1.0)


def test_throttles_within_the_cooldown_count_once() -> None:
    """A burst of throttled replies lowers the rate once, not once per reply."""
    limiter, clock = make()
    assert [limiter.throttle(NAME) for _ in range(5)] == [0.5] * 5
    clock.advance(1.0)
    assert limiter.throttle(NAME) == 0.25


def test_rate_recovers_additively_after_quiet_periods_never_above_configured() -> None:
    """After each quiet period the rate regains a step, up to the configured rate only."""
    limiter, clock = make(quiet=5.0, step=0.1)
    limiter.throttle(NAME)
    seen = []
    for _ in range(8):
        clock.advance(5.0)
        seen.append(limiter.peek(NAME).rate.amount)
    assert seen == [6, 7, 8, 9, 10, 10, 10, 10]


def test_floor_bounds_the_decrease() -> None:
    """Repeated throttles never push the rate below the floor."""
    limiter, clock = make(floor=0.2)
    for _ in range(10):
        limiter.throttle(NAME)
        clock.advance(1.0)
    assert limiter.peek(NAME).rate == Rate(2, 1.0)


def test_scaled_limit_keeps_its_count() -> None:
    """Scaling changes the amount, not the state: calls already made still count."""
    limiter, _ = make("10/minute")
    assert all(limiter.hit(NAME).allowed for _ in range(4))
    limiter.throttle(NAME)  # 10/minute -> 5/minute: one more in this window
    assert [limiter.hit(NAME).allowed for _ in range(3)] == [True, False, False]


def test_decorated_adaptive_limit_uses_the_effective_rate() -> None:
    """A decorated function obeys the scaled rate after a throttle."""
    limiter, _ = make("4/minute")

    @limiter.limit(NAME)
    def publish() -> str:
        return "ok"

    limiter.throttle(NAME)  # 4/minute -> 2/minute
    assert publish() == "ok"
    assert publish() == "ok"
    with pytest.raises(Exception, match="2/minute"):
        publish()


def test_throttle_on_a_limit_that_is_not_adaptive_is_a_config_error() -> None:
    """Only limits matched by adapt() take throttle signals."""
    limiter = Limiter(DictSource({"reports": "1/second"}))
    with pytest.raises(ConfigError, match="not adaptive"):
        limiter.throttle("reports")


def test_async_twin_throttles_the_same_way() -> None:
    """AsyncLimiter.throttle scales the rate like Limiter.throttle."""

    async def run() -> tuple[float, int]:
        clock = ManualClock(5.0)
        limiter = AsyncLimiter(DictSource({NAME: "8/second"}), MemoryStorage(clock=clock))
        limiter.adapt("aws.*", Backoff(refresh=0.0))
        fraction = await limiter.throttle(NAME)
        return fraction, (await limiter.peek(NAME)).rate.amount

    assert asyncio.run(run()) == (0.5, 4)


@given(
    events=st.lists(st.tuples(st.integers(0, 20_000_000), st.booleans()), min_size=1, max_size=40)
)
def test_scale_stays_between_floor_and_full(events: list[tuple[int, bool]]) -> None:
    """Whatever the sequence of throttles and waits, the scale stays in [floor, full]."""
    params = Backoff(floor=0.05).params
    state = None
    now = 10**12
    for dt, throttle in events:
        now += dt
        if throttle:
            state = throttled(state, now, params) or state
        assert params[1] <= scale_at(state, now) <= FULL


def test_scale_policy_scales_amounts_and_burst_but_not_periods() -> None:
    """A scaled policy keeps its periods and algorithm, so state identity is unchanged."""
    from ratekeeper import Policy

    policy = Policy(Rate.parse_many("10/second;1000/hour"), algorithm="token-bucket", burst=20)
    scaled = scale_policy(policy, 500)
    assert [rate.amount for rate in scaled.rates] == [5, 500]
    assert [rate.period for rate in scaled.rates] == [1.0, 3600.0]
    assert scaled.burst == 10
    assert scaled.algorithm == "token-bucket"


def test_most_specific_adapt_pattern_wins_whatever_the_order() -> None:
    """adapt("aws.sns.*") beats a later adapt("aws.*") for aws.sns.Publish."""
    limiter = Limiter(DictSource({"aws.*": "10/minute"}), MemoryStorage(clock=ManualClock()))
    gentle = Backoff(decrease=0.9)
    limiter.adapt("aws.sns.*", gentle)
    limiter.adapt("aws.*", Backoff(decrease=0.5))
    assert limiter.throttle("aws.sns.Publish") == 0.9
    assert limiter.throttle("aws.sqs.SendMessage") == 0.5
