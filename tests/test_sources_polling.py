"""The two ways a polling source looks: a ticker thread (default clock) or the caller
(injected clock). Ticker tests wait on real time, a few milliseconds at a time."""

from __future__ import annotations

import gc
import os
import pathlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ratekeeper import (
    CallableSource,
    EnvSource,
    FileSource,
    Limiter,
    MemoryStorage,
    Rate,
    RedisSource,
)
from ratekeeper.sources import _polling
from ratekeeper.testing import ManualClock

OLD_NS = (int(time.time()) - 3600) * 1_000_000_000


def write(path: Path, rate: str, mtime_ns: int) -> None:
    path.write_text(f'[limits]\n"jobs" = "{rate}"\n', encoding="utf-8")
    os.utime(path, ns=(mtime_ns, mtime_ns))


def eventually(condition: Callable[[], bool], within: float = 5.0) -> bool:
    """Whether ``condition`` holds within ``within`` seconds, checked every 2 ms."""
    pause = threading.Event()
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.002)
    return True


def tickers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ratekeeper-") and t.daemon]


def test_default_clock_makes_version_a_plain_attribute(tmp_path: Path) -> None:
    """With the default clock, version is an instance attribute: no call reads a clock."""
    path = tmp_path / "l.toml"
    write(path, "1/second", OLD_NS)
    source = FileSource(path)
    assert type(source) is FileSource
    assert vars(source)["version"] is source.version
    clocked = FileSource(path, clock=ManualClock())
    assert isinstance(clocked, FileSource)
    assert type(clocked).__name__ == "FileSource"
    assert "version" not in vars(clocked)
    assert "version" not in vars(FileSource(path, interval=0))


def test_the_ticker_sees_an_edit_and_callers_never_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ticked FileSource reloads in its own thread; the calling thread never stats."""
    path = tmp_path / "l.toml"
    write(path, "1/minute", OLD_NS)
    stat_threads: list[str] = []
    real: Callable[..., os.stat_result] = pathlib.Path.stat

    def counting(self: Path, **kwargs: bool) -> os.stat_result:
        stat_threads.append(threading.current_thread().name)
        return real(self, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", counting)
    source = FileSource(path, interval=0.005)
    limiter = Limiter(source, MemoryStorage(clock=ManualClock()))

    @limiter.limit("jobs")
    def job() -> None:
        pass

    job()
    write(path, "2/minute", OLD_NS + 1)
    assert eventually(lambda: limiter.peek("jobs").rate == Rate(2, 60.0))
    job()
    caller = threading.current_thread().name
    assert caller not in stat_threads[1:]  # [0] is the constructor's own stat
    assert stat_threads[1:]


@pytest.mark.redis
def test_a_notification_wakes_the_ticker(redis_url: str) -> None:
    """A change published by another process reaches a ticked source without a call."""
    with (
        RedisSource.from_url(redis_url, subscribe=False, clock=ManualClock()) as writer,
        RedisSource.from_url(redis_url, interval=3600) as reader,
    ):
        assert reader._subscribed.wait(5.0)
        version = reader.version
        writer.set("jobs", "3/minute")
        assert eventually(lambda: reader.version is not version)
        assert reader.snapshot().resolve("jobs") is not None


@pytest.mark.redis
def test_close_stops_the_ticker(redis_url: str) -> None:
    """RedisSource.close() ends its ticker thread and keeps the limits last read."""
    source = RedisSource.from_url(redis_url, interval=0.005, key="rk:close", subscribe=False)
    source.set("jobs", "4/minute")
    name = f"ratekeeper-{source!r}"
    assert any(t.name == name for t in tickers())
    source.close()
    assert eventually(lambda: not any(t.name == name for t in tickers()))
    assert source.snapshot().resolve("jobs") is not None


def test_a_collected_source_ends_its_ticker() -> None:
    """The ticker holds no reference to its source: dropping the source ends the thread."""
    source = CallableSource(lambda name: "1/second", ttl=0.005)
    name = f"ratekeeper-{source!r}"
    assert any(t.name == name for t in tickers())
    del source
    gc.collect()
    assert eventually(lambda: not any(t.name == name for t in tickers()))


def test_after_a_fork_the_child_gets_tickers_of_its_own() -> None:
    """The at-fork hook gives every ticked source a new ticker thread (and lock)."""
    environ: dict[str, str] = {"RK_JOBS": "1/second"}
    source = EnvSource("RK_", environ=environ, interval=0.005)
    before = source._wake
    lock = source._looking
    _polling._restart_tickers()
    assert source._wake is not None
    assert source._wake is not before
    assert source._looking is not lock
    version = source.version
    environ["RK_JOBS"] = "2/second"
    assert eventually(lambda: source.version is not version)
    assert source.snapshot().resolve("jobs") is not None


def test_close_stops_a_file_source(tmp_path: Path) -> None:
    """FileSource.close() ends its ticker; the limits last read stay, refresh() still looks."""
    path = tmp_path / "l.toml"
    write(path, "1/minute", OLD_NS)
    source = FileSource(path, interval=0.005)
    name = f"ratekeeper-{source!r}"
    assert any(t.name == name for t in tickers())
    source.close()
    assert eventually(lambda: not any(t.name == name for t in tickers()))
    path.unlink()
    assert source.refresh() is False
    assert source.snapshot().resolve("jobs") is not None
    write(path, "2/minute", OLD_NS + 1)
    version = source.version
    assert source.refresh() is True
    assert source.version is not version
