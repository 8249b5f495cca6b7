"""Name resolution, DictSource, and the change signal that keeps resolution off the hot path."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratekeeper import ConfigError, DictSource, Limiter, MemoryStorage, Policy, Rate, Snapshot
from ratekeeper.sources import Source
from ratekeeper.sources._base import specificity
from ratekeeper.testing import ManualClock
from tests.strategies import limit_names


def table(*names: str) -> Snapshot:
    """A snapshot whose entry ``names[i]`` allows i + 1 per second, to tell them apart."""
    return Snapshot({name: Policy.parse(f"{i + 1}/second") for i, name in enumerate(names)})


def amount(snapshot: Snapshot, name: str) -> int | None:
    policy = snapshot.resolve(name)
    return None if policy is None else policy.rates[0].amount


def test_exact_name_beats_every_pattern() -> None:
    """An exact entry wins even over a pattern that spells the same name."""
    snapshot = table("*", "aws.sns.*", "aws.sns.Publish", "aws.sns.Publis?")
    assert snapshot.match("aws.sns.Publish") == "aws.sns.Publish"
    assert amount(snapshot, "aws.sns.Publish") == 3


def test_most_literal_characters_wins() -> None:
    """aws.sns.* beats aws.* beats *, whatever the order of the entries."""
    snapshot = table("*", "aws.*", "aws.sns.*")
    assert snapshot.match("aws.sns.Publish") == "aws.sns.*"
    assert snapshot.match("aws.sqs.SendMessage") == "aws.*"
    assert snapshot.match("reports.export") == "*"
    reordered = table("aws.sns.*", "*", "aws.*")
    assert reordered.match("aws.sns.Publish") == "aws.sns.*"


def test_ties_go_to_fewer_wildcards_then_sorted_order() -> None:
    """Equal literal counts: fewer wildcards win, then the pattern first in sorted order."""
    assert table("a?*c", "a*c").match("abxc") == "a*c"
    assert table("*.b", "a.*").match("a.b") == "*.b"
    assert table("a.*", "*.b").match("a.b") == "*.b"


def test_a_set_counts_as_no_literal_character() -> None:
    """aws.s[nq]s.* is less specific than aws.sns.* (the set is not a literal)."""
    snapshot = table("aws.s[nq]s.*", "aws.sns.*")
    assert snapshot.match("aws.sns.Publish") == "aws.sns.*"
    assert snapshot.match("aws.sqs.Send") == "aws.s[nq]s.*"
    assert specificity("aws.s[!x]s.*") > specificity("aws.sns.*")


def test_patterns_match_whole_names_case_sensitively() -> None:
    """A pattern must match the whole name, with case, and * crosses dots."""
    snapshot = table("reports.*", "aws.*")
    assert snapshot.match("reports") is None
    assert snapshot.match("my.reports.export") is None
    assert snapshot.match("Reports.export") is None
    assert snapshot.match("aws.sns.Publish") == "aws.*"


def test_no_entry_resolves_to_none() -> None:
    """An empty snapshot, or one with no match, resolves to None."""
    assert Snapshot().resolve("x") is None
    assert table("a.*").resolve("b.c") is None


@settings(max_examples=60, deadline=None)
@given(names=st.lists(limit_names(), min_size=1, max_size=6, unique=True), data=st.data())
def test_resolution_picks_the_most_specific_match(names: list[str], data: st.DataObject) -> None:
    """Among the entries matching a name, the exact one, else the least by specificity()."""
    import fnmatch

    patterns = [name.rpartition(".")[0] + ".*" if "." in name else "*" for name in names]
    entries = sorted(set(names[: len(names) // 2] + patterns))
    snapshot = table(*entries)
    name = data.draw(st.sampled_from(names))
    matching = [entry for entry in entries if fnmatch.fnmatchcase(name, entry)]
    expected = name if name in entries else min(matching, key=specificity)
    assert snapshot.match(name) == expected


def test_dict_source_set_delete_replace() -> None:
    """set adds or changes one entry, delete removes one, replace swaps the table."""
    source = DictSource({"a": "1/second"})
    source.set("b.*", {"rate": "2/second", "algorithm": "token-bucket", "burst": 4})
    assert set(source.snapshot()) == {"a", "b.*"}
    assert source.snapshot().resolve("b.x") == Policy.parse(
        {"rate": "2/second", "algorithm": "token-bucket", "burst": 4}
    )
    source.delete("a")
    source.delete("never-there")
    assert set(source.snapshot()) == {"b.*"}
    source.replace({"c": Policy((Rate(3, 1.0),))})
    assert dict(source.snapshot()) == {"c": Policy((Rate(3, 1.0),))}


def test_dict_source_version_moves_only_on_change() -> None:
    """version is the same object until set, delete or replace changes something."""
    source = DictSource({"a": "1/second"})
    assert isinstance(source, Source)
    before = source.version
    assert source.version is before
    source.delete("missing")
    assert source.version is before
    source.set("a", "2/second")
    assert source.version is not before


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"a": "5/fortnight"}, r"DictSource: limit 'a': .*fortnight"),
        ({"a": {"rate": "5/minute", "algorithm": "leaky"}}, r"limit 'a': unknown algorithm"),
        ({"a": 5}, r"limit 'a': a limit must be a rate string"),
        ({"": "5/minute"}, r"non-empty string"),
    ],
)
def test_dict_source_rejects_a_bad_spec_whole(limits: dict[str, object], message: str) -> None:
    """A bad spec is a ConfigError naming the limit, and the source keeps its table."""
    with pytest.raises(ConfigError, match=message):
        DictSource(limits)  # type: ignore[arg-type]
    source = DictSource({"ok": "1/second"})
    version = source.version
    with pytest.raises(ConfigError, match=message):
        source.replace({"ok": "2/second", **limits})  # type: ignore[dict-item]
    name, spec = next(iter(limits.items()))
    with pytest.raises(ConfigError):
        source.set(name, spec)  # type: ignore[arg-type]
    assert source.version is version
    assert dict(source.snapshot()) == {"ok": Policy.parse("1/second")}


def test_dict_source_readers_see_whole_snapshots() -> None:
    """While another thread replaces the table, a reader's snapshot is always one whole table."""
    tables = [{f"n{i}": f"{k}/second" for i in range(20)} for k in (1, 2)]
    source = DictSource(tables[0])
    stop = threading.Event()

    def writer() -> None:
        k = 0
        while not stop.is_set():
            k ^= 1
            source.replace(tables[k])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(2000):
            amounts = {policy.rates[0].amount for policy in source.snapshot().values()}
            assert len(amounts) == 1
    finally:
        stop.set()
        thread.join()


