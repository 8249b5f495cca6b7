"""The ``ratekeeper`` command line, run as a user runs it: a subprocess, real files, real Redis."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ratekeeper import _cli_commands
from ratekeeper.cli import main

GOOD = """\
[limits]
"reports.export" = "5/minute"

[limits."sns.publish"]
rate = "300/second"
algorithm = "token-bucket"
burst = 600

[limits."aws.sts.*"]
rate = "5/second;1000/hour"
"""

BAD = """\
[limits]
"reports.export" = "5/fortnight"

[limits."sns.publish"]
rate = "300/second"
algorithm = "token"
"""


def rk(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ratekeeper", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(r"^ratekeeper( demo)?: error: ", result.stderr, re.MULTILINE)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "good.toml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "bad.toml").write_text(BAD, encoding="utf-8")
    (tmp_path / "good.json").write_text('{"limits": {"a": "1/second"}}', encoding="utf-8")
    return tmp_path


def test_help_lists_every_command_and_exits_0() -> None:
    """`ratekeeper --help` names every command and the exit statuses."""
    result = rk("--help")
    assert result.returncode == 0
    for command in ("demo", "check", "show", "set", "unset", "bench"):
        assert command in result.stdout
    assert "exit status" in result.stdout


@pytest.mark.parametrize("command", ["demo", "check", "show", "set", "unset", "bench"])
def test_each_command_has_help(command: str) -> None:
    """`ratekeeper COMMAND --help` describes the command's options."""
    result = rk(command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: ratekeeper {command}")


def test_unknown_command_is_a_usage_error() -> None:
    """An unknown command exits 2 and names the valid choices."""
    result = rk("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_check_accepts_a_good_file(files: Path) -> None:
    """A clean TOML or JSON file exits 0 and says how many limits it holds."""
    result = rk("check", "good.toml", "good.json", cwd=files)
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == ["good.toml: ok, 3 limits", "good.json: ok, 1 limit"]


def test_check_prints_each_problem_with_file_line_and_limit(files: Path) -> None:
    """Every problem is one `file:line: limit 'name': what` line; exit 1."""
    result = rk("check", "bad.toml", "good.toml", cwd=files)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("bad.toml:2: limit 'reports.export': unknown period unit")
    assert lines[1].startswith("bad.toml:6: limit 'sns.publish': unknown algorithm 'token'")
    assert lines[2:] == ["good.toml: ok, 3 limits", "2 problems found"]


def test_check_reports_a_missing_file_and_a_wrong_suffix(files: Path) -> None:
    """A file that cannot be read, or is not .toml/.json, is a problem, not a traceback."""
    (files / "limits.yaml").write_text("limits: {}", encoding="utf-8")
    result = rk("check", "missing.toml", "limits.yaml", cwd=files)
    assert result.returncode == 1
    assert "missing.toml: cannot read the file" in result.stdout
    assert "limits.yaml: a limits file must end in .toml or .json" in result.stdout
    assert "Traceback" not in result.stderr


def test_check_without_a_file_is_a_usage_error() -> None:
    """`ratekeeper check` alone exits 2 with usage."""
    result = rk("check")
    assert result.returncode == 2
    assert "the following arguments are required: FILE" in result.stderr


def test_show_lists_the_policies_of_a_file(files: Path) -> None:
    """`show --file` prints each entry and its policy, sorted."""
    result = rk("show", "--file", "good.toml", cwd=files)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "3 limits in good.toml",
        "  aws.sts.*       5/second;1000/hour (sliding-window)",
        "  reports.export  5/minute (sliding-window)",
        "  sns.publish     300/second (token-bucket, burst 600)",
    ]


def test_show_resolves_a_name_through_its_pattern(files: Path) -> None:
    """`show NAME` prints the policy NAME resolves to, and the pattern it came from."""
    result = rk("show", "--file", "good.toml", "aws.sts.AssumeRole", cwd=files)
    assert result.returncode == 0, result.stderr
    expected = "aws.sts.AssumeRole: 5/second;1000/hour (sliding-window)  (pattern 'aws.sts.*')"
    assert result.stdout.strip() == expected


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["show", "--file", "good.toml", "nothing"], 1, "no limit in good.toml matches"),
        (["show"], 2, "show needs --file FILE or --redis URL"),
        (["show", "--file", "good.toml", "--key", "k"], 2, "--key needs a limit NAME"),
        (["show", "--file", "good.toml", "sns.publish", "--key", "k"], 2, "--key needs --redis"),
        (["show", "--file", "bad.toml"], 1, "cannot load bad.toml"),
        (["show", "--file", "missing.toml"], 1, "no such limits file"),
    ],
)
def test_show_errors_are_one_clear_line(
    files: Path, args: list[str], code: int, message: str
) -> None:
    """Bad `show` invocations exit 1 or 2 with `ratekeeper: error: ...` on stderr."""
    result = rk(*args, cwd=files)
    assert_clean_error(result, code)
    assert message in result.stderr
    assert result.stdout == ""


