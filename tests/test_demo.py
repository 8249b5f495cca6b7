"""The demo behind ``ratekeeper demo`` and the README's first command."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ratekeeper._demo import POLL_INTERVAL, limits_toml, run_demo
from ratekeeper._demo_fleet import bound_per_second
from ratekeeper._rates import Policy
from ratekeeper.sources import load_file
from ratekeeper.testing import ManualClock


def run(**options: object) -> str:
    clock = ManualClock(50.0)
    out = io.StringIO()
    settings: dict[str, object] = {
        "seconds": 6.0,
        "before": "5/second",
        "after": "20/second",
        "calls_per_second": 50,
    }
    settings.update(options)
    code = run_demo(out=out, clock=clock, sleep=clock.sleep, **settings)  # type: ignore[arg-type]
    assert code == 0
    return out.getvalue()


def rows(text: str) -> list[tuple[int, str, int, int]]:
    found = re.findall(r"^\s+(\d+)\s+(\S+(?: -> \S+)?)\s+(\d+)\s+(\d+)$", text, re.MULTILINE)
    return [(int(s), limit, int(a), int(r)) for s, limit, a, r in found]


def test_demo_admits_the_limit_per_second_and_follows_the_rewritten_file() -> None:
    """Each second admits the limit in force, and the file's new rate is obeyed at once."""
    table = rows(run())
    assert [(s, limit, a) for s, limit, a, _ in table] == [
        (1, "5/second", 5),
        (2, "5/second", 5),
        (3, "5/second", 5),
        (4, "5/second -> 20/second", 20),
        (5, "20/second", 20),
        (6, "20/second", 20),
    ]
    assert all(a + r == 50 for _, _, a, r in table)


def test_demo_says_when_the_file_changed_and_when_the_limiter_saw_it() -> None:
    """The rewrite is announced, then the limiter's pick-up within one polling interval."""
    text = run()
    assert "ratelimits.toml rewritten: rate = '20/second'" in text
    lag = re.search(r"now applies '20/second' ([\d.]+) s after the rewrite", text)
    assert lag is not None
    assert 0 <= float(lag.group(1)) <= POLL_INTERVAL
    assert text.index("rewritten") < text.index("now applies")


def test_demo_summary_counts_every_call_and_the_rate_under_each_limit() -> None:
    """The summary adds up admitted and refused calls and reports the rate per limit."""
    text = run(seconds=4.0)
    assert "admitted 50, refused 150 of 200 calls" in text
    assert "5/s under '5/second', 20/s under '20/second'" in text


def test_demo_writes_a_real_limits_file_and_removes_it(tmp_path: Path) -> None:
    """The limit lives in a TOML file in a temporary folder, which is gone afterwards."""
    text = run(seconds=1.0, directory=tmp_path)
    shown = re.search(r"^(\S+ratelimits\.toml) holds", text, re.MULTILINE)
    assert shown is not None
    assert Path(shown.group(1)).parent.parent == tmp_path
    assert list(tmp_path.iterdir()) == []


def test_demo_file_is_a_valid_limits_file(tmp_path: Path) -> None:
    """What the demo writes is the documented format, and loads as the demo's policy."""
    path = tmp_path / "limits.toml"
    path.write_text(limits_toml("7/second", "token-bucket"), encoding="utf-8")
    expected = Policy.parse({"rate": "7/second", "algorithm": "token-bucket"})
    assert load_file(path) == {"demo.send": expected}


def test_demo_refuses_a_bad_rate_with_a_clear_message() -> None:
    """A bad --before rate is reported, with exit code 2."""
    clock = ManualClock()
    out = io.StringIO()
    code = run_demo(
        seconds=1,
        before="5/fortnight",
        after="1/second",
        calls_per_second=5,
        out=out,
        clock=clock,
        sleep=clock.sleep,
    )
    assert code == 2
    assert "--before '5/fortnight'" in out.getvalue()


def test_bound_per_second_is_the_tightest_rate_over_one_second() -> None:
    """The fleet's check uses the most a one-second interval may hold."""
    assert bound_per_second(Policy.parse("5/second;100/minute")) == 5
    assert bound_per_second(Policy.parse("30/minute")) == 30
    assert bound_per_second(Policy.parse("10 per 2 seconds")) == 10


def test_demo_command_runs_as_a_subprocess() -> None:
    """`python -m ratekeeper demo` runs, prints the table and ends by itself."""
    result = subprocess.run(
        [sys.executable, "-m", "ratekeeper", "demo", "--seconds", "0.6", "--calls", "20"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ratelimits.toml rewritten: rate = '20/second'" in result.stdout
    assert re.search(r"admitted \d+, refused \d+ of \d+ calls", result.stdout)
    assert result.stderr == ""


def test_command_without_arguments_prints_usage_and_exits_2() -> None:
    """`ratekeeper` alone is a usage error."""
    result = subprocess.run(
        [sys.executable, "-m", "ratekeeper"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "usage" in result.stderr.lower()


def fleet_rows(text: str, workers: int) -> list[tuple[str, list[int], int]]:
    """(limit label, admitted per worker, admitted together) for each row of the table."""
    found = []
    for line in text.splitlines():
        parts = line.split()
        tail = parts[-(workers + 2) :]
        if len(parts) < workers + 4 or not all(part.isdigit() for part in [parts[0], *tail]):
            continue
        numbers = [int(part) for part in tail]
        label = " ".join(parts[1 : -(workers + 2)])
        found.append((label, numbers[:workers], numbers[workers]))
    return found


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("source", ["file", "redis"])
def test_fleet_demo_holds_the_limit_together_across_processes(redis_url: str, source: str) -> None:
    """Workers sharing Redis together admit at most the limit each second, and follow it."""
    import redis

    options = ["--workers", "2", "--seconds", "3", "--calls", "40", "--source", source]
    result = subprocess.run(
        [sys.executable, "-m", "ratekeeper", "demo", "--redis", redis_url, *options],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    table = fleet_rows(result.stdout, 2)
    assert len(table) == 3, result.stdout
    bounds = {"5/second": 5, "20/second": 20, "5/second -> 20/second": 20}
    for label, each, together in table:
        assert sum(each) == together
        assert together <= bounds[label], result.stdout
    assert table[0] == ("5/second", table[0][1], 5)
    assert table[-1][0] == "20/second"
    assert table[-1][2] > 5
    assert "In no second did they together admit more than the limit" in result.stdout
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() == 0  # the run's keys are deleted
    client.close()
