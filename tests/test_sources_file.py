"""FileSource: TOML and JSON limits files, reloaded when they change, never half-applied."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ratekeeper import ConfigError, FileSource, Limiter, MemoryStorage, Policy, Rate
from ratekeeper.sources import Problem
from ratekeeper.testing import ManualClock

TOML = """\
[limits]
"reports.export" = "5/minute"                 # short form

[limits."sns.publish"]
rate = "300/second"
algorithm = "token-bucket"
burst = 600

[limits."aws.sts.*"]
rate = "5/second;1000/hour"
"""
JSON = {
    "limits": {
        "reports.export": "5/minute",
        "sns.publish": {"rate": "300/second", "algorithm": "token-bucket", "burst": 600},
        "aws.sts.*": {"rate": "5/second;1000/hour"},
    }
}
EXPECTED = {
    "reports.export": Policy.parse("5/minute"),
    "sns.publish": Policy.parse({"rate": "300/second", "algorithm": "token-bucket", "burst": 600}),
    "aws.sts.*": Policy.parse("5/second;1000/hour"),
}
# Far enough in the past that the file is not "racily clean": only its signature counts.
OLD_NS = (int(time.time()) - 3600) * 1_000_000_000


def write(path: Path, text: str, mtime_ns: int | None = None) -> None:
    path.write_text(text, encoding="utf-8")
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def limits(*pairs: tuple[str, str]) -> str:
    return "[limits]\n" + "".join(f'"{name}" = "{rate}"\n' for name, rate in pairs)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(100.0)


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every Path.stat call made from now on (the real stat still runs)."""
    calls: list[Path] = []
    real: Callable[..., os.stat_result] = pathlib.Path.stat

    def counting(self: Path, **kwargs: bool) -> os.stat_result:
        calls.append(self)
        return real(self, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", counting)
    return calls


def rate_of(source: FileSource, name: str) -> Rate | None:
    policy = source.snapshot().resolve(name)
    return None if policy is None else policy.rates[0]


def test_toml_file_in_the_documented_shape(tmp_path: Path) -> None:
    """The [limits] table of DESIGN.md: short form, table form and a glob."""
    path = tmp_path / "ratelimits.toml"
    write(path, TOML)
    source = FileSource(path)
    assert dict(source.snapshot()) == EXPECTED
    assert source.snapshot().match("aws.sts.AssumeRole") == "aws.sts.*"
    assert source.path == path
    assert source.interval == 1.0
    assert source.last_error is None


def test_json_file_with_the_same_shape(tmp_path: Path) -> None:
    """A .json file with the same shape gives the same policies."""
    path = tmp_path / "ratelimits.json"
    write(path, json.dumps(JSON))
    assert dict(FileSource(path).snapshot()) == EXPECTED


def test_other_suffix_is_a_config_error(tmp_path: Path) -> None:
    """Only .toml and .json are read; anything else says so at once."""
    with pytest.raises(ConfigError, match=r"limits\.yaml: a limits file must end in \.toml"):
        FileSource(tmp_path / "limits.yaml")


def test_missing_file_at_start_is_a_config_error(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming it, unless optional=True."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=r"absent\.toml: no such limits file"):
        FileSource(path)


def test_optional_file_appears_later(tmp_path: Path, clock: ManualClock) -> None:
    """optional=True starts empty and quiet, and loads the file once it appears."""
    path = tmp_path / "later.toml"
    source = FileSource(path, optional=True, clock=clock)
    assert len(source.snapshot()) == 0
    clock.advance(1.0)
    _ = source.version
    assert source.last_error is None
    write(path, limits(("a", "3/second")))
    clock.advance(1.0)
    _ = source.version
    assert rate_of(source, "a") == Rate(3, 1.0)


def test_bad_file_at_start_lists_file_and_line(tmp_path: Path) -> None:
    """A bad file at start-up is a ConfigError with file:line and the limit name."""
    path = tmp_path / "bad.toml"
    write(path, '[limits]\n"ok" = "1/second"\n"sns.publish" = "5/fortnight"\n')
    with pytest.raises(ConfigError, match=rf"{path}:3: limit 'sns\.publish': .*fortnight"):
        FileSource(path)


def test_looks_at_most_every_interval(
    tmp_path: Path, clock: ManualClock, stats: list[Path]
) -> None:
    """Calls within the interval never stat the file; the first one past it stats it once."""
    path = tmp_path / "l.toml"
    write(path, limits(("jobs", "1000/second")), OLD_NS)
    source = FileSource(path, interval=2.0, clock=clock)
    limiter = Limiter(source, MemoryStorage(clock=clock))

    @limiter.limit("jobs")
    def job() -> None:
        pass

    stats.clear()
    write(path, limits(("jobs", "2000/second")), OLD_NS + 1)
    for _ in range(1000):
        job()
    assert stats == []
    assert limiter.peek("jobs").rate == Rate(1000, 1.0)
    clock.advance(1.999)
    job()
    assert stats == []
    clock.advance(0.001)
    for _ in range(1000):
        job()
    assert stats == [path]
    assert limiter.peek("jobs").rate == Rate(2000, 1.0)


def test_an_unchanged_file_is_stat_ed_not_read(tmp_path: Path, clock: ManualClock) -> None:
    """Looks that find the same signature keep the same version object."""
    path = tmp_path / "l.toml"
    write(path, limits(("a", "1/second")), OLD_NS)
    source = FileSource(path, clock=clock)
    version = source.version
    for _ in range(5):
        clock.advance(1.0)
        assert source.version is version


def test_in_place_edit_same_size_same_second(tmp_path: Path, clock: ManualClock) -> None:
    """An edit of the same size within the same second is seen (mtime_ns moved)."""
    path = tmp_path / "l.toml"
    write(path, limits(("a", "1/second")), OLD_NS)
    source = FileSource(path, clock=clock)
    inode = path.stat().st_ino
    write(path, limits(("a", "2/second")), OLD_NS + 1_000)
    assert path.stat().st_ino == inode
    clock.advance(1.0)
    _ = source.version
    assert rate_of(source, "a") == Rate(2, 1.0)


def test_edit_with_an_unchanged_signature_on_a_recent_file(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A recent file is compared by content too, so a coarse mtime cannot hide an edit."""
    path = tmp_path / "l.toml"
    write(path, limits(("a", "1/second")))
    mtime_ns = path.stat().st_mtime_ns
    source = FileSource(path, clock=clock)
    write(path, limits(("a", "2/second")), mtime_ns)
    clock.advance(1.0)
    _ = source.version
    assert rate_of(source, "a") == Rate(2, 1.0)


def test_atomic_replace_by_rename(tmp_path: Path, clock: ManualClock) -> None:
    """A file replaced by rename is seen, even with the same mtime and size (new inode)."""
    path = tmp_path / "l.toml"
    write(path, limits(("a", "1/second")), OLD_NS)
    source = FileSource(path, clock=clock)
    staged = tmp_path / "l.toml.tmp"
    write(staged, limits(("a", "2/second")), OLD_NS)
    os.replace(staged, path)
    clock.advance(1.0)
    _ = source.version
    assert rate_of(source, "a") == Rate(2, 1.0)


def test_change_reaches_a_decorated_function(tmp_path: Path, clock: ManualClock) -> None:
    """Raising a limit in the file lets a refused function through after the interval."""
    path = tmp_path / "l.toml"
    write(path, limits(("reports.export", "1/minute")), OLD_NS)
    limiter = Limiter(FileSource(path, clock=clock), MemoryStorage(clock=clock))

    @limiter.limit("reports.export")
    def export() -> str:
        return "done"

    assert export() == "done"
    assert not limiter.hit("reports.export").allowed
    write(path, limits(("reports.export", "2/minute")), OLD_NS + 1)
    clock.advance(1.0)
    assert export() == "done"
    assert not limiter.hit("reports.export").allowed


BAD = [
    ("syntax", '[limits]\n"a" = "1/second"\n"b" = \n', 3, "TOML syntax error"),
    (
        "algorithm",
        '[limits]\n"a" = "1/second"\n\n[limits.b]\nrate = "2/second"\nalgorithm = "leaky"\n',
        6,
        "unknown algorithm 'leaky'",
    ),
    ("rate", '[limits]\n"a" = "1/second"\n"b" = "5/fortnight"\n', 3, "fortnight"),
    ("type", '[limits]\n"a" = "1/second"\n"b" = 5\n', 3, "a limit must be a rate string"),
    ("burst", '[limits]\n"a" = "1/second"\n"b" = {rate = "2/second", burst = 2}\n', 3, "burst"),
]


@pytest.mark.parametrize(("kind", "text", "line", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_edit_keeps_the_last_good_limits(
    tmp_path: Path,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    text: str,
    line: int,
    message: str,
) -> None:
    """A bad file keeps every last good limit (b is not half-applied), and says where."""
    path = tmp_path / "l.toml"
    write(path, limits(("a", "9/second"), ("b", "8/second")), OLD_NS)
    source = FileSource(path, clock=clock)
    version = source.version
    write(path, text, OLD_NS + 1)
    clock.advance(1.0)
    with caplog.at_level(logging.WARNING, logger="ratekeeper.sources"):
        assert source.version is version
    assert rate_of(source, "a") == Rate(9, 1.0)
    assert rate_of(source, "b") == Rate(8, 1.0)
    assert isinstance(source.last_error, ConfigError)
    assert f"{path}:{line}:" in str(source.last_error)
    assert message in str(source.last_error)
    [problem] = source.problems
    assert (problem.origin, problem.line) == (str(path), line)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"{path}:{line}:" in warnings[0].getMessage()
    assert "keeping the last good limits" in warnings[0].getMessage()


def test_one_warning_per_distinct_error(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A problem is logged once while it lasts; a new one is logged; fixed, all clear."""
    path = tmp_path / "l.toml"
    write(path, limits(("a", "1/second")), OLD_NS)
    source = FileSource(path, clock=clock)
    with caplog.at_level(logging.INFO, logger="ratekeeper.sources"):
        write(path, limits(("a", "1/fortnight")), OLD_NS + 1)
        for _ in range(5):
            clock.advance(1.0)
            _ = source.version
        write(path, limits(("a", "1/fortnight"), ("b", "x")), OLD_NS + 2)
        for _ in range(5):
            clock.advance(1.0)
            _ = source.version
        problems = source.problems
        assert len(problems) == 2
        write(path, limits(("a", "4/second")), OLD_NS + 3)
        clock.advance(1.0)
        _ = source.version
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "fortnight" in warnings[0]
    assert "limit 'b'" in warnings[1]
    assert source.last_error is None
    assert not source.problems
    assert rate_of(source, "a") == Rate(4, 1.0)
    assert any("resolved" in r.getMessage() for r in caplog.records)


def test_a_deleted_file_keeps_the_limits_until_it_returns(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Removing the file keeps the last good limits and reports it; it is read back."""
    path = tmp_path / "l.toml"
    write(path, limits(("a", "1/second")), OLD_NS)
    source = FileSource(path, clock=clock)
    path.unlink()
    clock.advance(1.0)
    with caplog.at_level(logging.WARNING, logger="ratekeeper.sources"):
        _ = source.version
    assert rate_of(source, "a") == Rate(1, 1.0)
    assert source.problems == (Problem(str(path), None, None, "the limits file is missing"),)
    assert len(caplog.records) == 1
    write(path, limits(("a", "1/second")), OLD_NS)
    clock.advance(1.0)
    _ = source.version
    assert source.last_error is None


def test_refresh_looks_at_once(tmp_path: Path, clock: ManualClock) -> None:
    """refresh() ignores the interval and says whether the policies changed."""
    path = tmp_path / "l.json"
    write(path, json.dumps({"limits": {"a": "1/second"}}), OLD_NS)
    source = FileSource(path, interval=3600, clock=clock)
    assert source.refresh() is False
    write(path, json.dumps({"limits": {"a": "2/second"}}), OLD_NS + 1)
    assert source.refresh() is True
    assert rate_of(source, "a") == Rate(2, 1.0)


@pytest.mark.parametrize("interval", [-1, "1", float("nan"), True])
def test_bad_interval_is_a_config_error(tmp_path: Path, interval: object) -> None:
    """interval must be a number of seconds >= 0."""
    path = tmp_path / "l.toml"
    write(path, limits(("a", "1/second")))
    with pytest.raises(ConfigError, match="interval must be a number of seconds"):
        FileSource(path, interval=interval)  # type: ignore[arg-type]


def test_json_duplicate_key_is_reported_with_its_line(tmp_path: Path) -> None:
    """JSON allows a repeated key silently; a limits file reports it, at the second one."""
    path = tmp_path / "l.json"
    write(path, '{"limits": {\n  "a": "1/second",\n  "a": "2/second"\n}}\n')
    with pytest.raises(ConfigError, match=rf"{path}:3: key 'a' appears twice"):
        FileSource(path)
