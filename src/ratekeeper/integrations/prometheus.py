"""Prometheus metrics for ratekeeper decisions, fed by a limiter's decision listener.

This lives under ``integrations`` because it is built, like the boto3 integration, only on
the limiter's public surface (:meth:`~ratekeeper.Limiter.add_listener`, a storage's
``failure_counts``) and needs an extra of its own: ``pip install 'ratekeeper[prometheus]'``.

>>> from prometheus_client import CollectorRegistry
>>> from ratekeeper import DictSource, Limiter
>>> from ratekeeper.integrations.prometheus import PrometheusMetrics
>>> registry = CollectorRegistry()
>>> limiter = Limiter(DictSource({"jobs": "1/minute"}))
>>> limiter.add_listener(PrometheusMetrics(registry))
>>> _ = limiter.hit("jobs"), limiter.hit("jobs")
>>> registry.get_sample_value(
...     "ratekeeper_decisions_total", {"limit": "jobs", "outcome": "denied"})
1.0

Metrics are labelled by limit name only, never by key: keys are often user or tenant ids,
and one time series per key would grow without bound.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client.core import CounterMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "the Prometheus exporter needs prometheus_client: pip install 'ratekeeper[prometheus]'"
    ) from exc

from ratekeeper._decision import Decision
from ratekeeper._observe import failure_totals, outcome_of

__all__ = ["WAIT_BUCKETS", "PrometheusMetrics"]

# Waits run from "none" (most calls) through pacing intervals to a caller's whole budget.
WAIT_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class PrometheusMetrics:
    """A decision listener that counts decisions and wait times in Prometheus metrics.

    Add it to one limiter or several with ``limiter.add_listener(metrics)``. It registers
    in ``registry`` (the default registry of ``prometheus_client`` when None), under names
    that start with ``namespace``:

    - ``<namespace>_decisions_total{limit, outcome}``: a counter; ``outcome`` is
      ``admitted``, ``denied`` or ``shadow_denied`` (refused by a shadow-mode limit, and
      let through);
    - ``<namespace>_wait_seconds{limit}``: a histogram of how long each caller waited
      (0 for most), with ``buckets``;
    - ``<namespace>_storage_errors_total{limit}`` and
      ``<namespace>_storage_fallbacks_total{limit}``: read at scrape time from the storages
      passed to :meth:`watch` (decisions Redis did not make; those the failure policy
      answered instead of raising).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "ratekeeper",
        buckets: Sequence[float] = WAIT_BUCKETS,
    ) -> None:
        chosen = REGISTRY if registry is None else registry
        self._namespace = namespace
        self.decisions = Counter(
            "decisions",
            "Decisions made for callers, by limit name and outcome.",
            ["limit", "outcome"],
            namespace=namespace,
            registry=chosen,
        )
        self.wait = Histogram(
            "wait_seconds",
            "Seconds callers waited before their decision, by limit name.",
            ["limit"],
            namespace=namespace,
            registry=chosen,
            buckets=tuple(buckets),
        )
        self._storages: list[object] = []
        self._storages_lock = threading.Lock()
        chosen.register(_FailureCollector(self))

    def __call__(self, decision: Decision) -> None:
        name = decision.limit_name
        self.decisions.labels(name, outcome_of(decision)).inc()
        self.wait.labels(name).observe(decision.waited)

    def watch(self, storage: object) -> None:
        """Report the storage failures of ``storage`` (a Redis storage) at each scrape.

        Storages that cannot fail (memory) have nothing to report, and are accepted."""
        with self._storages_lock:
            if not any(known is storage for known in self._storages):
                self._storages.append(storage)

    def failure_counts(self) -> dict[str, tuple[int, int]]:
        """(storage errors, fallbacks) per limit name, summed over the watched storages."""
        with self._storages_lock:
            storages = list(self._storages)
        return failure_totals(storages)

    def __repr__(self) -> str:
        return f"PrometheusMetrics(namespace={self._namespace!r})"


class _FailureCollector(Collector):
    """Reads the watched storages' failure counts when Prometheus scrapes."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        prefix = self._metrics._namespace
        errors = CounterMetricFamily(
            f"{prefix}_storage_errors",
            "Decisions the storage did not make (it failed, or its breaker was open).",
            labels=["limit"],
        )
        fallbacks = CounterMetricFamily(
            f"{prefix}_storage_fallbacks",
            "Decisions the storage failure policy answered instead of raising.",
            labels=["limit"],
        )
        for name, (error_count, fallback_count) in sorted(self._metrics.failure_counts().items()):
            errors.add_metric([name], error_count)
            fallbacks.add_metric([name], fallback_count)
        yield errors
        yield fallbacks

    def describe(self) -> Iterator[Metric]:
        # Describing without reading the storages keeps registration free of I/O.
        prefix = self._metrics._namespace
        yield CounterMetricFamily(f"{prefix}_storage_errors", "", labels=["limit"])
        yield CounterMetricFamily(f"{prefix}_storage_fallbacks", "", labels=["limit"])
