"""ChainSource: environment over file over code defaults, one change signal for all."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from ratekeeper import (
    ChainSource,
    ConfigError,
    DictSource,
    EnvSource,
    FileSource,
    Limiter,
    MemoryStorage,
    Policy,
    Rate,
    Snapshot,
)
from ratekeeper.testing import ManualClock

OLD_NS = (int(time.time()) - 3600) * 1_000_000_000


def write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_env_overrides_file_overrides_code_defaults(tmp_path: Path) -> None:
    """The first source that knows a name wins, even with a less specific pattern."""
    path = tmp_path / "limits.toml"
    write(
        path,
        '[limits]\n"reports.export" = "5/minute"\n"aws.sns.Publish" = "50/second"\n',
        OLD_NS,
    )
    env = EnvSource(environ={"RATEKEEPER_LIMIT_AWS__SNS_____S": "10/second"})
    defaults = DictSource({"*": "100/minute", "reports.export": "1/minute"})
    chain = ChainSource(env, FileSource(path), defaults)
    snapshot = chain.snapshot()
    assert snapshot.resolve("aws.sns.Publish") == env.snapshot()["aws.sns.*"]
    assert snapshot.match("aws.sns.Publish") == "aws.sns.*"
    assert snapshot.resolve("reports.export") is not None
    assert snapshot.resolve("reports.export") == FileSource(path).snapshot()["reports.export"]
    assert snapshot.match("search") == "*"
    assert snapshot.match("aws.sqs.Send") == "*"
    assert set(snapshot) == {"aws.sns.*", "reports.export", "aws.sns.Publish", "*"}
    assert chain.sources[0] is env


def test_version_moves_when_any_member_changes(tmp_path: Path) -> None:
    """The chain's version is the same object until a child's moves, then a new one."""
    clock = ManualClock()
    path = tmp_path / "limits.toml"
    write(path, '[limits]\n"jobs" = "2/minute"\n', OLD_NS)
    file = FileSource(path, clock=clock)
    code = DictSource({"jobs": "1/minute", "other": "1/second"})
    chain = ChainSource(file, code)
    first = chain.version
    snapshot = chain.snapshot()
    assert chain.version is first
    assert chain.snapshot() is snapshot
    code.set("other", "2/second")
    second = chain.version
    assert second is not first
    assert chain.snapshot().resolve("other") == code.snapshot()["other"]
    write(path, '[limits]\n"jobs" = "3/minute"\n', OLD_NS + 1)
    assert chain.version is second
    clock.advance(1.0)
    assert chain.version is not second


def test_a_limiter_follows_changes_in_every_member(tmp_path: Path) -> None:
    """Deleting an override uncovers the next source's entry at the next call."""
    clock = ManualClock()
    overrides = DictSource({"jobs": "1/minute"})
    path = tmp_path / "limits.json"
    write(path, '{"limits": {"jobs": "4/minute"}}', OLD_NS)
    limiter = Limiter(
        ChainSource(overrides, FileSource(path, clock=clock)), MemoryStorage(clock=clock)
    )
    assert limiter.hit("jobs").rate == Rate(1, 60.0)
    overrides.delete("jobs")
    assert limiter.hit("jobs").rate == Rate(4, 60.0)
    write(path, '{"limits": {}}', OLD_NS + 1)
    clock.advance(1.0)
    with pytest.raises(ConfigError, match=r"no limit named 'jobs' in ChainSource\(DictSource"):
        limiter.hit("jobs")


def test_a_chain_needs_sources() -> None:
    """An empty chain, or a member that is not a source, is a ConfigError."""
    with pytest.raises(ConfigError, match="at least one source"):
        ChainSource()
    with pytest.raises(ConfigError, match="takes sources"):
        ChainSource({"jobs": "1/minute"})  # type: ignore[arg-type]


class PlainSource:
    """A source written against the protocol alone: it cannot announce its changes."""

    def __init__(self) -> None:
        self.version: object = object()
        self._snapshot = Snapshot()

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def replace(self, limits: dict[str, str]) -> None:
        self._snapshot = Snapshot({name: Policy.parse(spec) for name, spec in limits.items()})
        self.version = object()


def test_a_chain_of_announcing_members_has_a_plain_version() -> None:
    """Members that announce changes make the chain's version a plain attribute too."""
    inner = DictSource({"a": "1/second"})
    nested = ChainSource(ChainSource(inner), DictSource({"b": "2/second"}))
    assert type(nested) is ChainSource
    assert vars(nested)["version"] is nested.version
    version = nested.version
    snapshot = nested.snapshot()
    assert nested.snapshot() is snapshot
    inner.set("a", "3/second")
    assert nested.version is not version
    assert nested.snapshot().resolve("a") == Policy.parse("3/second")


def test_a_member_that_cannot_announce_makes_the_chain_read_versions(tmp_path: Path) -> None:
    """With a plain or clocked member the chain reads members' versions, and a change
    announced by another member still works (and does not fail the writer)."""
    plain = PlainSource()
    code = DictSource({"a": "1/second"})
    chain = ChainSource(plain, code)
    assert "version" not in vars(chain)
    assert isinstance(chain, ChainSource)
    version = chain.version
    code.set("a", "2/second")
    assert chain.version is not version
    plain.replace({"a": "9/second"})
    assert chain.snapshot().resolve("a") == Policy.parse("9/second")
    path = tmp_path / "l.toml"
    write(path, '[limits]\n"a" = "1/second"\n', OLD_NS)
    clocked = ChainSource(FileSource(path, clock=ManualClock()), code)
    assert "version" not in vars(clocked)


def test_a_ticked_member_announces_through_the_chain(tmp_path: Path) -> None:
    """A FileSource on its own thread moves the chain's plain version when it reloads."""
    path = tmp_path / "l.toml"
    write(path, '[limits]\n"a" = "1/second"\n', OLD_NS)
    file = FileSource(path, interval=0.005)
    chain = ChainSource(file, DictSource({"*": "1/day"}))
    assert "version" in vars(chain)
    version = chain.version
    write(path, '[limits]\n"a" = "2/second"\n', OLD_NS + 1)
    pause = threading.Event()
    deadline = time.monotonic() + 5.0
    while chain.version is version and time.monotonic() < deadline:
        pause.wait(0.002)
    assert chain.snapshot().resolve("a") == Policy.parse("2/second")
    file.close()
