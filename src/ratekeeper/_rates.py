"""Rates and policies: the value objects that say how much is allowed.

A *rate* is an amount per period ("10/minute"); a *policy* is one or more rates checked
together, plus the algorithm that counts them. Both are frozen values: a config source
swaps whole policies, it never edits one in place. Rate strings use the grammar of the
`limits` package ("10/second", "10 per 2 minutes", "5/minute;100/hour"); `limits` is
imported the first time a string is parsed, so ``import ratekeeper`` stays cheap.

Nothing here knows about names, keys, storages or time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from ratekeeper.exceptions import ConfigError

__all__ = ["ALGORITHMS", "Algorithm", "Mode", "Policy", "Rate"]

Algorithm = Literal["fixed-window", "sliding-window", "sliding-log", "token-bucket"]
ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)
DEFAULT_ALGORITHM: Algorithm = "sliding-window"

Mode = Literal["enforce", "shadow"]
MODES: tuple[Mode, ...] = get_args(Mode)

# Period units of the `limits` grammar, largest first, in seconds (a month is 30 days and a
# year 12 months there; we keep its meaning so a string reads the same in both libraries).
_UNITS: tuple[tuple[str, int], ...] = (
    ("year", 12 * 30 * 86400),
    ("month", 30 * 86400),
    ("day", 86400),
    ("hour", 3600),
    ("minute", 60),
    ("second", 1),
)
_UNIT_NAMES = ", ".join(name for name, _ in reversed(_UNITS))
_SEPARATORS = re.compile(r"[,;|]")
_PART = re.compile(r"^\s*(-?\d+)\s*(?:/|\s+per\s+)\s*(-?\d+)?\s*([a-zA-Z]+)\s*$", re.IGNORECASE)

# Products of amounts, periods and costs must stay exact in IEEE doubles, which is all
# Redis' Lua has; 2**53 microseconds is about 285 years.
_MAX_US = 2**53
_MAX_AMOUNT = 10**12


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Rate:
    """``amount`` units per ``period`` seconds, e.g. ``Rate(10, 60.0)`` is "10/minute"."""

    amount: int
    period: float

    def __post_init__(self) -> None:
        if not _is_int(self.amount) or not 1 <= self.amount <= _MAX_AMOUNT:
            raise ConfigError(
                f"rate amount must be a whole number from 1 to {_MAX_AMOUNT}, got {self.amount!r}"
            )
        if (
            not isinstance(self.period, (int, float))
            or isinstance(self.period, bool)
            or not math.isfinite(self.period)
            or self.period <= 0
        ):
            raise ConfigError(
                f"rate period must be a positive number of seconds, got {self.period!r}"
            )
        if round(self.period * 1_000_000) < 1 or self.period * 1_000_000 >= _MAX_US:
            raise ConfigError(
                f"rate period must be between 1 microsecond and 285 years, got {self.period!r} s"
            )
        object.__setattr__(self, "period", float(self.period))

    @property
    def period_us(self) -> int:
        """The period in whole microseconds, the unit every algorithm counts in."""
        return round(self.period * 1_000_000)

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Parse one rate: ``Rate.parse("10 per 2 minutes") == Rate(10, 120.0)``."""
        rates = cls.parse_many(text)
        if len(rates) != 1:
            raise ConfigError(f"expected one rate, got {len(rates)} in {text!r}")
        return rates[0]

    @classmethod
    def parse_many(cls, text: str) -> tuple[Rate, ...]:
        """Parse ``"5/minute;100/hour"`` (separators ``;``, ``,`` or ``|``) into rates."""
        if not isinstance(text, str):
            raise ConfigError(
                f"a rate must be a string like '10/minute', got {text!r} ({type(text).__name__})"
            )
        from limits import parse_many  # the grammar's reference parser; imported when used

        try:
            items = parse_many(text)
        except ValueError:
            raise ConfigError(_diagnose(text)) from None
        for part in _SEPARATORS.split(text):
            # `limits` reads "10 per 0 minutes" as "10 per 1 minute"; a zero period is an error.
            match = _PART.match(part)
            if match is not None and match.group(2) is not None and int(match.group(2)) == 0:
                raise ConfigError(f"rate {text!r}: the period must be at least 1, got 0")
        rates = []
        for item in items:
            if item.amount < 1:
                raise ConfigError(
                    f"rate {text!r}: the amount must be at least 1, got {item.amount}"
                )
            if item.multiples < 1:
                raise ConfigError(
                    f"rate {text!r}: the period must be at least 1, got {item.multiples}"
                )
            try:
                rates.append(cls(item.amount, float(item.multiples * item.GRANULARITY.seconds)))
            except ConfigError as exc:
                raise ConfigError(f"rate {text!r}: {exc}") from None
        return tuple(rates)

    def __str__(self) -> str:
        period = self.period
        if period.is_integer():
            whole = int(period)
            for unit, seconds in _UNITS:
                if whole % seconds == 0:
                    multiples = whole // seconds
                    if multiples == 1:
                        return f"{self.amount}/{unit}"
                    return f"{self.amount} per {multiples} {unit}s"
        return f"{self.amount} per {period:g} seconds"