class CountingDictSource(DictSource):
    """A DictSource that counts how often its snapshot is asked for."""

    snapshots = 0

    def snapshot(self) -> Snapshot:
        self.snapshots += 1
        return super().snapshot()


def test_resolution_is_cached_until_the_version_moves() -> None:
    """1000 calls resolve the name once; a change makes the next call resolve it again."""
    source = CountingDictSource({"jobs": "1000000/second"})
    limiter = Limiter(source, MemoryStorage(clock=ManualClock()))

    @limiter.limit("jobs")
    def job() -> None:
        pass

    for _ in range(1000):
        job()
        limiter.hit("jobs")
    assert source.snapshots == 1
    source.set("jobs", "999999/second")
    job()
    assert source.snapshots == 2
    assert limiter.peek("jobs").rate == Rate(999999, 1.0)
    assert source.snapshots == 2


def test_missing_entry_without_fallback_names_limit_and_source() -> None:
    """No entry and no rate=: a ConfigError at the first call naming the limit and source."""
    limiter = Limiter(DictSource({"other": "1/second"}))

    @limiter.limit("reports.export")
    def export() -> None:
        pass

    with pytest.raises(ConfigError, match=r"no limit named 'reports\.export' in DictSource"):
        export()


def test_fallback_applies_only_without_an_entry() -> None:
    """rate= is used while no entry (exact or pattern) matches; an entry then wins."""
    source = DictSource()
    limiter = Limiter(source, MemoryStorage(clock=ManualClock()))
    limiter.limit("reports.export", rate="2/minute")
    assert limiter.peek("reports.export").rate == Rate(2, 60.0)
    source.set("reports.*", "7/minute")
    assert limiter.peek("reports.export").rate == Rate(7, 60.0)
    source.delete("reports.*")
    assert limiter.peek("reports.export").rate == Rate(2, 60.0)
