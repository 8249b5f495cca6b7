"""MemoryStorage: exact under threads, driven by any clock, bounded in memory."""

from __future__ import annotations

from collections.abc import Sequence

import freezegun
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratekeeper import DictSource, Limiter, MemoryStorage, Policy, Rate
from ratekeeper._algorithms import NEVER, BoundLimit
from ratekeeper._rates import Algorithm
from ratekeeper.testing import ManualClock
from tests.strategies import ALGORITHMS, SIMULATION, single_policies, small_rates
from tests.stress import race


def bound(spec: str | dict[str, object], name: str = "test") -> BoundLimit:
    return BoundLimit.compile(name, Policy.parse(spec))


def table(algorithm: Algorithm, rate: str) -> dict[str, object]:
    return {"rate": rate, "algorithm": algorithm}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_threads_admit_exactly_the_limit(algorithm: Algorithm) -> None:
    """8 threads x 200 hits on a 500-per-day limit: exactly 500 are admitted."""
    storage = MemoryStorage(clock=ManualClock())
    limiter = Limiter(DictSource({"stress": table(algorithm, "500/day")}), storage)
    admitted = [0] * 8

    def hammer(index: int) -> None:
        for _ in range(200):
            if limiter.hit("stress").allowed:
                admitted[index] += 1

    race(8, hammer)
    assert sum(admitted) == 500


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_manual_clock_drives_windows(algorithm: Algorithm) -> None:
    """An injected ManualClock is the only time the storage sees."""
    clock = ManualClock(start=1000.0)
    storage = MemoryStorage(clock=clock)
    limit = bound(table(algorithm, "1/second"))
    assert storage.decide(limit, "k", 1)[0]
    assert not storage.decide(limit, "k", 1)[0]
    clock.advance(2.0)
    assert storage.decide(limit, "k", 1)[0]


def test_any_float_clock_can_be_injected() -> None:
    """A plain callable returning seconds works as a clock."""
    now = [50.0]
    storage = MemoryStorage(clock=lambda: now[0])
    limit = bound(table("fixed-window", "1/minute"))
    assert storage.decide(limit, "k", 1)[0]
    refused = storage.decide(limit, "k", 1)
    assert (refused[0], refused[3]) == (False, 10_000_000)
    now[0] = 60.0
    assert storage.decide(limit, "k", 1)[0]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_default_clock_follows_freezegun(algorithm: Algorithm) -> None:
    """MemoryStorage() with no clock sees freezegun's frozen, ticked and moved time."""
    with freezegun.freeze_time("2024-05-01 12:00:00") as frozen:
        limiter = Limiter(DictSource({"jobs": table(algorithm, "2/minute")}), MemoryStorage())
        assert [limiter.hit("jobs").allowed for _ in range(3)] == [True, True, False]
        frozen.tick(1.0)
        assert not limiter.hit("jobs").allowed
        frozen.tick(150.0)
        assert limiter.hit("jobs").allowed
        assert limiter.hit("jobs").allowed
        assert not limiter.hit("jobs").allowed
        frozen.move_to("2024-05-01 12:10:00")
        assert limiter.hit("jobs").allowed


def test_a_million_one_shot_keys_stay_bounded() -> None:
    """1,000,000 distinct keys, 1 ms apart, on 1/second: the table stays small."""
    clock = ManualClock()
    storage = MemoryStorage(clock=clock)
    limit = bound("1/second")  # the default algorithm, whose state lives longest
    decide = storage.decide
    advance = clock.advance
    largest = 0
    for i in range(1_000_000):
        decide(limit, str(i), 1)
        advance(0.001)
        if i % 512 == 0:
            largest = max(largest, len(storage))
    assert largest < 5000
    assert len(storage) < 5000


@pytest.mark.parametrize("algorithm", ["fixed-window", "sliding-log", "token-bucket"])
def test_one_shot_keys_stay_bounded_for_every_algorithm(algorithm: Algorithm) -> None:
    """Idle keys expire under every algorithm, not just the default."""
    clock = ManualClock()
    storage = MemoryStorage(clock=clock)
    limit = bound(table(algorithm, "1/second"))
    for i in range(100_000):
        storage.decide(limit, str(i), 1)
        clock.advance(0.001)
    assert len(storage) < 5000


