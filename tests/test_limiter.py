"""Limiter: hit, peek, acquire and reset against named limits in a mutable source."""

from __future__ import annotations

import dataclasses
import math

import pytest

from ratekeeper import (
    ConfigError,
    Decision,
    DictSource,
    Limiter,
    MemoryStorage,
    Policy,
    Rate,
    RateLimitExceeded,
)
from ratekeeper._decision import make_decision
from ratekeeper._rates import Algorithm, PolicySpec
from ratekeeper.testing import ManualClock
from tests.strategies import ALGORITHMS


class Sleeper:
    """A sleep that records each wait and advances the clock by it."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.sleep(seconds)


def make(
    limits: dict[str, PolicySpec], start: float = 1000.0
) -> tuple[Limiter, DictSource, ManualClock, Sleeper]:
    clock = ManualClock(start)
    source = DictSource(limits)
    sleeper = Sleeper(clock)
    return Limiter(source, MemoryStorage(clock=clock), sleep=sleeper), source, clock, sleeper


def test_hit_decision_fields() -> None:
    """An admitted hit reports remaining, retry_after 0, reset_after, name, key and rate."""
    limiter, _, _, _ = make({"exports": {"rate": "5/minute", "algorithm": "fixed-window"}}, 1010.0)
    decision = limiter.hit("exports", key="tenant-42")
    assert decision.allowed
    assert decision.remaining == 4
    assert decision.retry_after == 0.0
    assert decision.reset_after == 10.0  # the aligned window ends at t=1020
    assert decision.limit_name == "exports"
    assert decision.key == "tenant-42"
    assert decision.rate == Rate(5, 60.0)
    assert decision.cost == 1
    assert decision.policy.algorithm == "fixed-window"
    assert not decision.shadow


def test_refused_decision_fields() -> None:
    """A refused hit says when to retry and has nothing remaining."""
    limiter, _, clock, _ = make({"exports": {"rate": "5/minute", "algorithm": "fixed-window"}})
    for _ in range(5):
        assert limiter.hit("exports").allowed
    clock.advance(5.0)
    decision = limiter.hit("exports")
    assert not decision.allowed
    assert decision.remaining == 0
    assert decision.retry_after == pytest.approx(15.0)
    assert decision.reset_after == pytest.approx(15.0)
    assert "refused cost 1 at 5/minute" in decision.describe()


def test_cost_counts_units() -> None:
    """cost=n consumes n units at once."""
    limiter, _, _, _ = make({"bulk": "10/minute"})
    assert limiter.hit("bulk", cost=7).remaining == 3
    assert not limiter.hit("bulk", cost=4).allowed
    assert limiter.hit("bulk", cost=3).remaining == 0


def test_peek_consumes_nothing() -> None:
    """peek reports the units available now and never uses them."""
    limiter, _, _, _ = make({"jobs": "3/minute"})
    assert limiter.peek("jobs").remaining == 3
    limiter.hit("jobs")
    for _ in range(10):
        decision = limiter.peek("jobs")
        assert (decision.allowed, decision.remaining) == (True, 2)
    assert [limiter.hit("jobs").allowed for _ in range(3)] == [True, True, False]
    assert not limiter.peek("jobs").allowed


def test_reset_forgets_a_key() -> None:
    """reset gives a key its full capacity back, and only that key."""
    limiter, _, _, _ = make({"jobs": "1/hour"})
    limiter.hit("jobs", key="a")
    limiter.hit("jobs", key="b")
    limiter.reset("jobs", key="a")
    assert limiter.hit("jobs", key="a").allowed
    assert not limiter.hit("jobs", key="b").allowed


def test_acquire_waits_through_the_injected_sleep() -> None:
    """acquire sleeps (via the injected sleep) exactly until the call is admitted."""
    limiter, _, clock, sleeper = make({"jobs": {"rate": "1/minute", "algorithm": "fixed-window"}})
    limiter.acquire("jobs")
    decision = limiter.acquire("jobs", timeout=120.0)
    assert decision.allowed
    assert sleeper.waits == [pytest.approx(20.0)]  # the window started at t=960
    assert clock() == pytest.approx(1020.0)


def test_acquire_past_the_timeout_raises_without_sleeping() -> None:
    """When the wait would pass the timeout, acquire raises at once with the decision."""
    limiter, _, _, sleeper = make({"jobs": {"rate": "1/minute", "algorithm": "fixed-window"}})
    limiter.acquire("jobs")
    with pytest.raises(RateLimitExceeded) as caught:
        limiter.acquire("jobs", key="", timeout=5.0)
    assert sleeper.waits == []
    assert caught.value.decision.retry_after == pytest.approx(20.0)
    assert caught.value.retry_after == pytest.approx(20.0)
    assert caught.value.limit_name == "jobs"
    assert not caught.value.decision.allowed


def test_acquire_reserves_a_token_bucket_slot() -> None:
    """With a token bucket, acquire takes a future slot and sleeps until it comes."""
    spec: PolicySpec = {"rate": "10/minute", "algorithm": "token-bucket", "burst": 1}
    limiter, _, _, sleeper = make({"calls": spec})
    limiter.acquire("calls")
    decision = limiter.acquire("calls", timeout=10.0)
    assert decision.allowed
    assert decision.retry_after == pytest.approx(6.0)
    assert sleeper.waits == [pytest.approx(6.0)]
    with pytest.raises(RateLimitExceeded):
        limiter.acquire("calls", timeout=5.0)
    assert sleeper.waits == [pytest.approx(6.0)]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("timeout", [None, 3600.0])
def test_cost_never_admissible_raises_at_once(algorithm: Algorithm, timeout: float | None) -> None:
    """A cost beyond the capacity raises at once, naming the capacity, even with no timeout."""
    limiter, _, _, sleeper = make({"jobs": {"rate": "5/minute", "algorithm": algorithm}})
    with pytest.raises(RateLimitExceeded, match="exceeds the capacity 5 of 5/minute") as caught:
        limiter.acquire("jobs", cost=6, timeout=timeout)
    assert math.isinf(caught.value.retry_after)
    assert sleeper.waits == []
    assert math.isinf(limiter.hit("jobs", cost=6).retry_after)


def test_never_admissible_names_the_burst() -> None:
    """For a token bucket the capacity named is the burst."""
    spec: PolicySpec = {"rate": "5/second", "algorithm": "token-bucket", "burst": 8}
    limiter, _, _, _ = make({"jobs": spec})
    with pytest.raises(RateLimitExceeded, match="capacity 8"):
        limiter.acquire("jobs", cost=9)


@pytest.mark.parametrize("cost", [-1, 1.5, True, "1"])
def test_bad_cost_is_a_config_error(cost: object) -> None:
    """A cost that is not a whole number >= 0 is a ConfigError naming the limit."""
    limiter, _, _, _ = make({"jobs": "5/minute"})
    with pytest.raises(ConfigError, match="'jobs'"):
        limiter.hit("jobs", cost=cost)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [-1.0, float("nan"), True])
def test_bad_timeout_is_a_config_error(timeout: float) -> None:
    """A negative or non-numeric timeout is refused."""
    limiter, _, _, _ = make({"jobs": "5/minute"})
    with pytest.raises(ConfigError, match="timeout"):
        limiter.acquire("jobs", timeout=timeout)


def test_missing_name_is_a_config_error() -> None:
    """A name with no entry and no fallback is a ConfigError naming it, not "unlimited"."""
    limiter, _, _, _ = make({"jobs": "5/minute"})
    with pytest.raises(ConfigError, match=r"'reports\.export'"):
        limiter.hit("reports.export")


def test_named_limits_resolve_globs() -> None:
    """A name matches the most specific glob pattern of the source."""
    limiter, _, _, _ = make({"aws.*": "100/second", "aws.sts.*": "1/second"})
    assert limiter.hit("aws.sts.AssumeRole").rate == Rate(1, 1.0)
    assert limiter.hit("aws.sns.Publish").rate == Rate(100, 1.0)


def test_decorator_rate_is_the_fallback() -> None:
    """rate= on limiter.limit applies while the source has no entry for the name."""
    limiter, source, _, _ = make({})

    @limiter.limit("reports.export", rate="1/minute")
    def export() -> str:
        return "done"

    assert export() == "done"
    with pytest.raises(RateLimitExceeded):
        export()
    assert limiter.peek("reports.export").rate == Rate(1, 60.0)
    source.set("reports.export", "3/minute")
    assert export() == "done"


def test_a_fallback_cannot_be_given_twice_differently() -> None:
    """Two different fallback rates for one name is a ConfigError."""
    limiter, _, _, _ = make({})
    limiter.limit("jobs", rate="1/minute")
    limiter.limit("jobs", rate="1/minute")
    with pytest.raises(ConfigError, match="already has the fallback rate"):
        limiter.limit("jobs", rate="2/minute")


def tb(rate: str, burst: int | None = None) -> PolicySpec:
    spec: dict[str, object] = {"rate": rate, "algorithm": "token-bucket"}
    if burst is not None:
        spec["burst"] = burst
    return spec


def test_token_bucket_retry_after_holds_across_a_rate_change() -> None:
    """After a token bucket's rate changes, waiting retry_after gets the call admitted."""
    limiter, source, clock, _ = make({"tb": tb("10/minute")})
    for _ in range(10):
        limiter.hit("tb")
    source.set("tb", tb("20/minute", 10))
    refused = limiter.hit("tb")
    assert refused.retry_after == pytest.approx(3.0)
    clock.advance(refused.retry_after)
    assert limiter.hit("tb").allowed


