"""Figure 4: /metrics scrape time with 4 gunicorn workers, against a single-process registry.

    python -m bench --only metrics

Starts the real API with 4 workers on the run's PostgreSQL, puts 10k orders through it
(wrk, bench/orders.lua; --quick: 200), then times:
- GET /metrics over HTTP (what Prometheus sees: any worker answers, summing every
  worker's files);
- the same exposition built in this process with prometheus_client's
  MultiProcessCollector over the API's PROMETHEUS_MULTIPROC_DIR;
- the baseline: the same metric families, label sets and buckets in an ordinary
  (single-process) CollectorRegistry, rendered with generate_latest.
"""

from __future__ import annotations

import shutil
import sys
import time

from bench.api_throughput import count_trades, wrk
from bench.harness import (
    BenchError,
    Figure,
    Run,
    clean_env,
    free_port,
    median,
    percentile,
    wait_http,
)

WORKERS = 4

LIMITS = """\
In multiprocess mode every scrape opens and parses every worker's mmap file (one per
process and metric type; dead workers' files stay until the directory is cleaned) and
merges the samples in Python, so a scrape costs in proportion to workers x series; a
single-process registry just walks its objects. Over HTTP the scrape also pays a
Flask request in a worker that competes with the order traffic."""


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def plain_registry_like(text: str):
    """An ordinary CollectorRegistry with the families, label sets and buckets of `text`."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry()
    for family in text_string_to_metric_families(text):
        samples = family.samples
        labelnames = sorted({k for s in samples for k in s.labels if k != "le"})
        if family.type == "counter":
            metric = Counter(family.name, family.documentation or "-", labelnames,
                             registry=registry)
            for s in samples:
                if s.name.endswith("_total"):
                    (metric.labels(**s.labels) if labelnames else metric).inc(s.value)
        elif family.type == "histogram":
            buckets = sorted({float(s.labels["le"]) for s in samples
                              if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"})
            metric = Histogram(family.name, family.documentation or "-", labelnames,
                               buckets=buckets, registry=registry)
            for s in samples:
                if s.name.endswith("_count"):
                    (metric.labels(**s.labels) if labelnames else metric).observe(0.01)
        elif family.type == "gauge":
            metric = Gauge(family.name, family.documentation or "-", labelnames,
                           registry=registry)
            for s in samples:
                (metric.labels(**s.labels) if labelnames else metric).set(s.value)
    return registry


def run_figure(run: Run) -> Figure:
    import requests
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    fig = Figure("metrics", f"/metrics: scrape time with {WORKERS} workers",
                 goal="no goal set in the issue; the ratio says what multiprocess mode costs",
                 limits=LIMITS)
    if not shutil.which("wrk"):
        fig.skipped = "wrk not found (apt-get install wrk)"
        return fig
    db_url, port = run.database("bench_metrics"), free_port()
    prom_dir = run.root / "prom-metrics"
    prom_dir.mkdir()
    api = run.spawn([sys.executable, "-m", "tradelab", "serve", "api", "--bind",
                     f"127.0.0.1:{port}", "--workers", str(WORKERS), "--threads", "2"],
                    "api-metrics",
                    env=clean_env(TRADELAB_HOME=str(run.root / "lab-metrics"),
                                  TRADELAB_DATABASE_URL=db_url,
                                  PROMETHEUS_MULTIPROC_DIR=str(prom_dir)))
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz", api)
    wanted, chunk = run.size(10_000, 200), 0
    while (have := count_trades(db_url)) < wanted:
        wrk(base, 16, 2 if run.quick else 4, f"metrics-{chunk}")
        chunk += 1
        if chunk > 60:
            raise BenchError(f"only {have} of {wanted} orders went in; see the api log:\n"
                             + run.log_tail("api-metrics"))
    samples = run.size(50, 5)
    requests.get(base + "/metrics", timeout=10)  # warm
    http_ms = timed(lambda: requests.get(base + "/metrics", timeout=10).raise_for_status(),
                    samples)

    def multiprocess_render() -> bytes:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(prom_dir))
        return generate_latest(registry)

    text = multiprocess_render().decode()
    plain = plain_registry_like(text)
    multi_ms = timed(multiprocess_render, samples)
    plain_ms = timed(lambda: generate_latest(plain), samples)
    files = len(list(prom_dir.glob("*.db")))
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    p50_plain = percentile(plain_ms, 50)
    fig.row("multiprocess collect + render (in process), p50", round(percentile(multi_ms, 50),
            2), "ms", baseline=round(p50_plain, 3), baseline_name="single-process registry",
            note=f"p99 {percentile(multi_ms, 99):.2f} ms")
    fig.row("GET /metrics over HTTP, p50", round(percentile(http_ms, 50), 2), "ms",
            baseline=round(p50_plain, 3), baseline_name="single-process registry",
            note=f"p99 {percentile(http_ms, 99):.2f} ms")
    fig.row("single-process registry, same series, p50", round(p50_plain, 3), "ms",
            note=f"p99 {percentile(plain_ms, 99):.3f} ms")
    fig.notes.append(f"{count_trades(db_url):,} orders through {WORKERS} workers; "
                     f"{files} multiprocess files, {series} samples in the exposition, "
                     f"{len(text):,} bytes; {samples} scrapes each (median of HTTP: "
                     f"{median(http_ms):.2f} ms). Lower is better: the ratio is how many "
                     "times the single-process cost.")
    return fig
