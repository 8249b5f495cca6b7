"""OpenTelemetry metrics for ratekeeper decisions, fed by a limiter's decision listener.

This lives under ``integrations`` because it is built, like the boto3 integration, only on
the limiter's public surface (:meth:`~ratekeeper.Limiter.add_listener`, a storage's
``failure_counts``). It needs only the OpenTelemetry *API* (``pip install
'ratekeeper[otel]'``): the application chooses the SDK, the readers and the exporters, and
without an SDK configured every instrument is a no-op.

Instruments are attributed by limit name only, never by key: keys are often user or
tenant ids, and one series per key would grow without bound.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

try:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "the OpenTelemetry exporter needs opentelemetry-api: pip install 'ratekeeper[otel]'"
    ) from exc

from ratekeeper._decision import Decision
from ratekeeper._observe import failure_totals, outcome_of

__all__ = ["LIMIT", "OUTCOME", "OpenTelemetryMetrics"]

LIMIT = "ratekeeper.limit"
OUTCOME = "ratekeeper.outcome"


class OpenTelemetryMetrics:
    """A decision listener that records decisions and waits with an OpenTelemetry meter.

    Add it to one limiter or several with ``limiter.add_listener(metrics)``. The meter
    named ``ratekeeper`` comes from ``meter_provider`` (the global one when None) and
    holds:

    - ``ratekeeper.decisions``: a counter with the attributes ``ratekeeper.limit`` and
      ``ratekeeper.outcome`` (``admitted``, ``denied`` or ``shadow_denied``);
    - ``ratekeeper.wait``: a histogram, in seconds, of how long each caller waited;
    - ``ratekeeper.storage.errors`` and ``ratekeeper.storage.fallbacks``: observable
      counters read at each collection from the storages passed to :meth:`watch`.
    """

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = get_meter("ratekeeper", meter_provider=meter_provider)
        self.decisions = meter.create_counter(
            "ratekeeper.decisions",
            unit="{decision}",
            description="Decisions made for callers, by limit name and outcome.",
        )
        self.wait = meter.create_histogram(
            "ratekeeper.wait",
            unit="s",
            description="Seconds callers waited before their decision, by limit name.",
        )
        meter.create_observable_counter(
            "ratekeeper.storage.errors",
            callbacks=[self._observe_errors],
            unit="{decision}",
            description="Decisions the storage did not make (it failed, or its breaker was open).",
        )
        meter.create_observable_counter(
            "ratekeeper.storage.fallbacks",
            callbacks=[self._observe_fallbacks],
            unit="{decision}",
            description="Decisions the storage failure policy answered instead of raising.",
        )
        self._storages: list[object] = []
        self._lock = threading.Lock()
        # Attribute mappings are reused: one per (limit, outcome) instead of one per call.
        self._attributes: dict[tuple[str, str], dict[str, str]] = {}

    def __call__(self, decision: Decision) -> None:
        name = decision.limit_name
        outcome = outcome_of(decision)
        attributes = self._attributes.get((name, outcome))
        if attributes is None:
            attributes = self._attributes[name, outcome] = {LIMIT: name, OUTCOME: outcome}
        self.decisions.add(1, attributes)
        self.wait.record(decision.waited, {LIMIT: name})

    def watch(self, storage: object) -> None:
        """Report the storage failures of ``storage`` (a Redis storage) at each collection.

        Storages that cannot fail (memory) have nothing to report, and are accepted."""
        with self._lock:
            if not any(known is storage for known in self._storages):
                self._storages.append(storage)

    def failure_counts(self) -> dict[str, tuple[int, int]]:
        """(storage errors, fallbacks) per limit name, summed over the watched storages."""
        with self._lock:
            storages = list(self._storages)
        return failure_totals(storages)

    def _observe_errors(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(c[0], {LIMIT: n}) for n, c in self.failure_counts().items()]

    def _observe_fallbacks(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(c[1], {LIMIT: n}) for n, c in self.failure_counts().items()]

    def __repr__(self) -> str:
        return "OpenTelemetryMetrics()"
