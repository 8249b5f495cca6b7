"""Hypothesis strategies for the core suite: rates in the grammar, policies, timed requests."""

from __future__ import annotations

from typing import get_args

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from ratekeeper import Policy, Rate
from ratekeeper._rates import Algorithm

ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)

# Unit names of the rate grammar and their length in seconds (a month is 30 days, a year
# 12 months, as in the `limits` package).
UNITS: dict[str, int] = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "month": 30 * 86400,
    "year": 12 * 30 * 86400,
}

# Property tests simulate long request sequences; a fixed deadline would only measure the
# machine. Example counts stay modest so the whole suite runs in seconds.
SIMULATION = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Event = tuple[int, int]  # (microseconds since the previous request, cost)


@st.composite
def grammar_rates(draw: st.DrawFn) -> Rate:
    """A rate the grammar can spell: amount 1..10**6 per 1..100 of a unit (second..year)."""
    amount = draw(st.integers(1, 10**6))
    unit = draw(st.sampled_from(sorted(UNITS)))
    multiples = draw(st.integers(1, 100))
    return Rate(amount, float(multiples * UNITS[unit]))


@st.composite
def rate_texts(draw: st.DrawFn) -> tuple[str, Rate]:
    """A rate string in one of the grammar's spellings, with the rate it means."""
    amount = draw(st.integers(1, 10**6))
    unit = draw(st.sampled_from(sorted(UNITS)))
    multiples = draw(st.integers(1, 100))
    joiner = draw(st.sampled_from(["/", " / ", " per "]))
    period = unit if multiples == 1 and draw(st.booleans()) else f"{multiples} {unit}s"
    return f"{amount}{joiner}{period}", Rate(amount, float(multiples * UNITS[unit]))


@st.composite
def small_rates(draw: st.DrawFn) -> Rate:
    """A rate small enough to be exhausted in a short simulated sequence."""
    amount = draw(st.integers(1, 12))
    period_us = draw(
        st.one_of(
            st.sampled_from([1_000, 60_000, 1_000_000, 7_000_003]),
            st.integers(1, 5_000_000),
        )
    )
    return Rate(amount, period_us / 1_000_000)


@st.composite
def single_policies(draw: st.DrawFn, algorithm: Algorithm | None = None) -> Policy:
    """A one-rate policy of ``algorithm`` (any when None), with a burst now and then."""
    chosen = algorithm if algorithm is not None else draw(st.sampled_from(ALGORITHMS))
    rate = draw(small_rates())
    burst = None
    if chosen == "token-bucket" and draw(st.booleans()):
        burst = draw(st.integers(1, 12))
    return Policy((rate,), algorithm=chosen, burst=burst)


@st.composite
def multi_policies(draw: st.DrawFn, algorithm: Algorithm | None = None) -> Policy:
    """A policy of two or three rates with distinct periods."""
    chosen = algorithm if algorithm is not None else draw(st.sampled_from(ALGORITHMS))
    rates = draw(
        st.lists(small_rates(), min_size=2, max_size=3, unique_by=lambda rate: rate.period_us)
    )
    return Policy(tuple(rates), algorithm=chosen)


