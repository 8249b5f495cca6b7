"""The C fast path of decorated calls decides exactly as the pure-Python specification."""

from __future__ import annotations

import os
from collections.abc import Callable

import freezegun
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratekeeper import (
    DictSource,
    Limiter,
    MemoryStorage,
    Policy,
    RateLimitExceeded,
    _fastpath,
    limit,
)
from ratekeeper._algorithms import BoundLimit, State
from ratekeeper.testing import ManualClock
from tests.strategies import ALGORITHMS, SIMULATION, single_policies, starts, timelines
from tests.stress import race

speedups = _fastpath.speedups
needs_speedups = pytest.mark.skipif(
    speedups is None and os.environ.get("RATEKEEPER_PURE_PYTHON") == "1",
    reason="RATEKEEPER_PURE_PYTHON=1 turns the C fast path off",
)


@pytest.fixture(params=["c", "python"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Decorate through the C fast path, then through the pure-Python wrapper alone."""
    if request.param == "python":
        monkeypatch.setattr(_fastpath, "speedups", None)
    elif speedups is None:
        pytest.skip("the C extension is not built")
    return str(request.param)


def test_extension_is_built_in_development() -> None:
    """With a C compiler present (the dev set-up has one), the extension is built."""
    if os.environ.get("RATEKEEPER_PURE_PYTHON") == "1":
        pytest.skip("RATEKEEPER_PURE_PYTHON=1")
    assert speedups is not None


@needs_speedups
@SIMULATION
@given(st.data())
def test_c_step_equals_python_step(data: st.DataObject) -> None:
    """For every algorithm, the C step admits and writes exactly what the Python step does."""
    assert speedups is not None
    policies = [data.draw(single_policies(), label="policy")]
    if policies[0].algorithm == "token-bucket" and data.draw(st.booleans(), label="change"):
        # A bucket whose rate or burst changes mid-way is converted, not reset.
        policies.append(data.draw(single_policies("token-bucket"), label="changed"))
    meters = [BoundLimit.compile("n", policy).meters[0] for policy in policies]
    events = data.draw(timelines(meters[0].period_us, meters[0].capacity), label="events")
    now = data.draw(starts, label="start")
    state: State | None = None
    for index, (gap, cost) in enumerate(events):
        now += gap
        meter = meters[index % len(meters)]
        if cost > meter.capacity:
            continue
        expected = meter.step(state, now, meter, cost, 0)
        code = _fastpath.ALGORITHM_CODES[meter.algorithm]
        admitted, new_state = speedups.step(
            code, state, now, meter.amount, meter.period_us, meter.capacity,
            meter.interval_us, cost,
        )  # fmt: skip
        assert admitted == expected[0]
        if admitted:
            assert new_state == expected[1]
            state = new_state


def drive(path: str, policy: Policy, events: list[tuple[int, int]], start: int) -> list[bool]:
    """Call a decorated function on a schedule; which calls were admitted."""
    clock = ManualClock(start / 1_000_000)
    limiter = Limiter(DictSource({"job": policy}), MemoryStorage(clock=clock), sleep=clock.sleep)

    @limiter.limit("job")
    def job() -> int:
        return 1

    assert (type(job).__name__ == "Limited") == (path == "c")
    admitted = []
    for gap, _cost in events:
        clock.advance(gap / 1_000_000)
        try:
            admitted.append(job() == 1)
        except RateLimitExceeded:
            admitted.append(False)
    return admitted


@SIMULATION
@given(policy=single_policies(), data=st.data())
def test_decorated_calls_agree_on_both_paths(policy: Policy, data: st.DataObject) -> None:
    """The same schedule admits the same calls with and without the C fast path."""
    period = BoundLimit.compile("job", policy).meters[0].period_us
    events = data.draw(timelines(period, 1))
    start = data.draw(starts)
    pure = _pure(lambda: drive("python", policy, events, start))
    if speedups is None:
        return
    assert drive("c", policy, events, start) == pure


def _pure(run: Callable[[], list[bool]]) -> list[bool]:
    saved = _fastpath.speedups
    _fastpath.speedups = None
    try:
        return run()
    finally:
        _fastpath.speedups = saved


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_threads_on_both_paths_admit_exactly_the_limit(path: str, algorithm: str) -> None:
    """Decorated calls and Limiter.hit race on one storage: exactly K of K/day admitted."""
    storage = MemoryStorage(clock=ManualClock(5.0))
    limiter = Limiter(DictSource({"stress": {"rate": "300/day", "algorithm": algorithm}}), storage)

    @limiter.limit("stress")
    def work() -> None:
        return None

    admitted = [0] * 6

    def hammer(index: int) -> None:
        for _ in range(150):
            if index % 2:
                admitted[index] += limiter.hit("stress").allowed
                continue
            try:
                work()
                admitted[index] += 1
            except RateLimitExceeded:
                pass

    race(6, hammer)
    assert sum(admitted) == 300


def test_listeners_see_every_call_even_on_the_fast_path(path: str) -> None:
    """A listener added after decoration sees each call; removed, the fast path resumes."""
    limiter = Limiter(DictSource({"job": "1000/minute"}), MemoryStorage(clock=ManualClock()))

    @limiter.limit("job")
    def job() -> None:
        return None

    job()
    seen: list[bool] = []
    limiter.add_listener(lambda decision: seen.append(decision.allowed))
    for _ in range(3):
        job()
    assert seen == [True, True, True]
    limiter.remove_listener(limiter._listeners[0])
    for _ in range(3):
        job()
    assert seen == [True, True, True]
    if path == "c":
        assert job.fast_calls >= 2  # type: ignore[attr-defined]


def test_source_change_reaches_the_fast_path(path: str) -> None:
    """Raising a rate in the source keeps the count and admits only the difference."""
    source = DictSource({"job": {"rate": "2/minute", "algorithm": "fixed-window"}})
    limiter = Limiter(source, MemoryStorage(clock=ManualClock(1.0)))

    @limiter.limit("job")
    def job() -> str:
        return "ok"

    assert [job(), job()] == ["ok", "ok"]
    with pytest.raises(RateLimitExceeded):
        job()
    source.set("job", {"rate": "3/minute", "algorithm": "fixed-window"})
    assert job() == "ok"
    with pytest.raises(RateLimitExceeded):
        job()


def test_default_clock_on_the_fast_path_follows_freezegun(path: str) -> None:
    """With the default clock, a frozen and ticked time drives the C path's windows."""
    with freezegun.freeze_time("2026-01-01 00:00:00") as frozen:

        @limit("2/minute", algorithm="fixed-window")
        def job() -> int:
            return 1

        assert job() + job() == 2
        with pytest.raises(RateLimitExceeded):
            job()
        frozen.tick(60)
        assert job() == 1


def test_a_state_someone_holds_is_never_changed_in_place(path: str) -> None:
    """The C path updates a state in place only when the table alone refers to it."""
    storage = MemoryStorage(clock=ManualClock())
    limiter = Limiter(
        DictSource({"job": {"rate": "10/minute", "algorithm": "fixed-window"}}), storage
    )

    @limiter.limit("job", key=lambda user: user)
    def job(user: str) -> str:
        return user

    assert job("ann") == "ann"
    (slot,) = storage.table
    held = storage.table[slot]
    before = tuple(held)
    assert job("ann") == "ann"
    assert held == before
    assert storage.table[slot][2] == 2


def test_methods_and_metadata_on_the_fast_path(path: str) -> None:
    """The fast-path callable binds as a method and carries the function's metadata."""

    class Client:
        def __init__(self, name: str) -> None:
            self.name = name

        @limit("2/minute", key=lambda self: self.name)
        def call(self) -> str:
            """Call the API."""
            return self.name

    a, b = Client("a"), Client("b")
    assert [a.call(), a.call(), b.call()] == ["a", "a", "b"]
    with pytest.raises(RateLimitExceeded):
        a.call()
    assert Client.call.__name__ == "call"
    assert Client.call.__doc__ == "Call the API."
    assert Client.call.limit_name.endswith("Client.call")  # type: ignore[attr-defined]


def test_adapt_after_the_first_call_reaches_a_decorated_function(path: str) -> None:
    """adapt() and throttle() after a decorated function has run still slow it down."""
    limiter = Limiter(
        DictSource({"api": {"rate": "10/minute", "algorithm": "fixed-window"}}),
        MemoryStorage(clock=ManualClock(1.0)),
    )

    @limiter.limit("api")
    def call() -> None:
        return None

    call()
    call()
    limiter.adapt("api")
    assert limiter.throttle("api") == 0.5
    admitted = 0
    for _ in range(10):
        try:
            call()
            admitted += 1
        except RateLimitExceeded:
            pass
    assert admitted == 3  # 5 of the halved rate, 2 of them used before the throttle


def test_a_fallback_registered_later_reaches_a_decorated_function(path: str) -> None:
    """A decorator's rate= registered after another function ran is seen by that one."""
    limiter = Limiter(DictSource({}), MemoryStorage(clock=ManualClock(1.0)))

    @limiter.limit("jobs", rate="1/minute")
    def first() -> None:
        return None

    first()
    with pytest.raises(RateLimitExceeded):
        first()

    @limiter.limit("jobs", rate="1/minute")
    def second() -> None:
        return None

    with pytest.raises(RateLimitExceeded):
        second()


def test_a_cost_beyond_any_capacity_is_refused_on_both_paths(path: str) -> None:
    """cost=10**30 is refused as never admissible, not an overflow in the fast path."""

    @limit("5/minute", cost=10**30)
    def huge() -> None:
        return None

    with pytest.raises(RateLimitExceeded) as caught:
        huge()
    assert caught.value.retry_after == float("inf")
