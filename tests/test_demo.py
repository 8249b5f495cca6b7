"""The demo behind ``ratekeeper demo`` and the README's first command."""

from __future__ import annotations

import io
import re
import subprocess
import sys

from ratekeeper._demo import run_demo
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
    found = re.findall(r"^\s+(\d+)\s+(\S+)\s+(\d+)\s+(\d+)$", text, re.MULTILINE)
    return [(int(s), limit, int(a), int(r)) for s, limit, a, r in found]


def test_demo_admits_the_limit_per_second_and_follows_the_live_change() -> None:
    """Each second admits the limit in force, and the change halfway is obeyed at once."""
    table = rows(run())
    assert [(s, limit, a) for s, limit, a, _ in table] == [
        (1, "5/second", 5),
        (2, "5/second", 5),
        (3, "5/second", 5),
        (4, "20/second", 20),
        (5, "20/second", 20),
        (6, "20/second", 20),
    ]
    assert all(a + r == 50 for _, _, a, r in table)


def test_demo_summary_counts_every_call() -> None:
    """The summary adds up admitted and refused calls."""
    text = run(seconds=4.0)
    assert "admitted 50, refused 150 of 200 calls" in text


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
    assert "fortnight" in out.getvalue()


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
    assert "limit changed to '20/second'" in result.stdout
    assert re.search(r"admitted \d+, refused \d+ of \d+ calls", result.stdout)


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
