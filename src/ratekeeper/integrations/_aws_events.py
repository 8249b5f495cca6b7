"""The botocore event handlers behind ``instrument``: admit calls, report throttles.

One :class:`Hooks` object holds the handlers of one instrumentation. They run inside
botocore's event system, so they must stay cheap on the admitted path (a dict lookup per
call to find the limit name), must never wait after a request is signed, and must return
``None`` from every event whose return value botocore would act on (``before-call``
answers a call when a handler returns a response). This module imports botocore only for
typing; it knows nothing of sessions, clients or credentials.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Literal

from ratekeeper.exceptions import ConfigError, RateLimitExceeded
from ratekeeper.integrations._aws_throttling import is_throttling

if TYPE_CHECKING:
    from botocore.awsrequest import AWSRequest
    from botocore.model import OperationModel

    from ratekeeper._limiter import Limiter

__all__ = ["Count", "Hooks", "KeyFunction", "OnExceeded"]

Count = Literal["call", "attempt"]
OnExceeded = Literal["wait", "raise"]
KeyFunction = Callable[[str, str, str], str]
"""``key(service_id, operation, region) -> key``: who a call is counted for."""

# How many operation models the name cache keeps before starting over: one entry per
# (client, operation) pair in use, so only a program creating clients without end fills it.
_CACHE_LIMIT = 10_000


class Hooks:
    """The handlers of one instrumentation, and the limit-name cache they share."""

    __slots__ = (
        "_limiter",
        "_max_wait",
        "_names",
        "_raise",
        "_seen_slot",
        "_slot",
        "_source",
        "active",
        "key",
        "prefix",
    )

    def __init__(
        self,
        limiter: Limiter,
        prefix: str,
        on_exceeded: OnExceeded,
        max_wait: float | None,
        key: str | KeyFunction | None,
    ) -> None:
        self.active = True
        self.prefix = prefix
        self.key = key
        self._limiter = limiter
        self._source = limiter.source
        self._raise = on_exceeded == "raise"
        self._max_wait = max_wait
        # (source version, {operation model: limit name or None}) swapped as one value,
        # like the limiter's own cache, so a new version never pairs with old answers.
        self._names: tuple[object, dict[OperationModel, str | None]] = (object(), {})
        self._slot = f"ratekeeper:{prefix}"
        self._seen_slot = f"ratekeeper:{prefix}:answered"

    def limit_name(self, model: OperationModel) -> str | None:
        """``{prefix}.{service_id}.{Operation}`` when the source has a policy for it, else None.

        An operation no entry matches is not limited: instrumenting a client must never
        refuse a call nobody configured.
        """
        version = self._source.version
        cached_version, table = self._names
        if cached_version is not version:
            table = {}
            self._names = (version, table)
        try:
            return table[model]
        except KeyError:
            pass
        if len(table) >= _CACHE_LIMIT:
            table.clear()
        service_id = model.service_model.service_id.hyphenize()
        name = f"{self.prefix}.{service_id}.{model.name}"
        found = name if self._source.snapshot().resolve(name) is not None else None
        table[model] = found
        return found

    def key_of(self, model: OperationModel, context: Mapping[str, Any]) -> str:
        region = context.get("client_region") or ""
        key = self.key
        if key is None:
            return str(region)
        if isinstance(key, str):
            return key
        return key(model.service_model.service_id.hyphenize(), model.name, str(region))

    def admit(self, name: str, key: str) -> None:
        """Take one unit for ``key`` under ``name``: wait for it, or raise."""
        if self._raise:
            decision = self._limiter.hit(name, key)
            if not decision.allowed and not decision.shadow:
                raise RateLimitExceeded(decision)
        else:
            self._limiter.acquire(name, key, timeout=self._max_wait)

    def report(self, entry: tuple[str, str, OperationModel], status: int, parsed: Any) -> None:
        name, key, model = entry
        if status < 400 or not isinstance(parsed, Mapping):
            return
        if not is_throttling(status, parsed, model):
            return
        # ConfigError: the limit is not adaptive (instrumented with backoff=None).
        with contextlib.suppress(ConfigError):
            self._limiter.throttle(name, key)

    # -- handlers ---------------------------------------------------------------------

    def before_call_counting(
        self, model: OperationModel, context: MutableMapping[str, Any], **_: Any
    ) -> None:
        """``before-call``, once per logical call: admit it (count="call")."""
        if not self.active:
            return
        name = self.limit_name(model)
        if name is None:
            return
        key = self.key_of(model, context)
        self.admit(name, key)
        context[self._slot] = (name, key, model)

    def before_call_marking(
        self, model: OperationModel, context: MutableMapping[str, Any], **_: Any
    ) -> None:
        """``before-call`` when attempts are counted: resolve the name once per call, so
        each attempt only reads it from the context that all attempts share."""
        if not self.active:
            return
        name = self.limit_name(model)
        if name is not None:
            context[self._slot] = (name, self.key_of(model, context), model)

    def request_created(self, request: AWSRequest, **_: Any) -> None:
        """``request-created``, once per HTTP attempt and before the signer: admit it."""
        if not self.active:
            return
        entry = request.context.get(self._slot)
        if entry is not None:
            self.admit(entry[0], entry[1])

    def response_received(
        self,
        response_dict: Mapping[str, Any] | None,
        parsed_response: Any,
        context: MutableMapping[str, Any],
        **_: Any,
    ) -> None:
        """``response-received``, once per attempt that got an answer: report throttles."""
        entry = context.get(self._slot)
        if entry is None or not self.active:
            return
        context[self._seen_slot] = True
        if response_dict is not None:
            status = response_dict.get("status_code", 0)
            if status >= 400:  # the common case returns before any classification
                self.report(entry, int(status), parsed_response)

    def after_call(
        self, http_response: Any, parsed: Any, context: MutableMapping[str, Any], **_: Any
    ) -> None:
        """``after-call``: report a throttle when no attempt was seen (a stubbed reply)."""
        entry = context.get(self._slot)
        if entry is None or self._seen_slot in context or not self.active:
            return
        self.report(entry, int(getattr(http_response, "status_code", 0)), parsed)

    def handlers(self, count: Count) -> tuple[tuple[str, Callable[..., None], bool], ...]:
        """(event, handler, first?) for ``count``; ``first`` places it before the Stubber's
        and the signer's handlers."""
        before_call = self.before_call_counting if count == "call" else self.before_call_marking
        registered: list[tuple[str, Callable[..., None], bool]] = [
            ("before-call.*.*", before_call, True),
            ("response-received.*.*", self.response_received, False),
            ("after-call.*.*", self.after_call, False),
        ]
        if count == "attempt":
            registered.append(("request-created.*.*", self.request_created, True))
        return tuple(registered)
