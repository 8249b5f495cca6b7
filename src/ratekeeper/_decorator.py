"""The ``limit`` decorators: admit, pace or refuse each call of a function.

A decorated call resolves its limit (re-bound only when the source's ``version`` object
changes), computes key and cost, asks the storage once and, when admitted at once, calls
the function: that is the whole hot path. Waiting and refusing happen in the limiter's
shared wait loop. The wrapper keeps the wrapped function's signature and metadata, and
binds as a method like the function it wraps.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from ratekeeper._algorithms import BoundLimit
from ratekeeper._fastpath import fast_path
from ratekeeper._rates import Algorithm, Policy, PolicySpec, Rate
from ratekeeper.exceptions import ConfigError

if TYPE_CHECKING:
    from ratekeeper._limiter import AsyncLimiter, Limiter, OnExceeded

__all__ = ["KeySpec", "as_key", "decorate", "limit"]

P = ParamSpec("P")
R = TypeVar("R")
KeySpec = str | Callable[..., object] | None
CostSpec = int | Callable[..., int]

_UNBOUND: tuple[object, object, Any, int, bool] = (object(), object(), None, 0, False)


def as_key(value: object) -> str:
    """A key as the storages take it: a string, or ``str()`` of anything else."""
    return value if isinstance(value, str) else str(value)


def _options(
    name: str, key: KeySpec, cost: CostSpec, on_exceeded: str, max_wait: float | None
) -> tuple[str, Callable[..., object] | None, int, Callable[..., int] | None, float]:
    from ratekeeper._core import check_cost, check_wait

    if on_exceeded not in ("raise", "wait"):
        raise ConfigError(
            f"limit {name!r}: on_exceeded must be 'raise' or 'wait', got {on_exceeded!r}"
        )
    wait = check_wait(max_wait)
    if on_exceeded == "raise" and wait is not None:
        raise ConfigError(f"limit {name!r}: max_wait applies only with on_exceeded='wait'")
    budget = 0.0 if on_exceeded == "raise" else (math.inf if wait is None else wait)
    if key is None or isinstance(key, str):
        key_const, key_fn = key or "", None
    elif callable(key):
        key_const, key_fn = "", key
    else:
        raise ConfigError(f"limit {name!r}: key must be a string or a callable, got {key!r}")
    if callable(cost):
        cost_const, cost_fn = 1, cost
    else:
        cost_const, cost_fn = check_cost(cost, name), None
    return key_const, key_fn, cost_const, cost_fn, budget


def decorate(
    limiter: Limiter | AsyncLimiter,
    name: str,
    *,
    rate: PolicySpec | None,
    key: KeySpec,
    cost: CostSpec,
    on_exceeded: OnExceeded,
    max_wait: float | None,
    coroutines_only: bool,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Build the decorator of ``Limiter.limit`` / ``AsyncLimiter.limit``."""
    from ratekeeper._core import check_cost, reservation_us

    key_const, key_fn, cost_const, cost_fn, budget = _options(
        name, key, cost, on_exceeded, max_wait
    )
    if rate is not None:
        limiter.register(name, rate)
    source = limiter.source
    rebind = limiter.binder(name)

    def refresh() -> tuple[object, object, BoundLimit, int, bool]:
        # The limiter's epoch moves when a fallback, a back-off or a listener is added:
        # read before the bound, so a change racing this one is seen at the next call.
        epoch = limiter._epoch
        version, bound = rebind()
        return version, epoch, bound, reservation_us(bound, budget), bound.backoff is not None

    def decorator(fn: Callable[P, R]) -> Callable[P, R]:
        is_coroutine = inspect.iscoroutinefunction(fn)
        if coroutines_only and not is_coroutine:
            raise TypeError(
                f"AsyncLimiter.limit decorates coroutine functions; {fn!r} is not one "
                "(use Limiter.limit for plain functions)"
            )
        current = _UNBOUND

        if not is_coroutine:
            sync_limiter = cast("Limiter", limiter)
            storage = sync_limiter.storage
            decide = storage.decide
            settle = sync_limiter.settle
            effective = sync_limiter.effective
            sleep = sync_limiter._sleep

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                nonlocal current
                version, epoch, bound, reserve, adaptive = current
                if source.version is not version or limiter._epoch is not epoch:
                    current = refresh()
                    version, epoch, bound, reserve, adaptive = current
                k = key_const if key_fn is None else as_key(key_fn(*args, **kwargs))
                c = cost_const if cost_fn is None else check_cost(cost_fn(*args, **kwargs), name)
                if adaptive:
                    bound = effective(storage, bound, k)
                outcome = decide(bound, k, c, reserve, True)
                if outcome[0] and not outcome[3]:
                    if sync_limiter._listeners:  # one attribute test; no Decision unless watched
                        sync_limiter.notify(sync_limiter.decision(bound, k, c, outcome))
                    return fn(*args, **kwargs)
                settle(storage, sleep, bound, k, c, budget, outcome)
                return fn(*args, **kwargs)

            _annotate(wrapper, limiter, name)
            fast = fast_path(
                fn, wrapper, sync_limiter, rebind, key_const, key_fn, cost_const, cost_fn
            )
            if fast is None:
                return wrapper
            functools.update_wrapper(fast, fn)
            _annotate(fast, limiter, name)
            return cast("Callable[P, R]", fast)

        afn = cast("Callable[P, Coroutine[Any, Any, Any]]", fn)
        if coroutines_only:
            astorage = cast("AsyncLimiter", limiter).storage
            asleep = cast("AsyncLimiter", limiter)._sleep
        else:
            astorage = cast("Limiter", limiter)._awaitable
            asleep = cast("Limiter", limiter)._async_sleep
        adecide = astorage.decide
        asettle = limiter.settle_async
        aeffective = limiter.effective_async

        @functools.wraps(fn)
        async def awrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            nonlocal current
            version, epoch, bound, reserve, adaptive = current
            if source.version is not version or limiter._epoch is not epoch:
                current = refresh()
                version, epoch, bound, reserve, adaptive = current
            k = key_const if key_fn is None else as_key(key_fn(*args, **kwargs))
            c = cost_const if cost_fn is None else check_cost(cost_fn(*args, **kwargs), name)
            if adaptive:
                bound = await aeffective(astorage, bound, k)
            outcome = await adecide(bound, k, c, reserve, True)
            if not (outcome[0] and not outcome[3]):
                await asettle(astorage, asleep, bound, k, c, budget, outcome)
            elif limiter._listeners:
                limiter.notify(limiter.decision(bound, k, c, outcome))
            return await afn(*args, **kwargs)

        _annotate(awrapper, limiter, name)
        return cast("Callable[P, R]", awrapper)

    return decorator


