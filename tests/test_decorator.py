"""The limit decorators: keys, costs, raising, pacing, metadata and bad arguments."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

import ratekeeper
from ratekeeper import (
    AsyncLimiter,
    ConfigError,
    DictSource,
    Limiter,
    MemoryStorage,
    RateLimitExceeded,
)
from ratekeeper._rates import PolicySpec
from ratekeeper.testing import ManualClock

PACED: PolicySpec = {"rate": "5/second", "algorithm": "token-bucket", "burst": 1}


def make(
    limits: dict[str, PolicySpec], *, advance: bool = True
) -> tuple[Limiter, ManualClock, list[float]]:
    """A limiter on a ManualClock whose sleep records each wait (and advances the clock)."""
    clock = ManualClock(1000.0)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if advance:
            clock.sleep(seconds)

    limiter = Limiter(DictSource(limits), MemoryStorage(clock=clock), sleep=sleep)
    return limiter, clock, waits


def test_decorated_function_runs_until_the_limit() -> None:
    """Calls within the limit return the function's result; the next one raises."""
    limiter, _, _ = make({"jobs": "2/minute"})

    @limiter.limit("jobs")
    def double(x: int) -> int:
        return 2 * x

    assert [double(1), double(2)] == [2, 4]
    with pytest.raises(RateLimitExceeded) as caught:
        double(3)
    assert caught.value.limit_name == "jobs"
    assert caught.value.retry_after > 0


def test_refused_call_does_not_run_the_function() -> None:
    """A refused call never enters the function."""
    limiter, _, _ = make({"jobs": "1/minute"})
    calls: list[int] = []

    @limiter.limit("jobs")
    def work(x: int) -> None:
        calls.append(x)

    work(1)
    with pytest.raises(RateLimitExceeded):
        work(2)
    assert calls == [1]


def test_key_callable_separates_callers() -> None:
    """key= is called with the call's arguments; different keys never share a count."""
    limiter, _, _ = make({"fetch": "1/minute"})

    @limiter.limit("fetch", key=lambda user, *a, **kw: user)
    def fetch(user: str, page: int = 0) -> str:
        return f"{user}:{page}"

    assert fetch("ann") == "ann:0"
    assert fetch("bob", page=2) == "bob:2"
    with pytest.raises(RateLimitExceeded) as caught:
        fetch("ann", page=1)
    assert caught.value.key == "ann"


def test_non_string_keys_are_stringified() -> None:
    """A key callable may return any value; it is used as its str()."""
    limiter, _, _ = make({"fetch": "1/minute"})

    @limiter.limit("fetch", key=lambda n: n)
    def fetch(n: int) -> int:
        return n

    fetch(42)
    assert not limiter.peek("fetch", key="42").allowed
    assert limiter.peek("fetch", key="43").allowed


def test_constant_key() -> None:
    """key= may be a plain string shared by every call."""
    limiter, _, _ = make({"fetch": "1/minute"})

    @limiter.limit("fetch", key="tenant-1")
    def fetch() -> None:
        return None

    fetch()
    assert not limiter.peek("fetch", key="tenant-1").allowed
    assert limiter.peek("fetch").allowed


def test_cost_int_and_callable() -> None:
    """cost= is an int or a callable of the arguments."""
    limiter, _, _ = make({"bulk": "10/minute", "each": "10/minute"})

    @limiter.limit("bulk", cost=4)
    def flat() -> None:
        return None

    @limiter.limit("each", cost=lambda items: len(items))
    def send(items: list[int]) -> int:
        return len(items)

    flat()
    flat()
    with pytest.raises(RateLimitExceeded):
        flat()
    assert send([1, 2, 3, 4, 5, 6]) == 6
    assert limiter.peek("each").remaining == 4
    with pytest.raises(RateLimitExceeded):
        send([0] * 5)
    assert send([0] * 4) == 4


def test_bad_cost_from_a_callable_is_a_config_error() -> None:
    """A cost callable that returns a negative number raises ConfigError at the call."""
    limiter, _, _ = make({"each": "10/minute"})

    @limiter.limit("each", cost=lambda n: n)
    def send(n: int) -> int:
        return n

    with pytest.raises(ConfigError, match="cost"):
        send(-1)


def test_wait_paces_a_token_bucket_by_reservation() -> None:
    """10 simultaneous calls at 5/second, burst 1: waits 0.2, 0.4, ... 1.8 in arrival order."""
    limiter, _, waits = make({"paced": PACED}, advance=False)

    @limiter.limit("paced", on_exceeded="wait")
    def call(i: int) -> int:
        return i

    assert [call(i) for i in range(10)] == list(range(10))
    assert waits == pytest.approx([0.2 * n for n in range(1, 10)])


