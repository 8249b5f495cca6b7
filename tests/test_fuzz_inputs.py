"""Hostile input at every public entry that takes it, in memory: rate strings, policy
specs, the decorator, TOML and JSON files, limit names, keys and costs. Only documented
exceptions come out, nothing hangs, and a limiter that was fed junk still decides right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import ratekeeper
from ratekeeper import ConfigError, FileSource, Limiter, MemoryStorage, Policy, Rate
from ratekeeper.sources import DictSource, Problem, check_file, load_file
from ratekeeper.sources._polling import parse_text
from ratekeeper.testing import ManualClock
from tests.fuzzing import (
    FUZZ,
    MODEL_LIMITS,
    Operation,
    guarded,
    key_inputs,
    operations,
    run_model,
    toml_data,
    toml_document,
)
from tests.strategies import hostile_text, junk_values, spec_tables, specs

DEEP = [50, 500, 990, 1000, 5000, 100_000]  # nesting depths around the recursion limit


def check_rates(rates: tuple[Rate, ...]) -> None:
    assert rates
    for rate in rates:
        assert isinstance(rate, Rate)
        assert 1 <= rate.amount <= 10**12
        assert 1 <= rate.period_us < 2**53


@FUZZ
@given(hostile_text())
@example("1" * 5000 + "/second")
@example("10 per " + "9" * 5000 + " seconds")
@example("10/second;" * 2000)
@example("1/" + " " * 100_000 + "second")
@example("\x00\ud800/second")
def test_rate_strings_parse_or_raise_config_error(text: str) -> None:
    """Rate.parse_many, Rate.parse and Policy.parse give valid values or a ConfigError."""
    rates: tuple[Rate, ...] | None = None
    try:
        parsed = guarded(Rate.parse_many, text)
    except ConfigError:
        pass
    else:
        check_rates(parsed)
        assert tuple(Rate.parse(str(r)) for r in parsed) == parsed  # str() reads back
        rates = parsed
    try:
        one = guarded(Rate.parse, text)
    except ConfigError:
        assert rates is None or len(rates) != 1
    else:
        assert rates == (one,)
    try:
        policy = guarded(Policy.parse, text)
    except ConfigError:
        pass
    else:
        assert policy.rates == rates


@FUZZ
@given(junk_values())
def test_rate_of_any_type_is_a_config_error_or_a_rate(value: object) -> None:
    """Rate.parse_many of a non-string is a ConfigError naming the type."""
    if isinstance(value, str):
        return
    with pytest.raises(ConfigError, match="a rate must be a string"):
        guarded(Rate.parse_many, value)  # type: ignore[arg-type]


@FUZZ
@given(specs())
def test_policy_specs_parse_or_raise_config_error(spec: object) -> None:
    """Policy.parse of any spec (text, table, junk) is a Policy or a ConfigError, and the
    JSON text of a table parses the same way (as a Redis or environment value would)."""
    policy: Policy | None = None
    try:
        parsed = guarded(Policy.parse, spec)  # type: ignore[arg-type]
    except ConfigError:
        pass
    else:
        check_rates(parsed.rates)
        policy = parsed
    if isinstance(spec, dict):
        try:
            text = json.dumps(spec)
        except (TypeError, ValueError):  # keys or values JSON cannot hold
            return
        try:
            from_text = guarded(parse_text, text)
        except ConfigError:
            assert policy is None
        else:
            assert from_text == policy


@FUZZ
@given(
    rate=st.one_of(hostile_text(), junk_values(3)),
    algorithm=st.one_of(st.none(), st.sampled_from(["token-bucket", "fixed"]), junk_values(2)),
    burst=st.one_of(st.none(), st.integers(-5, 5), junk_values(2)),
    key=st.one_of(st.none(), hostile_text(), junk_values(2)),
    cost=st.one_of(st.just(1), st.integers(-2, 2), st.just(10**30), junk_values(2)),
    on_exceeded=st.one_of(st.sampled_from(["raise", "wait"]), junk_values(1)),
    max_wait=st.one_of(st.none(), st.just(0.0), st.floats(), junk_values(1)),
)
def test_decorator_with_any_arguments_decorates_or_raises(
    rate: object,
    algorithm: object,
    burst: object,
    key: object,
    cost: object,
    on_exceeded: object,
    max_wait: object,
) -> None:
    """ratekeeper.limit(...) with any arguments either raises a ConfigError at decoration
    time or decorates; the first call then runs, or is refused for good (a cost past the
    capacity)."""
    try:
        decorator = guarded(
            ratekeeper.limit,
            rate,  # type: ignore[arg-type]
            algorithm=algorithm,  # type: ignore[arg-type]
            burst=burst,  # type: ignore[arg-type]
            key=key,  # type: ignore[arg-type]
            cost=cost,  # type: ignore[arg-type]
            on_exceeded=on_exceeded,  # type: ignore[arg-type]
            max_wait=max_wait,  # type: ignore[arg-type]
        )

        @decorator
        def work() -> str:
            return "ran"

    except ConfigError:
        return
    if on_exceeded == "wait" and max_wait is None:
        return  # an unbounded wait: calling would pace in real time

    def attempt() -> object:
        try:
            return work()
        except ratekeeper.RateLimitExceeded as refused:
            return refused.retry_after

    # A fresh limit admits its first call unless the cost exceeds what it can ever hold.
    assert guarded(attempt) in ("ran", float("inf"))


@FUZZ
@given(key_result=st.one_of(hostile_text(), junk_values(3)), cost_result=junk_values(2))
def test_decorator_key_and_cost_callables_returning_junk(
    key_result: object, cost_result: object
) -> None:
    """A key callable may return anything (it is turned into text); a cost callable
    returning anything but a whole number >= 0 is a ConfigError, and the function does
    not run."""
    ran: list[object] = []
    limiter = Limiter(DictSource({"a": "1000/hour"}), MemoryStorage(clock=ManualClock()))

    @limiter.limit("a", key=lambda: key_result, cost=lambda: cost_result)  # type: ignore[arg-type, return-value]
    def work() -> None:
        ran.append(1)

    good = isinstance(cost_result, int) and not isinstance(cost_result, bool)
    if good and 0 <= cost_result <= 1000:  # type: ignore[operator]
        guarded(work)
        assert ran == [1]
    elif good and cost_result > 1000:  # type: ignore[operator]
        with pytest.raises(ratekeeper.RateLimitExceeded):
            guarded(work)
        assert ran == []
    else:
        with pytest.raises(ConfigError, match="cost must be a whole number"):
            guarded(work)
        assert ran == []


@FUZZ
@given(operations)
def test_limiter_fed_junk_names_keys_and_costs_still_decides_right(
    ops: list[Operation],
) -> None:
    """hit, peek, reset and acquire with bad names, costs and timeouts are ConfigErrors
    that change nothing; every good call between them is decided exactly as the model
    says (MemoryStorage)."""
    limiter = Limiter(DictSource(MODEL_LIMITS), MemoryStorage(clock=ManualClock(1000.0)))
    run_model(limiter, ops)


@FUZZ
@given(st.lists(key_inputs, min_size=1, max_size=20, unique=True))
@example(["a:b", "a", "{a}", "a|b", "a%3Ab", "#" + "0" * 40, "x" * 100_000, "x" * 99_999])
def test_distinct_keys_never_share_state_in_memory(keys: list[str]) -> None:
    """Each distinct key has its own count: one unit each, then each is full."""
    limiter = Limiter(DictSource({"one": "1/hour"}), MemoryStorage(clock=ManualClock(1000.0)))
    assert all(guarded(limiter.hit, "one", key=k).allowed for k in keys)
    assert not any(guarded(limiter.hit, "one", key=k).allowed for k in keys)


def write_document(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def check_verdict(path: Path, problems: list[Problem]) -> None:
    """check_file's verdict matches what FileSource and load_file do with the file."""
    assert all(isinstance(p, Problem) and p.origin == str(path) for p in problems)
    lines = path.read_bytes().count(b"\n") + 1
    assert all(p.line is None or 1 <= p.line <= lines for p in problems)
    assert all(p.message for p in problems)
    if problems:
        with pytest.raises(ConfigError) as failed:
            guarded(FileSource, path, clock=ManualClock())
        assert str(path) in str(failed.value)
        with pytest.raises(ConfigError):
            guarded(load_file, path)
        return
    source = guarded(FileSource, path, clock=ManualClock())
    try:
        loaded = guarded(load_file, path)
        assert dict(source.snapshot()) == loaded
        limiter = Limiter(source, MemoryStorage(clock=ManualClock()))
        for name in loaded:
            assert isinstance(guarded(limiter.peek, name, cost=0).allowed, bool)
    finally:
        source.close()