def _annotate(wrapper: Callable[..., Any], limiter: object, name: str) -> None:
    # Documented attributes, so tests and tools can reach the limit behind a function.
    wrapper.limiter = limiter  # type: ignore[attr-defined]
    wrapper.limit_name = name  # type: ignore[attr-defined]


def limit(
    rate: str | Rate | Policy,
    *,
    algorithm: Algorithm | None = None,
    burst: int | None = None,
    key: KeySpec = None,
    cost: CostSpec = 1,
    on_exceeded: OnExceeded = "raise",
    max_wait: float | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Limit a function (``def`` or ``async def``) to ``rate``, in a private in-memory limiter.

    >>> @limit("2/minute")
    ... def ping() -> str:
    ...     return "pong"
    >>> ping(), ping()
    ('pong', 'pong')
    >>> ping()
    Traceback (most recent call last):
    ...
    ratekeeper.exceptions.RateLimitExceeded: limit '...ping' refused cost 1 at 2/minute ...

    ``key`` is a string or a callable of the call's arguments naming who is limited;
    ``cost`` an int or a callable of the arguments; ``on_exceeded="wait"`` paces calls
    instead of refusing them, for at most ``max_wait`` seconds. The limit's name is the
    function's module and qualified name; the wrapper's ``limiter`` and ``limit_name``
    attributes reach it (to ``reset`` it in a test, say).
    """
    from ratekeeper._limiter import Limiter
    from ratekeeper.sources import DictSource

    policy = _literal_policy(rate, algorithm, burst)

    def decorator(fn: Callable[P, R]) -> Callable[P, R]:
        name = f"{fn.__module__}.{fn.__qualname__}"
        limiter = Limiter(DictSource({name: policy}))
        return limiter.limit(name, key=key, cost=cost, on_exceeded=on_exceeded, max_wait=max_wait)(
            fn
        )

    return decorator


def _literal_policy(
    rate: str | Rate | Policy, algorithm: Algorithm | None, burst: int | None
) -> Policy:
    if isinstance(rate, Policy):
        if algorithm is not None or burst is not None:
            raise ConfigError("pass algorithm= and burst= inside the Policy, not beside it")
        return rate
    rates = (rate,) if isinstance(rate, Rate) else Rate.parse_many(rate)
    options: dict[str, Any] = {}
    if algorithm is not None:
        options["algorithm"] = algorithm
    if burst is not None:
        options["algorithm"] = options.get("algorithm", "token-bucket")
        options["burst"] = burst
    return Policy(rates, **options)
