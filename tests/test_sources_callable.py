"""CallableSource: a function of the limit name, asked again at most every ttl seconds."""

from __future__ import annotations

import logging

import pytest

from ratekeeper import CallableSource, ConfigError, Limiter, MemoryStorage, Rate
from ratekeeper._rates import PolicySpec
from ratekeeper.testing import ManualClock


class Tiers:
    """A limit function backed by a table the test edits, counting the questions."""

    def __init__(self, **answers: PolicySpec | None) -> None:
        self.answers: dict[str, PolicySpec | None] = dict(answers)
        self.asked: list[str] = []
        self.fail: Exception | None = None

    def __call__(self, name: str) -> PolicySpec | None:
        self.asked.append(name)
        if self.fail is not None:
            raise self.fail
        return self.answers.get(name)


def make(tiers: Tiers, ttl: float = 10.0) -> tuple[Limiter, CallableSource, ManualClock]:
    clock = ManualClock()
    source = CallableSource(tiers, ttl=ttl, clock=clock)
    return Limiter(source, MemoryStorage(clock=clock)), source, clock


def test_the_function_is_asked_once_per_name_per_ttl() -> None:
    """1000 calls ask once; after ttl seconds the next call asks again and sees the change."""
    tiers = Tiers(free="1000/minute")
    limiter, source, clock = make(tiers)

    @limiter.limit("free")
    def call() -> None:
        pass

    for _ in range(500):
        call()
    assert tiers.asked == ["free"]
    tiers.answers["free"] = "2000/minute"
    clock.advance(9.999)
    call()
    assert tiers.asked == ["free"]
    clock.advance(0.001)
    call()
    assert tiers.asked == ["free", "free"]
    assert limiter.peek("free").rate == Rate(2000, 60.0)
    assert source.known() == {"free": limiter.peek("free").policy}
    assert source.ttl == 10.0


def test_an_unchanged_answer_keeps_the_version() -> None:
    """Asking again and getting the same answer does not make the limiter resolve again."""
    tiers = Tiers(a="1/second")
    _, source, clock = make(tiers, ttl=1.0)
    assert source.snapshot().resolve("a") is not None
    version = source.version
    clock.advance(1.0)
    assert source.version is version
    assert tiers.asked == ["a", "a"]


def test_none_means_no_entry_and_the_fallback_applies() -> None:
    """An answer of None falls back to rate=; without one it is a ConfigError."""
    tiers = Tiers()
    limiter, _, clock = make(tiers)
    limiter.limit("with.fallback", rate="2/minute")
    assert limiter.peek("with.fallback").rate == Rate(2, 60.0)
    with pytest.raises(ConfigError, match=r"no limit named 'bare' in CallableSource\(Tiers"):
        limiter.hit("bare")
    tiers.answers["with.fallback"] = "5/minute"
    clock.advance(10.0)
    assert limiter.peek("with.fallback").rate == Rate(5, 60.0)


def test_a_failing_function_keeps_the_last_good_answer(caplog: pytest.LogCaptureFixture) -> None:
    """An exception or a bad spec is logged once and kept in last_error; calls carry on."""
    tiers = Tiers(a="3/minute")
    limiter, source, clock = make(tiers, ttl=1.0)
    assert limiter.hit("a").rate == Rate(3, 60.0)
    tiers.fail = RuntimeError("tier service down")
    with caplog.at_level(logging.WARNING, logger="ratekeeper.sources"):
        for _ in range(3):
            clock.advance(1.0)
            assert limiter.hit("a").rate == Rate(3, 60.0)
        tiers.fail = None
        tiers.answers["a"] = "3/fortnight"
        clock.advance(1.0)
        assert limiter.hit("a").rate == Rate(3, 60.0)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "limit 'a': RuntimeError: tier service down" in messages[0]
    assert "fortnight" in messages[1]
    assert isinstance(source.last_error, ConfigError)
    tiers.answers["a"] = "4/minute"
    clock.advance(1.0)
    assert limiter.hit("a").rate == Rate(4, 60.0)
    assert source.last_error is None


def test_not_a_function_is_a_config_error() -> None:
    """CallableSource needs a callable."""
    with pytest.raises(ConfigError, match="needs a function of the limit name"):
        CallableSource("10/second")  # type: ignore[arg-type]