def test_concurrent_waiters_are_released_evenly_in_arrival_order() -> None:
    """10 tasks waiting at once on 5/second (burst 1) get slots 200 ms apart, in order."""
    clock = ManualClock(1000.0)
    released: list[tuple[float, int]] = []

    async def sleep(seconds: float) -> None:
        # The slot was reserved when the task arrived; yielding lets every other task
        # arrive (and reserve) before this one goes on.
        await asyncio.sleep(0)

    limiter = AsyncLimiter(DictSource({"paced": PACED}), MemoryStorage(clock=clock), sleep=sleep)
    reservations: dict[int, float] = {}

    @limiter.limit("paced", on_exceeded="wait")
    async def call(i: int) -> int:
        released.append((reservations[i], i))
        return i

    def listen(decision: ratekeeper.Decision) -> None:
        reservations[len(reservations)] = decision.retry_after

    limiter.add_listener(listen)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(call(i) for i in range(10))))

    assert asyncio.run(main()) == list(range(10))
    assert [reservations[i] for i in range(10)] == pytest.approx([0.2 * i for i in range(10)])
    assert [i for _, i in sorted(released)] == list(range(10))


def test_wait_with_the_default_burst_lets_a_burst_through() -> None:
    """5/second with the default burst 5: five calls at once, then 200 ms apart."""
    limiter, _, waits = make(
        {"paced": {"rate": "5/second", "algorithm": "token-bucket"}}, advance=False
    )

    @limiter.limit("paced", on_exceeded="wait")
    def call() -> None:
        return None

    for _ in range(10):
        call()
    assert waits == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


def test_wait_beyond_max_wait_raises_without_sleeping() -> None:
    """A call whose reservation would pass max_wait raises and takes no slot."""
    limiter, _, waits = make({"paced": PACED}, advance=False)

    @limiter.limit("paced", on_exceeded="wait", max_wait=0.5)
    def call() -> None:
        return None

    call()
    call()
    call()
    with pytest.raises(RateLimitExceeded) as caught:
        call()
    assert waits == pytest.approx([0.2, 0.4])
    assert caught.value.retry_after == pytest.approx(0.6)


def test_wait_on_a_window_sleeps_until_the_window_opens() -> None:
    """With a window algorithm, wait sleeps until the refusal's retry_after, then runs."""
    limiter, clock, waits = make({"w": {"rate": "1/minute", "algorithm": "fixed-window"}})

    @limiter.limit("w", on_exceeded="wait")
    def call() -> float:
        return clock()

    assert call() == 1000.0
    assert call() == pytest.approx(1020.0)
    assert waits == [pytest.approx(20.0)]


def test_wait_for_a_cost_that_never_fits_raises() -> None:
    """on_exceeded='wait' with no max_wait still raises at once for a cost beyond capacity."""
    limiter, _, waits = make({"w": "5/minute"})

    @limiter.limit("w", on_exceeded="wait", cost=6)
    def call() -> None:
        return None

    with pytest.raises(RateLimitExceeded, match="capacity 5"):
        call()
    assert waits == []


def documented(a: int, b: str = "x", *rest: int, flag: bool = False, **extra: Any) -> str:
    """Join the arguments."""
    return f"{a}{b}{rest}{flag}{extra}"


async def adocumented(a: int, *, b: str = "x") -> str:
    """Join the arguments, awaited."""
    return f"{a}{b}"


def test_wrapper_keeps_signature_and_metadata() -> None:
    """The wrapper has the wrapped function's signature, name, doc and __wrapped__."""
    limiter, _, _ = make({"m": "100/second"})
    wrapped = limiter.limit("m")(documented)
    assert inspect.signature(wrapped) == inspect.signature(documented)
    assert wrapped.__name__ == "documented"
    assert wrapped.__doc__ == "Join the arguments."
    assert wrapped.__wrapped__ is documented  # type: ignore[attr-defined]
    assert wrapped.limit_name == "m"  # type: ignore[attr-defined]
    assert wrapped.limiter is limiter  # type: ignore[attr-defined]
    assert wrapped(1, "y", 2, flag=True, z=3) == documented(1, "y", 2, flag=True, z=3)


def test_async_wrapper_is_a_coroutine_function() -> None:
    """Decorating an async def gives a coroutine function with the same signature."""
    limiter, _, _ = make({"m": "100/second"})
    wrapped = limiter.limit("m")(adocumented)
    assert inspect.iscoroutinefunction(wrapped)
    assert inspect.signature(wrapped) == inspect.signature(adocumented)
    assert wrapped.__doc__ == "Join the arguments, awaited."
    assert asyncio.run(wrapped(1, b="z")) == "1z"


def test_methods_are_limited_per_instance() -> None:
    """On a method, key=lambda self, *a, **k: self.id limits each instance apart."""
    limiter, _, _ = make({"client.send": "1/minute"})

    class Client:
        def __init__(self, ident: str) -> None:
            self.id = ident

        @limiter.limit("client.send", key=lambda self, *a, **k: self.id)
        def send(self, message: str) -> str:
            return f"{self.id}:{message}"

    first, second = Client("a"), Client("b")
    assert first.send("hi") == "a:hi"
    assert second.send("hi") == "b:hi"
    with pytest.raises(RateLimitExceeded) as caught:
        first.send("again")
    assert caught.value.key == "a"
    assert Client.send.__name__ == "send"


