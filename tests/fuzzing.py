"""Helpers for the hostile-input tests: a per-call hang guard, a TOML writer for random
documents, and the reference model that a limiter fed with junk must still agree with."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from ratekeeper import ConfigError, Limiter, RateLimitExceeded
from tests.strategies import hostile_text

P = ParamSpec("P")
T = TypeVar("T")

CALL_TIMEOUT = 5.0  # seconds one call may take before it counts as a hang

# Generous deadline (a loaded machine is not a bug); example counts keep each file in seconds.
FUZZ = settings(
    max_examples=60,
    deadline=3000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def guarded(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)``, failing the test if it has not returned in CALL_TIMEOUT.

    The call runs on a daemon thread, so a hang is reported instead of stalling the suite.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    worker = threading.Thread(target=run, name="fuzz-guard", daemon=True)
    worker.start()
    worker.join(CALL_TIMEOUT)
    if worker.is_alive():
        pytest.fail(f"{fn!r} did not return within {CALL_TIMEOUT} s", pytrace=False)
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def toml_value(value: object) -> str | None:
    """``value`` written as a TOML value, or None for what TOML cannot hold (null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes are a subset of TOML's basic-string escapes.
        return json.dumps(value)
    if isinstance(value, list):
        items = [text for text in map(toml_value, value) if text is not None]
        return "[" + ", ".join(items) + "]"
    if isinstance(value, Mapping):
        pairs = [
            f"{json.dumps(str(key))} = {text}"
            for key, item in value.items()
            if (text := toml_value(item)) is not None
        ]
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(f"no TOML for {value!r}")


def toml_data(value: object) -> object:
    """``value`` as TOML holds it: what :func:`toml_value` drops (null) is gone."""
    if isinstance(value, list):
        return [toml_data(item) for item in value if item is not None]
    if isinstance(value, Mapping):
        return {str(key): toml_data(item) for key, item in value.items() if item is not None}
    return value


def toml_document(limits: Mapping[str, object]) -> str:
    """A TOML file with a ``[limits]`` table holding ``limits``."""
    lines = ["[limits]"]
    for name, spec in limits.items():
        text = toml_value(spec)
        if text is not None:
            lines.append(f"{json.dumps(name)} = {text}")
    return "\n".join(lines) + "\n"


# The limiter model: limit "a" is a fixed window of CAPACITY per hour on a clock that
# never moves, so whether a call is admitted depends only on what was consumed before.
CAPACITY = 3
MODEL_LIMITS = {"a": {"rate": f"{CAPACITY}/hour", "algorithm": "fixed-window"}}

limit_name_inputs = st.one_of(
    st.just("a"),
    st.just("a"),
    st.just("a"),
    hostile_text(),
    st.sampled_from(["", " ", "*", "a*", "?", "[a]", "b"]),
    st.integers(),
    st.none(),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
cost_inputs = st.one_of(
    st.integers(0, CAPACITY + 1),
    st.integers(0, CAPACITY + 1),
    st.integers(-(10**30), 10**30),
    st.sampled_from([-1, 2**63, 2**64, 10**30]),
    st.booleans(),
    st.floats(),
    st.none(),
    st.text(max_size=3),
)
key_inputs = st.one_of(st.sampled_from(["", "k", "k2"]), hostile_text())
timeout_inputs = st.one_of(
    st.just(0.0),
    st.just(0),
    st.floats(max_value=-1e-9),
    st.just(math.nan),
    st.booleans(),
    st.text(max_size=2),
)
Operation = tuple[str, object, str, object, object]  # kind, name, key, cost, timeout
operations = st.lists(
    st.tuples(
        st.sampled_from(["hit", "hit", "hit", "peek", "reset", "acquire"]),
        limit_name_inputs,
        key_inputs,
        cost_inputs,
        timeout_inputs,
    ),
    max_size=25,
)


def valid_cost(cost: object) -> bool:
    return isinstance(cost, int) and not isinstance(cost, bool) and cost >= 0


def valid_timeout(timeout: object) -> bool:
    return isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout >= 0


def run_model(limiter: Limiter, ops: list[Operation]) -> None:
    """Feed ``ops`` to ``limiter`` (on MODEL_LIMITS) and check every answer against the
    model: a bad name, cost or timeout is a ConfigError and changes nothing; a good call
    is admitted exactly when the key's window still holds its cost, and only ``hit`` and
    ``acquire`` consume (``acquire`` with no time to wait raises instead of refusing)."""
    used: dict[str, int] = {}
    for kind, name, key, cost, timeout in ops:
        bad = name != "a" or (kind != "reset" and not valid_cost(cost))
        if kind == "acquire" and not valid_timeout(timeout):
            bad = True
        call: Callable[..., Any] = getattr(limiter, kind)
        args: dict[str, object] = {"key": key}
        if kind != "reset":
            args["cost"] = cost
        if kind == "acquire":
            args["timeout"] = timeout
        if bad:
            with pytest.raises(ConfigError):
                guarded(call, name, **args)
            continue
        if kind == "reset":
            guarded(call, name, **args)
            used.pop(key, None)
            continue
        assert isinstance(cost, int)
        before = used.get(key, 0)
        fits = before + cost <= CAPACITY
        if kind == "acquire" and not fits:
            with pytest.raises(RateLimitExceeded) as refused:
                guarded(call, name, **args)
            assert math.isinf(refused.value.retry_after) == (cost > CAPACITY)
            continue
        decision = guarded(call, name, **args)
        assert decision.allowed == fits, (kind, key, cost, before)
        if fits and kind != "peek":
            used[key] = before + cost
        assert decision.remaining == CAPACITY - used.get(key, 0)
        assert math.isinf(decision.retry_after) == (cost > CAPACITY)
        assert decision.key == key
    # Peeking consumes nothing and agrees with the model for every key seen.
    for key, spent in used.items():
        assert guarded(limiter.peek, "a", key=key, cost=0).remaining == CAPACITY - spent