def test_sweep_keeps_live_keys() -> None:
    """Expiring idle keys never drops a key that is still limited."""
    clock = ManualClock()
    storage = MemoryStorage(clock=clock)
    hourly = bound(table("fixed-window", "1/hour"), "hourly")
    brief = bound(table("fixed-window", "1/second"), "brief")
    assert storage.decide(hourly, "kept", 1)[0]
    for i in range(10_000):
        storage.decide(brief, str(i), 1)
        clock.advance(0.01)
    assert len(storage) < 5000
    assert not storage.decide(hourly, "kept", 1)[0]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_reset_forgets_one_key(algorithm: Algorithm) -> None:
    """reset() forgets the key under every rate of the limit, and nothing else."""
    storage = MemoryStorage(clock=ManualClock())
    limit = bound(table(algorithm, "1/minute;2/hour"))
    for key in ("a", "b"):
        assert storage.decide(limit, key, 1)[0]
    storage.reset(limit, "a")
    assert storage.decide(limit, "a", 1)[0]
    assert not storage.decide(limit, "b", 1)[0]


def test_clear_forgets_everything() -> None:
    """clear() empties the table."""
    storage = MemoryStorage(clock=ManualClock())
    limit = bound("1/minute")
    for key in "abc":
        storage.decide(limit, key, 1)
    storage.clear()
    assert len(storage) == 0
    assert storage.decide(limit, "a", 1)[0]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_keys_and_names_never_share_state(algorithm: Algorithm) -> None:
    """Each (limit name, key) pair counts alone, even for keys that look like separators."""
    storage = MemoryStorage(clock=ManualClock())
    first = bound(table(algorithm, "1/minute"), "a")
    second = bound(table(algorithm, "1/minute"), "a\x1fb")
    keys = ["", "x", "x\x1f", "\x1fx", "b\x1fx", "ключ", "x" * 10_000]
    for limit in (first, second):
        for key in keys:
            assert storage.decide(limit, key, 1)[0]
            assert not storage.decide(limit, key, 1)[0]
    assert len(storage) == 2 * len(keys)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_refusal_and_peek_leave_the_table_unchanged(algorithm: Algorithm) -> None:
    """A refused request, a peek, cost 0 and a cost beyond capacity write nothing."""
    storage = MemoryStorage(clock=ManualClock())
    limit = bound(table(algorithm, "2/minute;5/hour"))
    storage.decide(limit, "k", 2)
    before = dict(storage._states)
    assert not storage.decide(limit, "k", 1)[0]
    assert not storage.decide(limit, "k", 1, 0, False)[0]
    assert storage.decide(limit, "k", 0)[0]
    assert storage.decide(limit, "k", 3)[3] == NEVER
    assert storage._states == before
    assert storage.decide(limit, "fresh", 0)[0]
    assert storage.decide(limit, "fresh", 1, 0, False)[0]
    assert storage.decide(limit, "fresh", 6)[3] == NEVER
    assert storage._states == before


@SIMULATION
@given(
    single_policies(),
    st.lists(st.tuples(st.integers(0, 3_000_000), st.integers(1, 4), st.booleans()), max_size=40),
)
def test_peek_predicts_and_never_changes(
    policy: Policy, requests: Sequence[tuple[int, int, bool]]
) -> None:
    """A peek answers what the next hit would and leaves every later decision unchanged."""
    limit = BoundLimit.compile("peek", policy)
    peeking_clock, plain_clock = ManualClock(), ManualClock()
    peeking, plain = MemoryStorage(clock=peeking_clock), MemoryStorage(clock=plain_clock)
    for dt, cost, peek_first in requests:
        peeking_clock.advance(dt / 1e6)
        plain_clock.advance(dt / 1e6)
        if peek_first:
            peeked = peeking.decide(limit, "k", cost, 0, False)
            hit = peeking.decide(limit, "k", cost)
            assert peeked[0] == hit[0]
            assert peeked[2:5] == hit[2:5]
        else:
            hit = peeking.decide(limit, "k", cost)
        assert plain.decide(limit, "k", cost) == hit


@SIMULATION
@given(small_rates(), st.sampled_from(ALGORITHMS), st.integers(1, 10**9))
def test_clock_going_back_admits_no_more(rate: Rate, algorithm: Algorithm, back_us: int) -> None:
    """A clock that jumps back never reopens a key that was exhausted."""
    clock = ManualClock(start=10_000.0)
    storage = MemoryStorage(clock=clock)
    limit = BoundLimit.compile("back", Policy((rate,), algorithm=algorithm))
    while storage.decide(limit, "k", 1)[0]:
        pass
    clock.advance(-back_us / 1e6)
    assert not storage.decide(limit, "k", 1)[0]
