"""The soak script: its over-admission checks catch what they must, and its short run, with
a Redis restart and limit changes under load, finds none."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"
SECOND = 1_000_000


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


soak = load_soak()


def at(t: int, amount: int = 3, burst: int = 3, bracket: int = 10) -> tuple[object, ...]:
    """An admission whose call ran from t to t + bracket µs."""
    return ("limit", "k", t, t + bracket, amount, SECOND, burst)


def test_fixed_window_check_counts_per_aligned_window() -> None:
    """Four in one window of three is one over; a call straddling the edge is not counted."""
    inside = [at(10 * SECOND + i * 1000) for i in range(4)]
    assert soak.fixed_window_excess(inside) == (1, 1)
    split = [at(10 * SECOND + i * 1000) for i in range(3)] + [at(11 * SECOND)]
    assert soak.fixed_window_excess(split) == (0, 0)
    straddling = [at(10 * SECOND + i * 1000) for i in range(3)] + [at(11 * SECOND - 5)]
    assert soak.fixed_window_excess(straddling) == (0, 0)
    raised = [at(10 * SECOND + i * 1000, amount=4 if i == 3 else 3) for i in range(4)]
    assert soak.fixed_window_excess(raised) == (0, 0)  # the amount went up to four


def test_sliding_log_check_finds_any_short_span() -> None:
    """Four within less than a period (across window edges) is over; a period apart is not."""
    close = [at(10 * SECOND + 600_000 + i * 100_000) for i in range(4)]
    assert soak.span_excess(close, bucket=False)[0] > 0
    spread = [at(10 * SECOND + i * 400_000) for i in range(4)]  # 1.2 s from first to last
    assert soak.span_excess(spread, bucket=False) == (0, 0)


def test_token_bucket_check_allows_burst_plus_refill() -> None:
    """A burst of three then one per third of a second is fine; five at once are two over
    (and the span starting at the second one is one over)."""
    paced = [at(0), at(1), at(2), at(SECOND // 3 + 10), at(2 * SECOND // 3 + 20)]
    assert soak.span_excess(paced, bucket=True) == (0, 0)
    rushed = [at(i) for i in range(5)]
    assert soak.span_excess(rushed, bucket=True) == (2, 2)


@pytest.mark.slow
@pytest.mark.redis
def test_short_soak_has_no_over_admission() -> None:
    """``soak.py --short`` restarts Redis and changes limits under load: exit 0, and the
    summary shows decisions, a restart and zero over-admissions."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--short"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "over-admissions: 0" in out
    assert "1 Redis restarts" in out
    decisions = re.search(r"\| decisions \| (\d+) \|", out)
    assert decisions is not None
    assert int(decisions.group(1)) > 1000
    for limit in ("soak.fixed", "soak.log", "soak.bucket"):
        row = re.search(rf"\| {re.escape(limit)} \| [a-z-]+ \| (\d+) \| 0 \| 0 \|", out)
        assert row is not None, out
        assert int(row.group(1)) > 0


@pytest.mark.slow
@pytest.mark.redis
def test_soak_reports_a_fleet_that_over_admits() -> None:
    """With ``--split-prefix`` each process counts alone, so together they admit twice the
    limit: the soak must find it and exit 1."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--seconds", "3", "--split-prefix"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    found = re.search(r"over-admissions: (\d+)", done.stdout)
    assert found is not None, done.stdout
    assert int(found.group(1)) > 0
