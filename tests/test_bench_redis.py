"""The Redis benchmark script runs end to end in its quick mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_redis.py"


@pytest.mark.redis
@pytest.mark.slow
def test_quick_run_prints_the_tables(tmp_path: Path) -> None:
    """``bench_redis.py --quick`` starts its own server and prints both Markdown tables."""
    report = tmp_path / "report.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--repeats", "1", "--markdown", str(report)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "| Case" in out
    assert "| redis-py EVALSHA 'return 1'" in out
    for algorithm in ("fixed-window", "sliding-window", "sliding-log", "token-bucket"):
        assert f"ratekeeper Limiter.hit {algorithm} (RedisStorage)" in out
        assert f"ratekeeper AsyncLimiter.hit {algorithm} (AsyncRedisStorage)" in out
    for peer in ("limits ", "pyrate-limiter ", "throttled-py "):
        assert f"| {peer}" in out
    assert "sync × EVALSHA (target ≤ 1.3x)" in out
    assert report.read_text(encoding="utf-8").strip() == out.strip()