@FUZZ
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".toml", ".json"]))
@example(data=b"\xff\xfe[limits]", suffix=".toml")
@example(data=b'{"limits": {"a": "1/second"}, "limits": 5}', suffix=".json")
@example(
    data=b'{"limits": {"a": {"rate": "1/second", "burst": ' + b"9" * 5000 + b"}}}", suffix=".json"
)
@example(data=b'[limits]\na = {rate = "1/second", burst = ' + b"9" * 5000 + b"}", suffix=".toml")
@example(
    data=b'[limits]\na = {rate = "1/second", algorithm = "token-bucket", burst = nan}',
    suffix=".toml",
)
@example(data=b'{"limits": {"a": {"rate": "1/second", "burst": -Infinity}}}', suffix=".json")
def test_random_bytes_as_a_limits_file(tmp_path: Path, data: bytes, suffix: str) -> None:
    """Any bytes: check_file lists problems (file, line in range) and never raises."""
    path = write_document(tmp_path / f"limits{suffix}", data)
    check_verdict(path, guarded(check_file, path))


@FUZZ
@given(
    limits=st.dictionaries(hostile_text(), specs(), max_size=5),
    top=st.one_of(st.none(), junk_values(4)),
    fmt=st.sampled_from(["toml", "json"]),
)
def test_random_structures_as_a_limits_file(
    tmp_path: Path, limits: dict[str, object], top: object, fmt: str
) -> None:
    """Random tables of good, bad and absurd specs: each limit is accepted by the file
    exactly when Policy.parse accepts its spec, and every other one is a problem naming it."""
    document: object = {"limits": limits} if top is None else top
    if fmt == "json":
        try:
            text = json.dumps(document)
        except (TypeError, ValueError):
            return
    elif isinstance(document, dict) and document.keys() == {"limits"}:
        # Compare with what the file holds: TOML has no null, so the writer drops it.
        limits = {name: toml_data(spec) for name, spec in limits.items() if spec is not None}
        text = toml_document(limits)
    else:
        return
    path = write_document(tmp_path / f"limits.{fmt}", text.encode("utf-8", "surrogatepass"))
    problems = guarded(check_file, path)
    check_verdict(path, problems)
    if top is not None or any(p.name is None for p in problems):
        return  # a syntax or document-level problem: no per-limit verdicts to compare
    for name, spec in limits.items():
        try:
            Policy.parse(spec)  # type: ignore[arg-type]
            good = bool(name.strip())
        except ConfigError:
            good = False
        assert good == all(p.name != name for p in problems), (name, spec)