def _diagnose(text: str) -> str:
    """Say what is wrong with a rate string that the grammar refused."""
    if not text.strip():
        return "empty rate string: expected something like '10/minute'"
    for part in _SEPARATORS.split(text):
        match = _PART.match(part)
        if match is None:
            if not part.strip():
                return f"rate string {text!r} has an empty part (a stray separator?)"
            return (
                f"cannot read {part.strip()!r} in rate string {text!r}: expected "
                "'<amount>/<period>' such as '10/minute' or '10 per 2 minutes'"
            )
        amount, multiples, unit = match.groups()
        if amount.startswith("-") or (multiples or "").startswith("-"):
            return f"rate string {text!r}: amounts and periods must be positive"
        if unit.lower().rstrip("s") not in {name for name, _ in _UNITS}:
            return (
                f"unknown period unit {unit!r} in rate string {text!r} "
                f"(expected one of: {_UNIT_NAMES})"
            )
    return f"cannot parse rate string {text!r}: expected something like '10/minute;100/hour'"


@dataclass(frozen=True, slots=True)
class Policy:
    """What a limit name maps to: rates checked all-or-nothing, and how they are counted.

    ``burst`` is the token bucket's capacity for its first rate (default: that rate's
    amount); other algorithms take none. ``mode="shadow"`` computes and reports decisions
    but never refuses or delays a call.
    """

    rates: tuple[Rate, ...]
    algorithm: Algorithm = DEFAULT_ALGORITHM
    burst: int | None = None
    mode: Mode = "enforce"

    def __post_init__(self) -> None:
        rates: object = self.rates
        if isinstance(rates, Rate):
            rates = (rates,)
        elif isinstance(rates, str):
            rates = Rate.parse_many(rates)
        else:
            rates = tuple(rates)  # type: ignore[arg-type]
        if not rates or not all(isinstance(rate, Rate) for rate in rates):
            raise ConfigError(f"a policy needs one or more Rate values, got {self.rates!r}")
        periods = [rate.period_us for rate in rates]
        if len(set(periods)) != len(periods):
            raise ConfigError(
                f"rates {';'.join(map(str, rates))!r} repeat a period: give each period once"
            )
        object.__setattr__(self, "rates", rates)
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(
                f"unknown algorithm {self.algorithm!r} (expected one of: {', '.join(ALGORITHMS)})"
            )
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r} (expected one of: {', '.join(MODES)})")
        if self.burst is not None:
            if self.algorithm != "token-bucket":
                raise ConfigError(
                    f"burst applies to the token-bucket algorithm only, not {self.algorithm!r}"
                )
            if not _is_int(self.burst) or not 1 <= self.burst <= _MAX_AMOUNT:
                raise ConfigError(
                    f"burst must be a whole number from 1 to {_MAX_AMOUNT}, got {self.burst!r}"
                )
        if self.algorithm == "token-bucket":
            for index, rate in enumerate(rates):
                capacity = self.burst if index == 0 and self.burst is not None else rate.amount
                interval = -(-rate.period_us // rate.amount)
                if capacity * interval >= _MAX_US:
                    raise ConfigError(
                        f"burst {capacity} at {rate} spans more than 285 years; lower the burst"
                    )

    @classmethod
    def parse(cls, spec: PolicySpec) -> Policy:
        """Build a policy from a spec: a rate string, a table, or a :class:`Policy`.

        A table has ``rate`` (required), ``algorithm``, ``burst`` and ``mode``, as in the
        ``[limits]`` table of a config file.
        """
        if isinstance(spec, Policy):
            return spec
        if isinstance(spec, str):
            return cls(Rate.parse_many(spec))
        if isinstance(spec, Mapping):
            unknown = sorted(str(k) for k in spec if k not in _SPEC_KEYS)
            if unknown:
                raise ConfigError(
                    f"unknown setting {unknown[0]!r} (expected: {', '.join(sorted(_SPEC_KEYS))})"
                )
            if "rate" not in spec:
                raise ConfigError("a limit table needs a 'rate' such as rate = \"10/minute\"")
            algorithm = spec.get("algorithm", DEFAULT_ALGORITHM)
            if not isinstance(algorithm, str):
                raise ConfigError(f"algorithm must be a string, got {algorithm!r}")
            mode = spec.get("mode", "enforce")
            if not isinstance(mode, str):
                raise ConfigError(f"mode must be a string, got {mode!r}")
            return cls(
                Rate.parse_many(spec["rate"]),
                algorithm=algorithm,  # type: ignore[arg-type]  # checked in __post_init__
                burst=spec.get("burst"),
                mode=mode,  # type: ignore[arg-type]
            )
        raise ConfigError(
            "a limit must be a rate string, a table with 'rate', or a Policy; "
            f"got {spec!r} ({type(spec).__name__})"
        )

    def __str__(self) -> str:
        text = ";".join(map(str, self.rates))
        extras: list[str] = [self.algorithm]
        if self.burst is not None:
            extras.append(f"burst {self.burst}")
        if self.mode != "enforce":
            extras.append(self.mode)
        return f"{text} ({', '.join(extras)})"


_SPEC_KEYS = frozenset({"rate", "algorithm", "burst", "mode"})
PolicySpec = str | Mapping[str, Any] | Policy