@st.composite
def timelines(draw: st.DrawFn, period_us: int, max_cost: int) -> list[Event]:
    """Requests spaced from bursts (dt 0) to gaps longer than the period, cost 1..max_cost."""
    gaps = st.one_of(
        st.just(0),
        st.integers(0, max(1, period_us // 8)),
        st.integers(0, 3 * period_us),
    )
    return draw(
        st.lists(st.tuples(gaps, st.integers(1, max(1, max_cost))), min_size=1, max_size=60)
    )


starts = st.one_of(st.just(0), st.integers(0, 10**12))
"""Where a simulation's clock starts, in microseconds (windows are aligned to zero)."""


def limit_names() -> st.SearchStrategy[str]:
    """A limit name without wildcards: one to three dotted segments, ``aws.sns.Publish``."""
    segment = st.from_regex(r"[a-z][A-Za-z0-9_-]{0,5}", fullmatch=True)
    return st.lists(segment, min_size=1, max_size=3).map(".".join)


@st.composite
def storage_operations(
    draw: st.DrawFn, period_us: int = 1_000_000, max_size: int = 40
) -> list[tuple[int, str, str, int, int]]:
    """(µs since the previous operation, hit | peek | reserve | reset, key, cost, max_wait):
    bursts, gaps up to three periods, a clock stepping back now and then, costs from 0 to
    past capacity."""
    gaps = st.one_of(
        st.just(0),
        st.integers(0, max(1, period_us // 8)),
        st.integers(0, 3 * period_us),
        st.integers(-5_000, 0),
    )
    operation = st.tuples(
        gaps,
        st.sampled_from(["hit", "hit", "hit", "peek", "reserve", "reset"]),
        st.sampled_from(["a", "b"]),
        st.one_of(st.just(1), st.integers(0, 3), st.integers(0, 14)),
        st.integers(1, 10_000_000),
    )
    # Long sequences: the interesting states (a full window rolling over, a drained bucket
    # reconverted) need a dozen operations to reach.
    drawn = draw(st.lists(operation, min_size=max_size // 4, max_size=max_size))
    return [
        (dt, op, key, cost, max_wait if op == "reserve" else 0)
        for dt, op, key, cost, max_wait in drawn
    ]


backoff_params = st.tuples(
    st.integers(1, 999),
    st.integers(1, 999),
    st.integers(1, 1000),
    st.integers(1, 10_000_000),
    st.integers(0, 5_000_000),
)
"""Back-off parameters as a storage receives them: permille and microseconds."""


# Hostile input. Pieces of the rate grammar, separators, and the characters that break
# naive parsers and key builders, so random strings land near the interesting edges.
_HOSTILE_PIECES = [
    "10", "0", "-1", "1.5", "99999999999999999999", "1" * 30, "/", " per ", "second",
    "minutes", "hour", "years", "fortnight", ";", ",", "|", " ", "\t", "\n", "\x00",
    "\ud800", "\udfff", "{", "}", ":", "*", "?", "[", "]", "%", "#", "\\", '"', "'", "½",
    "٣", "ﬀ", "=", ".",
]  # fmt: skip


def hostile_text(max_size: int = 12) -> st.SearchStrategy[str]:
    """Any text (NUL and lone surrogates included), often built from grammar pieces."""
    anything = st.text(st.characters(exclude_categories=()), max_size=max_size * 3)
    pieces = st.lists(st.sampled_from(_HOSTILE_PIECES), max_size=max_size).map("".join)
    rates = rate_texts().map(lambda pair: pair[0])
    glued = st.tuples(rates, st.sampled_from(_HOSTILE_PIECES), rates).map("".join)
    return st.one_of(anything, pieces, rates, glued)


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**53, 2**63, 10**12 + 1, 10**400]),
    st.floats(),  # NaN and infinities included
    hostile_text(),
)


def junk_values(max_leaves: int = 10) -> st.SearchStrategy[object]:
    """JSON-like values of any shape: scalars (huge, NaN, infinite, odd text), lists, tables."""
    return st.recursive(
        _SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(hostile_text(), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def spec_tables() -> st.SearchStrategy[dict[str, object]]:
    """Limit tables mixing valid settings, junk values and unknown keys."""
    valid = {
        "rate": rate_texts().map(lambda pair: pair[0]),
        "algorithm": st.sampled_from(ALGORITHMS),
        "burst": st.integers(1, 100),
        "mode": st.sampled_from(["enforce", "shadow"]),
    }
    setting = st.sampled_from(sorted(valid)).flatmap(
        lambda key: st.tuples(st.just(key), st.one_of(valid[key], valid[key], junk_values(3)))
    )
    unknown = st.tuples(hostile_text(), junk_values(3))
    return st.lists(st.one_of(setting, setting, setting, unknown), max_size=5).map(dict)


def specs() -> st.SearchStrategy[object]:
    """What a config source may map a limit name to: good, bad and nonsensical."""
    return st.one_of(
        rate_texts().map(lambda pair: pair[0]), hostile_text(), spec_tables(), junk_values(4)
    )
