"""Rates and policies: parsing the grammar, the errors it gives, and frozen values."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given

from ratekeeper import ConfigError, Policy, Rate
from tests.strategies import grammar_rates, rate_texts


def test_parse_per_second() -> None:
    """'10/second' is ten units per one second."""
    assert Rate.parse("10/second") == Rate(10, 1.0)


def test_parse_multiples_of_a_unit() -> None:
    """'10 per 2 minutes' is ten units per 120 seconds."""
    rate = Rate.parse("10 per 2 minutes")
    assert rate == Rate(10, 120.0)
    assert rate.period_us == 120_000_000


def test_parse_is_case_and_space_tolerant() -> None:
    """Unit names ignore case and plural, and spaces around '/' are allowed."""
    assert Rate.parse("10 / Seconds") == Rate(10, 1.0)
    assert Rate.parse("3/DAY") == Rate(3, 86400.0)


def test_month_and_year_follow_the_limits_grammar() -> None:
    """A month is 30 days and a year 12 such months, as in the `limits` package."""
    assert Rate.parse("1/month").period == 30 * 86400
    assert Rate.parse("1/year").period == 360 * 86400


def test_parse_many_splits_rates() -> None:
    """'5/minute;100/hour' gives both rates, in order."""
    assert Rate.parse_many("5/minute;100/hour") == (Rate(5, 60.0), Rate(100, 3600.0))


@pytest.mark.parametrize("separator", [";", ",", "|", " ; "])
def test_parse_many_separators(separator: str) -> None:
    """';', ',' and '|' all separate rates."""
    text = f"5/minute{separator}100/hour{separator}1000/day"
    assert Rate.parse_many(text) == (Rate(5, 60.0), Rate(100, 3600.0), Rate(1000, 86400.0))


def test_parse_refuses_several_rates() -> None:
    """Rate.parse wants exactly one rate and says how many it found."""
    with pytest.raises(ConfigError, match="expected one rate, got 2"):
        Rate.parse("5/minute;100/hour")


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("10/fortnight", "unknown period unit 'fortnight'"),
        ("", "empty rate string"),
        ("   ", "empty rate string"),
        ("5/minute;", "empty part"),
        (";5/minute", "empty part"),
        ("5/minute;;100/hour", "empty part"),
        ("0/second", "at least 1"),
        ("10 per 0 minutes", "period must be at least 1"),
        ("-1/second", "must be positive"),
        ("10 per -2 minutes", "must be positive"),
        ("ten/second", "cannot read 'ten/second'"),
        ("10/minute and more", "cannot read"),
    ],
)
def test_bad_rate_strings_say_what_is_wrong(text: str, complaint: str) -> None:
    """A refused rate string raises ConfigError quoting the string and naming the fault."""
    with pytest.raises(ConfigError) as caught:
        Rate.parse_many(text)
    message = str(caught.value)
    assert complaint in message
    assert repr(text) in message or not text.strip()


@pytest.mark.parametrize("value", [10, None, b"10/second", 1.5, ["10/second"]])
def test_rate_of_wrong_type(value: Any) -> None:
    """A rate that is not a string is a ConfigError naming the type it got."""
    with pytest.raises(ConfigError, match=type(value).__name__):
        Rate.parse_many(value)


def test_config_error_is_a_value_error() -> None:
    """ConfigError is also a ValueError, so generic handlers catch it."""
    with pytest.raises(ValueError, match="fortnight"):
        Rate.parse("1/fortnight")


@pytest.mark.parametrize(
    ("amount", "period"),
    [(0, 1.0), (-1, 1.0), (True, 1.0), (1.5, 1.0), (1, 0.0), (1, -1.0), (1, float("inf"))],
)
def test_rate_constructor_validates(amount: Any, period: Any) -> None:
    """Rate() refuses amounts that are not whole and positive, and bad periods."""
    with pytest.raises(ConfigError, match="rate"):
        Rate(amount, period)


def test_rate_period_below_a_microsecond() -> None:
    """A period that rounds to zero microseconds is refused."""
    with pytest.raises(ConfigError, match="1 microsecond"):
        Rate(1, 1e-7)


@given(grammar_rates())
def test_str_round_trips_through_parse(rate: Rate) -> None:
    """str(rate) is a rate string that parses back to the same rate."""
    assert Rate.parse(str(rate)) == rate


@given(rate_texts())
def test_every_spelling_parses(case: tuple[str, Rate]) -> None:
    """'N/unit', 'N / unit', 'N per M units' all parse to the rate they spell."""
    text, rate = case
    assert Rate.parse(text) == rate


def test_str_uses_the_largest_whole_unit() -> None:
    """str() picks the largest unit that divides the period."""
    assert str(Rate(10, 120.0)) == "10 per 2 minutes"
    assert str(Rate(5, 3600.0)) == "5/hour"
    assert str(Rate(3, 7 * 86400.0)) == "3 per 7 days"
    assert str(Rate(1, 0.5)) == "1 per 0.5 seconds"


def test_policy_from_string() -> None:
    """A rate string is a policy of the default algorithm, sliding-window."""
    policy = Policy.parse("5/minute;100/hour")
    assert policy.rates == (Rate(5, 60.0), Rate(100, 3600.0))
    assert policy.algorithm == "sliding-window"
    assert policy.burst is None
    assert policy.mode == "enforce"


def test_policy_from_table() -> None:
    """A table gives rate, algorithm, burst and mode."""
    policy = Policy.parse(
        {"rate": "300/second", "algorithm": "token-bucket", "burst": 600, "mode": "shadow"}
    )
    assert policy == Policy((Rate(300, 1.0),), algorithm="token-bucket", burst=600, mode="shadow")


def test_policy_from_policy_is_itself() -> None:
    """A Policy is its own spec."""
    policy = Policy((Rate(1, 1.0),), algorithm="fixed-window")
    assert Policy.parse(policy) is policy


def test_policy_accepts_a_rate_or_a_string_for_rates() -> None:
    """Policy(rates=...) takes one Rate or a rate string as well as a tuple."""
    assert Policy(Rate(1, 1.0)).rates == (Rate(1, 1.0),)  # type: ignore[arg-type]
    assert Policy("1/second;5/minute").rates == (Rate(1, 1.0), Rate(5, 60.0))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ({"rate": "5/minute", "burts": 3}, "unknown setting 'burts'"),
        ({"algorithm": "fixed-window"}, "needs a 'rate'"),
        ({"rate": "5/minute", "algorithm": "leaky-bucket"}, "unknown algorithm 'leaky-bucket'"),
        ({"rate": "5/minute", "algorithm": 3}, "algorithm must be a string"),
        ({"rate": "5/minute", "burst": 3}, "burst applies to the token-bucket algorithm only"),
        (
            {"rate": "5/minute", "algorithm": "fixed-window", "burst": 3},
            "not 'fixed-window'",
        ),
        ({"rate": "5/minute", "algorithm": "token-bucket", "burst": 0}, "burst must be"),
        ({"rate": "5/minute", "algorithm": "token-bucket", "burst": 2.5}, "burst must be"),
        ({"rate": "5/minute", "mode": "loud"}, "unknown mode 'loud'"),
        ({"rate": 5}, "a rate must be a string"),
        ("5/minute;10/minute", "repeat a period"),
        ("5/minute;10 per 60 seconds", "repeat a period"),
        (5, "a limit must be a rate string"),
        (None, "a limit must be a rate string"),
    ],
)
def test_bad_policy_specs(spec: Any, complaint: str) -> None:
    """A bad spec is a ConfigError that says what is wrong."""
    with pytest.raises(ConfigError, match=complaint):
        Policy.parse(spec)


def test_empty_policy_is_refused() -> None:
    """A policy needs at least one rate."""
    with pytest.raises(ConfigError, match="one or more Rate"):
        Policy(())


def test_burst_spanning_centuries_is_refused() -> None:
    """A token bucket whose burst would take more than 285 years to refill is refused."""
    with pytest.raises(ConfigError, match="285 years"):
        Policy((Rate(1, 360 * 86400.0 * 100),), algorithm="token-bucket", burst=10)


def test_values_are_frozen() -> None:
    """Rate and Policy refuse assignment: sources swap whole values, never edit one."""
    rate = Rate(1, 1.0)
    policy = Policy((rate,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        rate.amount = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.algorithm = "fixed-window"  # type: ignore[misc]
    assert rate.amount == 1
    assert policy.algorithm == "sliding-window"


def test_values_are_hashable_and_compare_by_value() -> None:
    """Equal specs give equal, hashable policies."""
    first = Policy.parse({"rate": "5/minute", "algorithm": "fixed-window"})
    second = Policy.parse({"rate": "5 per 1 minute", "algorithm": "fixed-window"})
    assert first == second
    assert len({first, second}) == 1


def test_policy_str() -> None:
    """str(policy) shows rates, algorithm, burst and mode."""
    policy = Policy.parse(
        {"rate": "5/second;100/hour", "algorithm": "token-bucket", "burst": 9, "mode": "shadow"}
    )
    assert str(policy) == "5/second;100/hour (token-bucket, burst 9, shadow)"
