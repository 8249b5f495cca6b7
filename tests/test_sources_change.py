"""What a changed limit means for the counting state, on every storage.

Each test changes a policy through a DictSource between calls and pins what the next
calls see; the same test runs on MemoryStorage and on RedisStorage (a real server, its
time taken from a ManualClock so both storages see the same instants).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ratekeeper import (
    ConfigError,
    DictSource,
    FileSource,
    Limiter,
    MemoryStorage,
    Policy,
    Rate,
    RateLimitExceeded,
    Storage,
)
from ratekeeper._rates import Algorithm, PolicySpec
from ratekeeper.testing import ManualClock
from tests.stress import fast_switching

WINDOWS: tuple[Algorithm, ...] = ("fixed-window", "sliding-window", "sliding-log")


@dataclass
class Rig:
    """A limiter on one storage, the source it reads and the clock both storages follow."""

    limiter: Limiter
    source: DictSource
    clock: ManualClock

    def set(self, name: str, spec: PolicySpec) -> None:
        self.source.set(name, spec)


@pytest.fixture(
    params=[
        pytest.param("memory"),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def storage_kind(request: pytest.FixtureRequest) -> str:
    """Which storage the test runs on."""
    return str(request.param)


@pytest.fixture
def rig(storage_kind: str, request: pytest.FixtureRequest) -> Iterator[Rig]:
    """An empty DictSource read by a limiter on the chosen storage, at t = 1000 s."""
    clock = ManualClock(1000.0)
    source = DictSource()
    storage: Storage
    if storage_kind == "memory":
        storage = MemoryStorage(clock=clock)
        yield Rig(Limiter(source, storage, sleep=clock.sleep), source, clock)
        return
    from ratekeeper import RedisStorage

    url = request.getfixturevalue("redis_url")
    with RedisStorage.from_url(url, clock=clock) as redis_storage:
        yield Rig(Limiter(source, redis_storage, sleep=clock.sleep), source, clock)


def tb(rate: str, burst: int | None = None) -> PolicySpec:
    spec: dict[str, object] = {"rate": rate, "algorithm": "token-bucket"}
    if burst is not None:
        spec["burst"] = burst
    return spec


def test_a_change_is_seen_by_the_very_next_call(rig: Rig) -> None:
    """DictSource.set, delete and replace are seen by the next call, decorated or not."""
    rig.set("jobs", "1/minute")

    @rig.limiter.limit("jobs")
    def job() -> str:
        return "ok"

    assert job() == "ok"
    with pytest.raises(RateLimitExceeded):
        job()
    rig.set("jobs", "2/minute")
    assert job() == "ok"
    rig.source.replace({"jobs": "1/second"})
    assert rig.limiter.peek("jobs").rate == Rate(1, 1.0)
    rig.source.delete("jobs")
    with pytest.raises(ConfigError, match=r"no limit named 'jobs' in DictSource"):
        job()


@pytest.mark.parametrize("algorithm", WINDOWS)
def test_raising_a_rate_keeps_the_count(rig: Rig, algorithm: Algorithm) -> None:
    """5/minute used up, then 10/minute: exactly 5 more in that window, not 10."""
    rig.set("w", {"rate": "5/minute", "algorithm": algorithm})
    assert all(rig.limiter.hit("w").allowed for _ in range(5))
    assert not rig.limiter.hit("w").allowed
    rig.set("w", {"rate": "10/minute", "algorithm": algorithm})
    assert rig.limiter.peek("w").remaining == 5
    assert [rig.limiter.hit("w").allowed for _ in range(6)] == [True] * 5 + [False]


@pytest.mark.parametrize("algorithm", WINDOWS)
def test_lowering_a_rate_denies_until_usage_falls_below(rig: Rig, algorithm: Algorithm) -> None:
    """5 used, then 3/minute: refused until the count has fallen below 3."""
    rig.set("w", {"rate": "5/minute", "algorithm": algorithm})
    assert all(rig.limiter.hit("w").allowed for _ in range(5))
    rig.set("w", {"rate": "3/minute", "algorithm": algorithm})
    refused = rig.limiter.hit("w")
    assert not refused.allowed
    assert refused.rate == Rate(3, 60.0)
    assert 0 < refused.retry_after <= 60.0
    rig.clock.advance(refused.retry_after - 1e-6)
    assert not rig.limiter.hit("w").allowed
    rig.clock.advance(1e-6)
    assert rig.limiter.hit("w").allowed


def test_token_bucket_level_is_clamped_into_a_smaller_burst(rig: Rig) -> None:
    """Burst 10 with 3 used has 7 left; with burst 5 it has 5 at once, then none."""
    rig.set("tb", tb("10/minute", 10))
    assert all(rig.limiter.hit("tb").allowed for _ in range(3))
    assert rig.limiter.peek("tb").remaining == 7
    rig.set("tb", tb("10/minute", 5))
    assert rig.limiter.peek("tb").remaining == 5
    assert [rig.limiter.hit("tb").allowed for _ in range(6)] == [True] * 5 + [False]


def test_token_bucket_level_is_kept_in_a_larger_burst(rig: Rig) -> None:
    """A larger burst does not refill the bucket: the level carries over."""
    rig.set("tb", tb("10/minute", 5))
    assert all(rig.limiter.hit("tb").allowed for _ in range(3))
    rig.set("tb", tb("10/minute", 20))
    assert rig.limiter.peek("tb").remaining == 2
    assert [rig.limiter.hit("tb").allowed for _ in range(3)] == [True, True, False]


def test_token_bucket_level_carries_over_a_new_amount(rig: Rig) -> None:
    """A new amount with the same period keeps the level (6 of 10 left: 6 of 20 left)."""
    rig.set("tb", tb("10/minute"))
    assert all(rig.limiter.hit("tb").allowed for _ in range(4))
    rig.set("tb", tb("20/minute"))
    assert rig.limiter.peek("tb").remaining == 6
    assert [rig.limiter.hit("tb").allowed for _ in range(7)] == [True] * 6 + [False]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"rate": "5/minute", "algorithm": "fixed-window"}, {"rate": "5/minute"}),
        ({"rate": "5/minute"}, {"rate": "5/minute", "algorithm": "sliding-log"}),
        ({"rate": "5/minute"}, {"rate": "5/hour"}),
        (tb("5/minute"), tb("5/hour")),
        (tb("5/minute"), {"rate": "5/minute", "algorithm": "fixed-window"}),
    ],
)
def test_new_algorithm_or_period_starts_fresh(
    rig: Rig, before: PolicySpec, after: PolicySpec
) -> None:
    """State is keyed by name, key, algorithm and period: change one and counting restarts."""
    rig.set("w", before)
    assert all(rig.limiter.hit("w").allowed for _ in range(5))
    assert not rig.limiter.hit("w").allowed
    rig.set("w", after)
    assert [rig.limiter.hit("w").allowed for _ in range(6)] == [True] * 5 + [False]


def test_a_deleted_entry_falls_back_to_the_decorator_rate(rig: Rig) -> None:
    """With its entry deleted a decorated limit uses its rate=, and keeps counting."""
    rig.set("reports.export", "3/minute")

    @rig.limiter.limit("reports.export", rate="2/minute")
    def export() -> str:
        return "done"

    assert export() == "done"
    assert rig.limiter.peek("reports.export").policy.rates == (Rate(3, 60.0),)
    rig.source.delete("reports.export")
    assert rig.limiter.peek("reports.export").policy.rates == (Rate(2, 60.0),)
    assert export() == "done"
    with pytest.raises(RateLimitExceeded):
        export()


def test_a_deleted_entry_falls_back_to_a_pattern(rig: Rig) -> None:
    """Deleting an exact entry leaves the name to the most specific matching pattern."""
    rig.source.replace({"aws.sns.Publish": "1/second", "aws.sns.*": "7/second", "*": "1/day"})
    assert rig.limiter.hit("aws.sns.Publish").rate == Rate(1, 1.0)
    rig.source.delete("aws.sns.Publish")
    assert rig.limiter.hit("aws.sns.Publish").rate == Rate(7, 1.0)
    rig.source.delete("aws.sns.*")
    assert rig.limiter.hit("aws.sns.Publish").rate == Rate(1, 86400.0)


OLD = {"rate": "1000/minute", "algorithm": "fixed-window"}
NEW = {"rate": "2000/minute;50000/day", "algorithm": "fixed-window"}


def test_switch_interval_hammer_sees_whole_policies(rig: Rig) -> None:
    """4 threads hit a limit while another swaps its rate: no call fails, and every
    decision agrees with the old policy or the new one, never a mix of both."""
    old, new = Policy.parse(OLD), Policy.parse(NEW)
    rig.set("hot", old)

    def change(flip: bool) -> None:
        rig.set("hot", new if flip else old)

    hammer(rig.limiter, change, old, new)


def test_hammer_through_a_file_source(rig: Rig, tmp_path: Path) -> None:
    """The same, with the file rewritten (by rename) and the interval passing meanwhile:
    the threads that find a look due race for it, and each decision is still whole."""
    path = tmp_path / "limits.json"
    staged = tmp_path / "limits.json.new"
    path.write_text(json.dumps({"limits": {"hot": OLD}}))
    source = FileSource(path, interval=0.5, clock=rig.clock)
    limiter = Limiter(source, rig.limiter.storage)

    def change(flip: bool) -> None:
        staged.write_text(json.dumps({"limits": {"hot": NEW if flip else OLD}}))
        os.replace(staged, path)
        rig.clock.advance(0.25)

    hammer(limiter, change, Policy.parse(OLD), Policy.parse(NEW))
    assert source.last_error is None


def hammer(limiter: Limiter, change: Callable[[bool], None], old: Policy, new: Policy) -> None:
    """4 threads hit "hot" 150 times each while ``change`` alternates old and new."""
    errors: list[BaseException] = []
    decisions: list[tuple[Policy, Rate, int, bool]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def work() -> None:
        seen = []
        try:
            for _ in range(150):
                d = limiter.hit("hot")
                seen.append((d.policy, d.rate, d.remaining, d.allowed))
        except BaseException as exc:  # the assertion below reports it
            errors.append(exc)
        with lock:
            decisions.extend(seen)

    def changer() -> None:
        flip = False
        while not stop.is_set():
            change(flip)
            flip = not flip

    with fast_switching():
        workers = [threading.Thread(target=work) for _ in range(4)]
        swapper = threading.Thread(target=changer)
        swapper.start()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        stop.set()
        swapper.join()
    assert errors == []
    assert len(decisions) == 600
    policies = {policy for policy, _, _, _ in decisions}
    assert policies <= {old, new}
    for policy, rate, remaining, allowed in decisions:
        assert allowed
        assert rate in policy.rates
        # 600 hits in all: the binding rate is always the per-minute one, whose amount
        # bounds what remains.
        assert rate.period == 60.0
        assert 0 <= remaining < rate.amount
