"""Rate limits for boto3: every AWS call of a client, session or resource goes through a
:class:`~ratekeeper.Limiter`, and AWS throttling slows the whole fleet down.

Limit names are ``"{prefix}.{service_id}.{Operation}"`` (``aws.sns.Publish``,
``aws.cloudwatch-logs.PutLogEvents``) and are resolved through the limiter's source, globs
included; an operation that no entry matches is not limited. The key is the client's
region unless ``key=`` says otherwise. Everything here is built on the limiter's public
methods and botocore's documented event system; only :func:`assume_role_session` reaches
into botocore's credential classes (see its module). Importing this module needs boto3
(the ``ratekeeper[boto3]`` extra); ``import ratekeeper`` never imports it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

try:
    import boto3.session
    import botocore.client
    import botocore.session
except ImportError as exc:  # pragma: no cover - exercised in a test that hides boto3
    raise ImportError(
        "ratekeeper.integrations.boto3 needs boto3: install it with pip install 'ratekeeper[boto3]'"
    ) from exc

from ratekeeper._adaptive import Backoff
from ratekeeper._core import check_wait
from ratekeeper._limiter import Limiter
from ratekeeper.exceptions import ConfigError
from ratekeeper.integrations._aws_credentials import assume_role_session
from ratekeeper.integrations._aws_events import Count, Hooks, KeyFunction, OnExceeded
from ratekeeper.integrations._aws_throttling import THROTTLING_CODES, is_throttling

if TYPE_CHECKING:
    from botocore.hooks import BaseEventHooks

__all__ = [
    "DEFAULT_BACKOFF",
    "THROTTLING_CODES",
    "Backoff",
    "Instrumentation",
    "assume_role_session",
    "instrument",
    "is_throttling",
]

DEFAULT_BACKOFF = Backoff()
"""The back-off :func:`instrument` gives ``{prefix}.*`` unless told otherwise."""


class Instrumentation:
    """What :func:`instrument` returns: the registered handlers, and the way to remove them.

    Usable as a context manager: the handlers are removed on exit.
    """

    __slots__ = ("_emitter", "_handlers", "_hooks", "count", "target")

    def __init__(self, target: object, emitter: BaseEventHooks, hooks: Hooks, count: Count):
        self.target = target
        self.count: Count = count
        self._emitter = emitter
        self._hooks = hooks
        self._handlers: list[tuple[str, str]] = []

    @property
    def prefix(self) -> str:
        """The first part of every limit name this instrumentation uses."""
        return self._hooks.prefix

    @property
    def active(self) -> bool:
        """False once :meth:`uninstrument` has run."""
        return self._hooks.active

    def uninstrument(self) -> None:
        """Remove the handlers; calls are no longer limited (idempotent).

        For a session this also covers the clients created from it in the meantime: they
        hold copies of the session's handlers, which are switched off here.
        """
        self._hooks.active = False
        for event, unique_id in self._handlers:
            self._emitter.unregister(event, unique_id=unique_id)
        self._handlers.clear()

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.uninstrument()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"<Instrumentation {self.prefix!r} count={self.count!r} {state} on {self.target!r}>"


# The instrumentations of each event emitter, by prefix, with the settings they were made
# with. botocore keeps the first handler registered under a unique id and ignores the
# next, so a second instrument() must not pretend it took effect.
_REGISTRY: weakref.WeakKeyDictionary[
    BaseEventHooks, dict[str, tuple[tuple[object, ...], Instrumentation]]
] = weakref.WeakKeyDictionary()


def _emitter_of(target: object) -> BaseEventHooks:
    if isinstance(target, botocore.client.BaseClient):
        return target.meta.events
    if isinstance(target, boto3.session.Session):
        return target.events
    if isinstance(target, botocore.session.Session):
        emitter: BaseEventHooks = target.get_component("event_emitter")
        return emitter
    client = getattr(getattr(target, "meta", None), "client", None)
    if isinstance(client, botocore.client.BaseClient):  # a boto3 resource
        return client.meta.events
    raise TypeError(
        "instrument() takes a boto3 client, a boto3 or botocore Session, or a boto3 "
        f"resource; got {type(target).__name__}"
    )


def _choice(value: object, allowed: Iterable[str], what: str) -> None:
    choices = tuple(allowed)
    if value not in choices:
        raise ConfigError(f"instrument(): {what} must be one of {choices!r}, got {value!r}")


def instrument(
    target: Any,
    limiter: Limiter,
    *,
    prefix: str = "aws",
    count: Count = "call",
    on_exceeded: OnExceeded = "wait",
    max_wait: float | None = None,
    key: str | KeyFunction | None = None,
    backoff: Backoff | None = DEFAULT_BACKOFF,
) -> Instrumentation:
    """Send every AWS call of ``target`` through ``limiter``; returns the handle to undo it.

    ``target`` is a boto3 client, a boto3 (or botocore) ``Session`` — then every client
    created from it *afterwards* is covered, including the STS clients botocore creates to
    refresh credentials — or a boto3 resource (its ``meta.client``).

    ``count="call"`` takes one unit per logical API call, however many times botocore
    retries it; ``count="attempt"`` takes one per HTTP attempt, retries included, before
    the request is signed. ``on_exceeded="wait"`` paces calls (for at most ``max_wait``
    seconds, then :class:`~ratekeeper.RateLimitExceeded`); ``"raise"`` refuses at once.
    ``key`` is who a call counts for: a string, or ``key(service_id, operation, region)``;
    by default the client's region, so two regions never share a limit by accident.

    Unless ``backoff`` is None, the limits ``{prefix}.*`` become adaptive
    (:meth:`~ratekeeper.Limiter.adapt`): when AWS answers with a throttling error the
    operation's effective rate drops, for every process sharing the limiter's storage.
    Where adaptive patterns overlap the most specific wins: to tune one service, call
    ``limiter.adapt("aws.sns.*", ...)``, before or after instrumenting.

    Instrumenting a target again with the same prefix and settings returns the same
    handle; with other settings it is a :class:`~ratekeeper.ConfigError` until the first
    is removed. (A client created from an instrumented session already carries the
    session's handlers: instrumenting it again with the same prefix adds nothing.)
    """
    if not isinstance(limiter, Limiter):
        raise TypeError(
            "instrument() needs a ratekeeper.Limiter: botocore calls its handlers "
            "synchronously, so an AsyncLimiter cannot be awaited there (see the async "
            f"section of the boto3 docs); got {type(limiter).__name__}"
        )
    if not isinstance(prefix, str) or not prefix or prefix.endswith("."):
        raise ConfigError(
            f"instrument(): prefix must be a non-empty string without a trailing dot, "
            f"got {prefix!r}"
        )
    _choice(count, ("call", "attempt"), "count")
    _choice(on_exceeded, ("wait", "raise"), "on_exceeded")
    max_wait = check_wait(max_wait)
    if key is not None and not isinstance(key, str) and not callable(key):
        raise ConfigError(f"instrument(): key must be a string or a callable, got {key!r}")
    if backoff is not None and not isinstance(backoff, Backoff):
        raise ConfigError(f"instrument(): backoff must be a Backoff or None, got {backoff!r}")
    emitter = _emitter_of(target)
    settings = (limiter, count, on_exceeded, max_wait, key, backoff)
    known = _REGISTRY.setdefault(emitter, {})
    previous = known.get(prefix)
    if previous is not None and previous[1].active:
        if previous[0] == settings:
            return previous[1]
        raise ConfigError(
            f"instrument(): {type(target).__name__} is already instrumented with prefix "
            f"{prefix!r} and other settings; call uninstrument() on its handle first, or "
            "use another prefix"
        )
    hooks = Hooks(limiter, prefix, on_exceeded, max_wait, key)
    if backoff is not None:
        limiter.adapt(f"{prefix}.*", backoff)
    handle = Instrumentation(target, emitter, hooks, count)
    for event, handler, first in hooks.handlers(count):
        unique_id = f"ratekeeper:{prefix}:{event}"
        register = emitter.register_first if first else emitter.register
        register(event, handler, unique_id=unique_id)
        handle._handlers.append((event, unique_id))
    known[prefix] = (settings, handle)
    return handle
