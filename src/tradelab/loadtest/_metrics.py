"""The Locust master's /metrics: its live stats in Prometheus text format.

    body, status, content_type = render(environment)   # served by _hooks at /metrics

A custom collector reads Locust's own stats at scrape time (nothing is double-counted
and nothing runs between scrapes). `name` is Locust's request name, bounded by the
locustfiles ("/trades/[id]", never an id); the row name="Aggregated" is the total.
Every metric is listed in docs/load.md; the "Load test" dashboard is built on them.
"""

from __future__ import annotations

from _orders import COUNTERS
from locust.runners import MasterRunner

STATES = ("ready", "spawning", "running", "cleanup", "stopping", "stopped", "missing")
QUANTILES = (0.5, 0.95, 0.99)


def render(environment) -> tuple[bytes, int, str]:
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    except ImportError:
        return (b"prometheus_client is not installed where the Locust master runs: "
                b"pip install prometheus_client\n", 503, "text/plain; charset=utf-8")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LocustCollector(environment))
    return generate_latest(registry), 200, CONTENT_TYPE_LATEST


class LocustCollector:
    def __init__(self, environment) -> None:
        self.environment = environment

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        runner = self.environment.runner
        state = getattr(runner, "state", "missing")
        yield _family(GaugeMetricFamily, "locust_state", "1 for the runner's current state.",
                     ["state"], [((s,), float(s == state)) for s in STATES])
        if runner is None:
            return
        yield _family(GaugeMetricFamily, "locust_users", "Running users.",
                     [], [((), runner.user_count)])
        yield _family(GaugeMetricFamily, "locust_target_users",
                     "Users asked for (by -u, /swarm or the load shape).",
                     [], [((), getattr(runner, "target_user_count", None) or 0)])
        by_class = getattr(runner, "user_classes_count", {}) or {}
        yield _family(GaugeMetricFamily, "locust_user_class_users", "Running users by class.",
                     ["user_class"], [((k,), v) for k, v in sorted(by_class.items())])
        if isinstance(runner, MasterRunner):
            yield _family(GaugeMetricFamily, "locust_workers", "Connected workers.",
                         [], [((), runner.worker_count)])
        yield _family(GaugeMetricFamily, "locust_fail_ratio",
                     "Failed requests / all requests since the run started.",
                     [], [((), runner.stats.total.fail_ratio)])

        entries = [*runner.stats.entries.values(), runner.stats.total]
        rows = [((e.method or "", e.name), e) for e in entries]
        yield _family(CounterMetricFamily, "locust_requests", "Requests sent.",
                       ["method", "name"], [(k, e.num_requests) for k, e in rows])
        yield _family(CounterMetricFamily, "locust_failures", "Requests that failed.",
                       ["method", "name"], [(k, e.num_failures) for k, e in rows])
        yield _family(GaugeMetricFamily, "locust_requests_per_second",
                     "Requests per second over the last few seconds.",
                     ["method", "name"], [(k, e.current_rps) for k, e in rows])
        yield _family(GaugeMetricFamily, "locust_failures_per_second",
                     "Failures per second over the last few seconds.",
                     ["method", "name"], [(k, e.current_fail_per_sec) for k, e in rows])
        yield _family(GaugeMetricFamily, "locust_response_time_seconds",
                     "Response time percentiles over the last 10 seconds.",
                     ["method", "name", "quantile"],
                     [((*k, str(q)), _current_percentile(e, q)) for k, e in rows
                      for q in QUANTILES])
        yield _family(GaugeMetricFamily, "locust_response_time_avg_seconds",
                     "Mean response time since the run started.",
                     ["method", "name"], [(k, e.avg_response_time / 1000) for k, e in rows])

        yield _family(CounterMetricFamily, "tradelab_load_orders",
                       "Orders by outcome: attempted (sent with a new client_order_id), "
                       "acknowledged (201/200), retried (a 503 retried with the same key), "
                       "resent (sent again at once with its key: the retry-storm fault).",
                       ["outcome"], [((k,), v) for k, v in sorted(COUNTERS.orders.items())])
        yield _family(CounterMetricFamily, "tradelab_load_responses",
                       "Responses by status code (0: no response).",
                       ["method", "name", "code"], sorted(COUNTERS.responses.items()))
        run_id = getattr(self.environment.parsed_options, "tradelab_run_id", "")
        if run_id:
            yield _family(GaugeMetricFamily, "tradelab_load_run_info",
                         "The current run's id (it names the order ledgers).",
                         ["run_id"], [((run_id,), 1)])


def _current_percentile(entry, quantile: float) -> float:
    try:
        ms = entry.get_current_response_time_percentile(quantile)
    except ValueError:  # stats kept without the sliding window
        ms = entry.get_response_time_percentile(quantile)
    return (ms or 0) / 1000


def _family(cls, name, doc, labels, samples):
    family = cls(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(list(values), float(value))
    return family
