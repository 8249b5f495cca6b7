"""The Prometheus and OpenTelemetry exporters, fed by a limiter's decision listener."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from prometheus_client import CollectorRegistry

from ratekeeper import DictSource, Limiter, MemoryStorage, RedisStorage
from ratekeeper._rates import PolicySpec
from ratekeeper.integrations.opentelemetry import OpenTelemetryMetrics
from ratekeeper.integrations.prometheus import PrometheusMetrics
from ratekeeper.testing import ManualClock
from tests.servers import free_port

LIMITS: dict[str, PolicySpec] = {
    "jobs": {"rate": "1/second", "algorithm": "fixed-window"},
    "new": {"rate": "1/hour", "mode": "shadow"},
}


def exercise(limiter: Limiter) -> None:
    """Two admitted decisions (one after a 1 s wait), one refusal, one shadow refusal."""
    limiter.hit("jobs")
    limiter.hit("jobs")
    limiter.acquire("jobs")
    limiter.peek("jobs")
    limiter.hit("new")
    limiter.hit("new")


def make() -> Limiter:
    clock = ManualClock(1000.0)
    return Limiter(DictSource(LIMITS), MemoryStorage(clock=clock), sleep=clock.sleep)


@pytest.fixture
def dead_storage() -> Iterator[RedisStorage]:
    """A Redis storage whose server does not exist: every decision falls back to 'allow'."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    with RedisStorage.from_url(url, on_storage_error="allow", retry_interval=60.0) as storage:
        yield storage


def test_prometheus_counts_decisions_by_limit_and_outcome() -> None:
    """decisions_total is labelled by limit and outcome; peek adds nothing."""
    registry = CollectorRegistry()
    limiter = make()
    limiter.add_listener(PrometheusMetrics(registry))
    exercise(limiter)

    def count(limit: str, outcome: str) -> float | None:
        labels = {"limit": limit, "outcome": outcome}
        return registry.get_sample_value("ratekeeper_decisions_total", labels)

    assert count("jobs", "admitted") == 2.0
    assert count("jobs", "denied") == 1.0
    assert count("new", "admitted") == 1.0
    assert count("new", "shadow_denied") == 1.0
    assert count("new", "denied") is None


def test_prometheus_histogram_holds_the_waits() -> None:
    """wait_seconds observes every decision's wait: its sum is the time callers waited."""
    registry = CollectorRegistry()
    limiter = make()
    limiter.add_listener(PrometheusMetrics(registry, buckets=(0.0, 0.5, 2.0)))
    exercise(limiter)
    sample = registry.get_sample_value
    assert sample("ratekeeper_wait_seconds_count", {"limit": "jobs"}) == 3.0
    assert sample("ratekeeper_wait_seconds_sum", {"limit": "jobs"}) == pytest.approx(1.0)
    assert sample("ratekeeper_wait_seconds_bucket", {"limit": "jobs", "le": "0.0"}) == 2.0
    assert sample("ratekeeper_wait_seconds_bucket", {"limit": "jobs", "le": "0.5"}) == 2.0
    assert sample("ratekeeper_wait_seconds_bucket", {"limit": "jobs", "le": "2.0"}) == 3.0


def test_prometheus_one_exporter_serves_several_limiters() -> None:
    """One PrometheusMetrics added to two limiters sums their decisions, under a namespace."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry, namespace="billing")
    first, second = make(), make()
    first.add_listener(metrics)
    second.add_listener(metrics)
    first.hit("jobs")
    second.hit("jobs")
    labels = {"limit": "jobs", "outcome": "admitted"}
    assert registry.get_sample_value("billing_decisions_total", labels) == 2.0


def test_prometheus_reports_watched_storage_failures(dead_storage: RedisStorage) -> None:
    """A watched Redis storage's errors and fallbacks appear at scrape time."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    limiter = Limiter(DictSource({"sns.publish": "5/second"}), dead_storage)
    limiter.add_listener(metrics)
    metrics.watch(dead_storage)
    metrics.watch(dead_storage)  # watching twice counts once
    metrics.watch(MemoryStorage())  # nothing to report, accepted
    for _ in range(2):
        limiter.hit("sns.publish")
    labels = {"limit": "sns.publish"}
    assert registry.get_sample_value("ratekeeper_storage_errors_total", labels) == 2.0
    assert registry.get_sample_value("ratekeeper_storage_fallbacks_total", labels) == 2.0


def test_opentelemetry_records_decisions_waits_and_failures(dead_storage: RedisStorage) -> None:
    """Counter, histogram and observable counters reach the SDK's in-memory reader."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = OpenTelemetryMetrics(provider)
    limiter = make()
    limiter.add_listener(metrics)
    exercise(limiter)
    failing = Limiter(DictSource({"sns.publish": "5/second"}), dead_storage)
    metrics.watch(dead_storage)
    failing.hit("sns.publish")

    data = reader.get_metrics_data()
    assert data is not None
    found = {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    decisions = {
        (p.attributes["ratekeeper.limit"], p.attributes["ratekeeper.outcome"]): p.value
        for p in found["ratekeeper.decisions"].data.data_points
        if isinstance(p, NumberDataPoint) and p.attributes is not None
    }
    assert decisions == {
        ("jobs", "admitted"): 2,
        ("jobs", "denied"): 1,
        ("new", "admitted"): 1,
        ("new", "shadow_denied"): 1,
    }
    waits = {
        p.attributes["ratekeeper.limit"]: (p.count, p.sum)
        for p in found["ratekeeper.wait"].data.data_points
        if isinstance(p, HistogramDataPoint) and p.attributes is not None
    }
    count, total = waits["jobs"]
    assert count == 3
    assert total == pytest.approx(1.0)
    assert found["ratekeeper.wait"].unit == "s"
    for name in ("ratekeeper.storage.errors", "ratekeeper.storage.fallbacks"):
        points = [p for p in found[name].data.data_points if isinstance(p, NumberDataPoint)]
        assert [(p.attributes, p.value) for p in points] == [
            ({"ratekeeper.limit": "sns.publish"}, 1)
        ]
    provider.shutdown()


@pytest.mark.parametrize(
    ("module", "package", "extra"),
    [
        ("ratekeeper.integrations.prometheus", "prometheus_client", "ratekeeper[prometheus]"),
        ("ratekeeper.integrations.opentelemetry", "opentelemetry.metrics", "ratekeeper[otel]"),
    ],
)
def test_missing_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, package: str, extra: str
) -> None:
    """Without its package, importing an exporter is an ImportError naming the extra."""
    monkeypatch.setitem(sys.modules, package, None)
    monkeypatch.delitem(sys.modules, module)
    with pytest.raises(ImportError, match=re.escape(f"pip install '{extra}'")):
        importlib.import_module(module)