def test_demo_rejects_bad_options_without_a_traceback() -> None:
    """A bad rate or duration for the demo is a usage error, exit 2."""
    bad_rate = rk("demo", "--after", "20/fortnight")
    assert_clean_error(bad_rate, 2)
    assert "--after '20/fortnight'" in bad_rate.stderr
    too_long = rk("demo", "--seconds", "60")
    assert_clean_error(too_long, 2)
    assert "--seconds must be in (0, 20]" in too_long.stderr


def test_demo_with_an_unreachable_redis_says_so() -> None:
    """`demo --redis` with nothing listening fails with one line, exit 1."""
    result = rk("demo", "--redis", "redis://127.0.0.1:1/0", "--seconds", "1")
    assert_clean_error(result, 1)
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in result.stderr


def test_set_rejects_a_bad_rate_before_connecting() -> None:
    """A bad rate is reported and nothing is written, even with no server to write to."""
    result = rk("set", "sns.publish", "10/fortnight", "--redis", "redis://127.0.0.1:1/0")
    assert_clean_error(result, 2)
    assert "limit 'sns.publish': unknown period unit 'fortnight'" in result.stderr
    assert "nothing was written" in result.stderr


def test_set_needs_a_redis_url() -> None:
    """`set` without --redis is a usage error."""
    result = rk("set", "a", "1/second")
    assert result.returncode == 2
    assert "--redis" in result.stderr


def test_set_with_an_unreachable_redis_fails_cleanly() -> None:
    """Nothing listening: exit 1, one error line, no warning noise, no traceback."""
    result = rk("set", "a", "1/second", "--redis", "redis://127.0.0.1:1/0")
    assert_clean_error(result, 1)
    assert result.stderr.count("\n") == 1
    assert "cannot read limits from Redis at redis://127.0.0.1:1/0" in result.stderr


def test_set_with_a_malformed_url_is_a_usage_error() -> None:
    """A URL redis-py cannot parse exits 2 and quotes the URL."""
    result = rk("unset", "a", "--redis", "http://localhost")
    assert_clean_error(result, 2)
    assert "bad Redis URL 'http://localhost'" in result.stderr


@pytest.mark.redis
def test_set_and_unset_change_the_fleet_hash(redis_url: str) -> None:
    """`set` writes the spec (validated) where RedisSource reads it; `unset` removes it."""
    from ratekeeper.sources import RedisSource

    result = rk("set", "sns.publish", "10/second", "--redis", redis_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "sns.publish = 10/second (sliding-window) in Redis hash 'ratekeeper:limits' (new)"
    )
    options = ["--algorithm", "token-bucket", "--burst", "40", "--redis", redis_url]
    result = rk("set", "sns.publish", "20/second", *options)
    assert result.returncode == 0, result.stderr
    assert "(was 10/second (sliding-window))" in result.stdout
    with RedisSource.from_url(redis_url, subscribe=False) as source:
        assert str(source.snapshot()["sns.publish"]) == "20/second (token-bucket, burst 40)"
    bad = rk("set", "sns.publish", "5/second", "--burst", "4", "--redis", redis_url)
    assert_clean_error(bad, 2)
    assert "burst applies to the token-bucket algorithm only" in bad.stderr
    result = rk("unset", "sns.publish", "--redis", redis_url)
    assert result.returncode == 0, result.stderr
    assert "removed" in result.stdout
    with RedisSource.from_url(redis_url, subscribe=False) as source:
        assert "sns.publish" not in source.snapshot()
    again = rk("unset", "sns.publish", "--redis", redis_url)
    assert again.returncode == 0
    assert "was not set" in again.stdout


@pytest.mark.redis
def test_set_refuses_the_reserved_version_field(redis_url: str) -> None:
    """The hash's version counter cannot be overwritten as a limit."""
    result = rk("set", "__version__", "1/second", "--redis", redis_url)
    assert_clean_error(result, 2)
    assert "reserved" in result.stderr


