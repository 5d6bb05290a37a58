"""The API's Prometheus metrics, correct across gunicorn workers.

    m = api_metrics(latency_threshold_s=0.25)   # one set per process
    m.requests.labels("POST", "/trades", "201").inc()
    body, content_type = render_metrics(extra_collectors=[ChaosCollector(reader)])

Under gunicorn every worker writes its samples to files in PROMETHEUS_MULTIPROC_DIR
(prometheus_client's multiprocess mode, set before prometheus_client is imported)
and /metrics sums them with a MultiProcessCollector, whichever worker answers.
Values that are a fact at scrape time (chaos faults, database up, build info) are
not stored per worker: collectors compute them when /metrics is asked.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

BASE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def latency_buckets(threshold_s: float) -> tuple[float, ...]:
    """The standard buckets plus one exactly at the latency SLO threshold."""
    return tuple(sorted(set(BASE_BUCKETS) | {float(threshold_s)}))


@dataclass(frozen=True)
class ApiMetrics:
    requests: Any
    duration: Any
    orders_received: Any
    pool_size: Any
    pool_available: Any
    pool_waiting: Any
    replays: Any  # POST /trades answered with the trade its key already made (a 200)
    lock_timeouts: Any
    _pool_written: dict[str, tuple[int, int, int]] = field(default_factory=dict,
                                                           compare=False)

    def observe_pool(self, stats: dict[str, int]) -> None:
        """Record this worker's pool stats (summed over live workers at scrape).
        Called after every request: the gauges are written only when a value changed
        (each write is a locked mmap write in multiprocess mode)."""
        values = (stats.get("pool_size", 0), stats.get("pool_available", 0),
                  stats.get("requests_waiting", 0))
        if self._pool_written.get("last") == values:
            return
        self._pool_written["last"] = values
        self.pool_size.set(values[0])
        self.pool_available.set(values[1])
        self.pool_waiting.set(values[2])


_metrics: ApiMetrics | None = None
_metrics_lock = threading.Lock()


def api_metrics(latency_threshold_s: float = 0.25) -> ApiMetrics:
    """The process's metric objects, created on first use (a registry forbids twins;
    later calls get the first set, buckets included)."""
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = _create(latency_threshold_s)
        return _metrics


def _create(latency_threshold_s: float) -> ApiMetrics:
    from prometheus_client import Counter, Gauge, Histogram

    return ApiMetrics(
        requests=Counter("tradelab_http_requests_total", "HTTP requests answered",
                         ["method", "route", "code"]),
        duration=Histogram("tradelab_http_request_duration_seconds",
                           "Time to answer an HTTP request", ["method", "route"],
                           buckets=latency_buckets(latency_threshold_s)),
        orders_received=Counter("tradelab_orders_received_total",
                                "Orders accepted and stored (new trades)", ["source"]),
        pool_size=Gauge("tradelab_db_pool_size", "Database connections open in the pools",
                        multiprocess_mode="livesum"),
        pool_available=Gauge("tradelab_db_pool_available",
                             "Idle database connections in the pools",
                             multiprocess_mode="livesum"),
        pool_waiting=Gauge("tradelab_db_pool_waiting",
                           "Requests waiting for a database connection",
                           multiprocess_mode="livesum"),
        replays=Counter("tradelab_idempotent_replays_total",
                        "Orders sent again with a key already stored (answered 200, "
                        "nothing new stored)"),
        lock_timeouts=Counter("tradelab_db_lock_timeouts_total",
                              "Statements that gave up waiting for a lock (lock_timeout)"),
    )


class ScrapeTimeCollector:
    """tradelab_db_up and tradelab_build_info, computed when /metrics is asked."""

    def __init__(self, db_up: Callable[[], bool], version: str) -> None:
        self.db_up = db_up
        self.version = version

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("tradelab_db_up", "1 when the database answers the API, else 0",
                                value=1.0 if self.db_up() else 0.0)
        info = GaugeMetricFamily("tradelab_build_info", "The running tradelab version (always 1)",
                                 labels=["version"])
        info.add_metric([self.version], 1.0)
        yield info


def multiprocess_dir() -> str | None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return path if path and os.path.isdir(path) else None


def render_metrics(extra_collectors: Iterable[Any] = ()) -> tuple[bytes, str]:
    """The text exposition: all workers' samples when in multiprocess mode, plus extras."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        for collector in extra_collectors:
            registry.register(collector)
        return generate_latest(registry), CONTENT_TYPE_LATEST

    # Single process (the Flask test client, `flask run`): the default registry.
    registry = CollectorRegistry()
    registry.register(_Forward(REGISTRY))
    for collector in extra_collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Forward:
    """The default registry's metrics inside a per-scrape registry."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self):
        yield from self.registry.collect()