@pytest.mark.parametrize("depth", DEEP)
@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_deeply_nested_files_are_problems_not_crashes(tmp_path: Path, depth: int, fmt: str) -> None:
    """A file nested thousands of levels deep is reported as a problem, never a
    RecursionError, and a spec held as text (a Redis or environment value) likewise."""
    nested = "[" * depth + "]" * depth
    if fmt == "json":
        text = f'{{"limits": {{"a": {{"rate": {nested}}}}}}}'
    else:
        text = f"[limits]\na = {{rate = {nested}}}\n"
    path = write_document(tmp_path / f"limits.{fmt}", text.encode())
    problems = guarded(check_file, path)
    assert len(problems) == 1
    check_verdict(path, problems)
    with pytest.raises(ConfigError):
        guarded(parse_text, f'{{"rate": {nested}}}')


@FUZZ
@given(junk=st.binary(max_size=120) | spec_tables().map(lambda t: json.dumps(t).encode()))
def test_a_bad_edit_keeps_counting_with_the_last_good_limits(tmp_path: Path, junk: bytes) -> None:
    """After the file turns into junk, the limiter keeps its limits and its counts."""
    path = write_document(tmp_path / "limits.json", b'{"limits": {"a": "3/hour"}}')
    clock = ManualClock(1000.0)
    source = FileSource(path, interval=1.0, clock=clock)
    limiter = Limiter(source, MemoryStorage(clock=clock))
    try:
        assert limiter.hit("a").allowed
        path.write_bytes(junk)
        clock.advance(2.0)
        changed = guarded(source.refresh)
        if source.problems:
            assert not changed
            assert limiter.bound("a").policy == Policy.parse("3/hour")
            assert [limiter.hit("a").allowed for _ in range(3)] == [True, True, False]
        else:  # the junk happened to be a valid document: its limits are in force
            assert dict(source.snapshot()) == load_file(path)
    finally:
        source.close()