def test_policy_objects_are_specs() -> None:
    """A Policy object in the source is used as it is."""
    policy = Policy((Rate(2, 1.0),), algorithm="sliding-log")
    limiter, _, _, _ = make({"p": policy})
    assert limiter.hit("p").policy is policy


def test_shadow_mode_reports_but_never_refuses_a_caller() -> None:
    """In shadow mode hit says refused (shadow=True); acquire returns without waiting."""
    limiter, _, _, sleeper = make({"s": {"rate": "1/minute", "mode": "shadow"}})
    assert limiter.hit("s").allowed
    decision = limiter.hit("s")
    assert (decision.allowed, decision.shadow) == (False, True)
    assert not limiter.acquire("s", timeout=0.0).allowed
    assert sleeper.waits == []


def test_default_source_and_storage() -> None:
    """Limiter() starts with an empty DictSource and a MemoryStorage."""
    limiter = Limiter()
    assert isinstance(limiter.source, DictSource)
    assert isinstance(limiter.storage, MemoryStorage)
    with pytest.raises(ConfigError, match="no limit named 'x'"):
        limiter.hit("x")


def test_fast_decision_builder_equals_the_dataclass() -> None:
    """make_decision builds the very value Decision(...) does, for every field."""
    policy = Policy.parse({"rate": "5/minute;100/hour", "mode": "shadow"})
    fields = (False, "jobs", "ann", 3, 1.5, 60.0, 2, policy, policy.rates[1], True, 0.25)
    built = make_decision(*fields)
    assert built == Decision(*fields)
    assert [getattr(built, f.name) for f in dataclasses.fields(Decision)] == list(fields)


def test_non_string_keys_are_the_same_key_as_their_str() -> None:
    """hit(key=5) and hit(key="5") count against one key, as the decorators' keys do."""
    limiter, _, _, _ = make({"jobs": "2/minute"})
    assert limiter.hit("jobs", key=5).allowed  # type: ignore[arg-type]
    assert limiter.hit("jobs", key="5").allowed
    assert not limiter.peek("jobs", key=5).allowed  # type: ignore[arg-type]
    limiter.reset("jobs", key=5)  # type: ignore[arg-type]
    assert limiter.peek("jobs", key="5").remaining == 2
