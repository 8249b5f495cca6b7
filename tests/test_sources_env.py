"""EnvSource: limits from environment variables, names spelled with underscores."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratekeeper import ConfigError, EnvSource, Limiter, MemoryStorage, Policy, Rate
from ratekeeper.sources._env import decode_name, encode_name
from ratekeeper.testing import ManualClock
from tests.strategies import limit_names


@pytest.mark.parametrize(
    ("spelled", "name"),
    [
        ("JOBS", "jobs"),
        ("MY_JOB", "my_job"),
        ("AWS__SNS__PUBLISH", "aws.sns.publish"),
        ("AWS__STS_____S", "aws.sts.*"),
        ("___S", "*"),
        ("REPORTS___DEXPORT", "reports-export"),
        ("A___QB", "a?b"),
        ("A____B", "a..b"),
        ("aws.sns.*", "aws.sns.*"),
    ],
)
def test_variable_spelling_of_names(spelled: str, name: str) -> None:
    """__ is a dot, ___D ___S ___Q are - * ?, one _ is itself, letters are folded."""
    assert decode_name(spelled) == name


@pytest.mark.parametrize(
    ("spelled", "message"),
    [
        ("A___XB", "must be followed by D"),
        ("A___", "the end of the name"),
        ("A/B", "cannot appear in a limit name"),
    ],
)
def test_bad_spelling_is_a_config_error(spelled: str, message: str) -> None:
    """An odd run of underscores without a code, or a stray character, says what is wrong."""
    with pytest.raises(ConfigError, match=message):
        decode_name(spelled)


@settings(max_examples=100, deadline=None)
@given(name=limit_names(), wildcard=st.sampled_from(["", ".*", "-x", "?"]))
def test_encode_then_decode_gives_the_name_back(name: str, wildcard: str) -> None:
    """Every spelling encode_name gives decodes to the (lower-cased) name."""
    full = name + wildcard
    try:
        spelled, error = encode_name(full), ""
    except ConfigError as exc:
        spelled, error = "", str(exc)
    if error:
        assert "ambiguous" in error
        assert "_" in full
    else:
        assert decode_name(spelled) == full.lower()


def test_ambiguous_name_cannot_be_spelled() -> None:
    """An underscore beside a dot has no spelling that reads back: a clear ConfigError."""
    with pytest.raises(ConfigError, match=r"'a_\.b' cannot be spelled in a variable"):
        encode_name("a_.b")


def test_reads_prefixed_variables_and_ignores_case() -> None:
    """Only variables with the prefix count; lookups of mixed-case names still match."""
    environ = {
        "RATEKEEPER_LIMIT_AWS__SNS__PUBLISH": "300/second",
        "RATEKEEPER_LIMIT_AWS__STS_____S": '{"rate": "5/second", "algorithm": "token-bucket"}',
        "OTHER_AWS__SNS__PUBLISH": "1/second",
    }
    source = EnvSource(environ=environ)
    snapshot = source.snapshot()
    assert set(snapshot) == {"aws.sns.publish", "aws.sts.*"}
    assert snapshot.resolve("aws.sns.Publish") == Policy.parse("300/second")
    assert snapshot.resolve("aws.sts.AssumeRole") == Policy.parse(
        {"rate": "5/second", "algorithm": "token-bucket"}
    )
    assert snapshot.match("AWS.STS.x") == "aws.sts.*"
    assert source.variable_for("aws.sns.Publish") == "RATEKEEPER_LIMIT_AWS__SNS__PUBLISH"


def test_a_bad_variable_at_start_names_it() -> None:
    """A bad value at start-up is a ConfigError naming the variable and the limit."""
    with pytest.raises(ConfigError, match=r"RATEKEEPER_LIMIT_JOBS: limit 'jobs': .*fortnight"):
        EnvSource(environ={"RATEKEEPER_LIMIT_JOBS": "5/fortnight"})


def test_two_spellings_of_one_name_are_a_config_error() -> None:
    """Two variables that spell the same limit are refused, not silently ordered."""
    environ = {"RATEKEEPER_LIMIT_JOBS": "1/second", "RATEKEEPER_LIMIT_jobs": "2/second"}
    with pytest.raises(ConfigError, match="names the same limit"):
        EnvSource(environ=environ)


def test_process_environment_changes_are_seen_after_the_interval(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """os.environ is read again at most every interval; a bad value keeps the last good."""
    monkeypatch.setenv("RKTEST_JOBS", "1/minute")
    clock = ManualClock()
    source = EnvSource("RKTEST_", interval=5.0, clock=clock)
    limiter = Limiter(source, MemoryStorage(clock=clock))
    assert limiter.hit("jobs").allowed
    assert not limiter.hit("jobs").allowed
    monkeypatch.setenv("RKTEST_JOBS", "3/minute")
    assert not limiter.hit("jobs").allowed
    clock.advance(5.0)
    assert [limiter.hit("jobs").allowed for _ in range(3)] == [True, True, False]
    monkeypatch.setenv("RKTEST_JOBS", "lots")
    clock.advance(5.0)
    with caplog.at_level(logging.WARNING, logger="ratekeeper.sources"):
        assert limiter.peek("jobs").rate == Rate(3, 60.0)
        clock.advance(5.0)
        assert limiter.peek("jobs").rate == Rate(3, 60.0)
    assert len(caplog.records) == 1
    assert "RKTEST_JOBS: limit 'jobs'" in caplog.records[0].getMessage()
    assert "RKTEST_JOBS" in str(source.last_error)
    monkeypatch.delenv("RKTEST_JOBS")
    clock.advance(5.0)
    with pytest.raises(ConfigError, match=r"no limit named 'jobs' in EnvSource"):
        limiter.hit("jobs")
    assert source.last_error is None


def test_empty_prefix_is_a_config_error() -> None:
    """A prefix is needed, or every variable would be read as a limit."""
    with pytest.raises(ConfigError, match="non-empty prefix"):
        EnvSource("")