@pytest.mark.redis
def test_show_prints_live_usage_of_every_stored_key(redis_url: str) -> None:
    """`show --redis` lists the policies of the hash and each key's remaining units."""
    from ratekeeper import Limiter
    from ratekeeper.sources import RedisSource
    from ratekeeper.storage.redis import RedisStorage

    with (
        RedisSource.from_url(redis_url, subscribe=False) as source,
        RedisStorage.from_url(redis_url) as storage,
    ):
        source.set("reports.export", "5/minute")
        limiter = Limiter(source, storage)
        for _ in range(3):
            limiter.hit("reports.export", key="tenant-42")
        limiter.hit("reports.export", key="tenant 7/ü")
    result = rk("show", "--redis", redis_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        f"1 limit in Redis hash 'ratekeeper:limits' at {redis_url}",
        "  reports.export  5/minute (sliding-window)",
    ]
    usage = {line.split()[1]: line.split() for line in lines if line.startswith("  reports")}
    assert usage["'tenant-42'"][2] == "2"
    assert usage["'tenant"][3] == "4"  # the key 'tenant 7/ü' is decoded from its escaped form


@pytest.mark.redis
def test_show_key_peeks_one_key_without_consuming(redis_url: str) -> None:
    """`show NAME --key K` reports the key's remaining units, and consumes nothing."""
    from ratekeeper import Limiter
    from ratekeeper.sources import RedisSource
    from ratekeeper.storage.redis import RedisStorage

    with (
        RedisSource.from_url(redis_url, subscribe=False) as source,
        RedisStorage.from_url(redis_url) as storage,
    ):
        source.set("sns.publish", {"rate": "10/minute", "algorithm": "sliding-log"})
        Limiter(source, storage).hit("sns.publish", key="t1", cost=4)
    for _ in range(2):
        result = rk("show", "sns.publish", "--key", "t1", "--redis", redis_url)
        assert result.returncode == 0, result.stderr
        row = [line for line in result.stdout.splitlines() if "'t1'" in line]
        assert row[0].split()[2] == "6"


@pytest.mark.redis
def test_show_with_a_file_and_redis_reads_policies_from_the_file(
    files: Path, redis_url: str
) -> None:
    """`--file` names the source, `--redis` the storage whose usage is shown."""
    result = rk("show", "--file", "good.toml", "--redis", redis_url, cwd=files)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("3 limits in good.toml")
    assert "no counts stored" in result.stdout


def test_bench_without_the_repository_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Installed without the repository, `bench` explains where the benchmark lives."""
    monkeypatch.setattr(_cli_commands, "bench_script", lambda: None)
    assert main(["bench", "--quick"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ratekeeper: error: the benchmarks are not installed with the package")
    assert "benchmarks/bench_hotpath.py" in err


@pytest.mark.slow
def test_bench_quick_prints_the_table() -> None:
    """`ratekeeper bench --quick` runs the hot-path benchmark and prints its table."""
    result = rk("bench", "--quick")
    assert result.returncode == 0, result.stderr
    assert "ratekeeper @limit sliding-window" in result.stdout
    assert "| ratelimit @limits" in result.stdout


@pytest.mark.redis
def test_show_lists_only_the_named_limit_and_the_chosen_prefix(redis_url: str) -> None:
    """NAME narrows the usage to one limit; --prefix picks whose keys are read."""
    from ratekeeper import Limiter
    from ratekeeper.sources import RedisSource
    from ratekeeper.storage.redis import RedisStorage

    with (
        RedisSource.from_url(redis_url, subscribe=False) as source,
        RedisStorage.from_url(redis_url) as storage,
        RedisStorage.from_url(redis_url, prefix="billing") as other,
    ):
        source.set("a.one", "5/minute")
        source.set("a.two", "5/minute")
        Limiter(source, storage).hit("a.one", key="k1")
        Limiter(source, storage).hit("a.two", key="k2")
        Limiter(source, other).hit("a.two", key="k3", cost=3)
    named = rk("show", "a.two", "--redis", redis_url)
    assert named.returncode == 0, named.stderr
    assert "'k2'" in named.stdout
    assert "'k1'" not in named.stdout
    assert "'k3'" not in named.stdout
    billing = rk("show", "--redis", redis_url, "--prefix", "billing")
    assert billing.returncode == 0, billing.stderr
    rows = [line.split() for line in billing.stdout.splitlines() if "'k3'" in line]
    assert rows[0][:3] == ["a.two", "'k3'", "2"]
    assert "'k1'" not in billing.stdout