def test_top_level_limit_on_def() -> None:
    """ratekeeper.limit with a literal rate limits a plain function in its own limiter."""

    @ratekeeper.limit("2/minute")
    def ping() -> str:
        return "pong"

    assert [ping(), ping()] == ["pong", "pong"]
    with pytest.raises(RateLimitExceeded) as caught:
        ping()
    assert caught.value.limit_name.endswith("test_top_level_limit_on_def.<locals>.ping")


def test_top_level_limit_on_async_def() -> None:
    """ratekeeper.limit works on async def too."""

    @ratekeeper.limit("2/minute", key=lambda user: user)
    async def fetch(user: str) -> str:
        return user

    async def main() -> list[str]:
        got = [await fetch("a"), await fetch("a"), await fetch("b")]
        with pytest.raises(RateLimitExceeded):
            await fetch("a")
        return got

    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(main()) == ["a", "a", "b"]


def test_top_level_limit_options() -> None:
    """algorithm= and burst= shape the literal policy (burst implies a token bucket)."""

    @ratekeeper.limit("1/hour", burst=3)
    def call() -> None:
        return None

    limiter: Limiter = call.limiter  # type: ignore[attr-defined]
    policy = limiter.peek(call.limit_name).policy  # type: ignore[attr-defined]
    assert (policy.algorithm, policy.burst) == ("token-bucket", 3)
    for _ in range(3):
        call()
    with pytest.raises(RateLimitExceeded):
        call()


def test_each_top_level_decoration_has_its_own_count() -> None:
    """Two functions decorated with the same literal rate do not share a count."""

    @ratekeeper.limit("1/minute")
    def first() -> int:
        return 1

    @ratekeeper.limit("1/minute")
    def second() -> int:
        return 2

    assert (first(), second()) == (1, 2)


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"on_exceeded": "sometimes"}, "on_exceeded must be 'raise' or 'wait'"),
        ({"cost": -1}, "cost must be a whole number"),
        ({"cost": 1.5}, "cost must be a whole number"),
        ({"max_wait": 5.0}, "max_wait applies only with on_exceeded='wait'"),
        ({"on_exceeded": "wait", "max_wait": -1.0}, "max_wait must be"),
        ({"key": 42}, "key must be a string or a callable"),
        ({"rate": "10/fortnight"}, "unknown period unit 'fortnight'"),
    ],
)
def test_bad_arguments_fail_at_decoration(options: dict[str, Any], complaint: str) -> None:
    """Bad decorator arguments raise ConfigError before any call is made."""
    limiter, _, _ = make({})
    with pytest.raises(ConfigError, match=complaint):
        limiter.limit("jobs", **options)


@pytest.mark.parametrize(
    ("rate", "options"),
    [
        ("10/fortnight", {}),
        ("", {}),
        ("5/minute", {"on_exceeded": "sometimes"}),
        ("5/minute", {"cost": -1}),
        ("5/minute", {"algorithm": "leaky"}),
        ("5/minute", {"algorithm": "fixed-window", "burst": 3}),
    ],
)
def test_top_level_bad_arguments_fail_at_decoration(rate: str, options: dict[str, Any]) -> None:
    """ratekeeper.limit refuses a bad rate or option when it decorates."""
    with pytest.raises(ConfigError):

        @ratekeeper.limit(rate, **options)
        def call() -> None:
            return None


def test_async_limiter_refuses_a_plain_def() -> None:
    """AsyncLimiter.limit on a plain def raises TypeError at decoration."""
    limiter = AsyncLimiter(DictSource({"jobs": "1/second"}))
    with pytest.raises(TypeError, match="coroutine functions"):

        @limiter.limit("jobs")
        def call() -> None:
            return None


def test_shadow_mode_never_refuses_a_call() -> None:
    """Shadow mode: calls always run, while hit reports refused with shadow=True."""
    limiter, _, waits = make({"s": {"rate": "1/minute", "mode": "shadow"}})
    calls: list[int] = []

    @limiter.limit("s")
    def work(i: int) -> None:
        calls.append(i)

    @limiter.limit("s", on_exceeded="wait")
    def paced(i: int) -> None:
        calls.append(i)

    for i in range(3):
        work(i)
        paced(10 + i)
    assert calls == [0, 10, 1, 11, 2, 12]
    assert waits == []
    decision = limiter.hit("s")
    assert (decision.allowed, decision.shadow) == (False, True)


def test_source_change_reaches_a_decorated_function() -> None:
    """A decorated function follows the source: no re-decoration needed."""
    limiter, _, _ = make({"jobs": "1/minute"})
    source = limiter.source
    assert isinstance(source, DictSource)

    @limiter.limit("jobs")
    def work() -> None:
        return None

    work()
    with pytest.raises(RateLimitExceeded):
        work()
    source.set("jobs", "3/minute")
    work()
    work()
    with pytest.raises(RateLimitExceeded):
        work()
