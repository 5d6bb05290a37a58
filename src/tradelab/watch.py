"""The golden signals and the SLO burn, read live from the lab's Prometheus.

    snapshot = read_signals(settings)        # one frame: {"signals", "burn", "alerts", ...}
    snapshot["signals"]["trade_failure_ratio"]["value"]   # 0.6 while exchange-errors is on
    SIGNALS, burn_queries()                  # every PromQL query `tradelab watch` runs

Rates are over the last minute (the golden signals react within a scrape or two); the
burn rates are the SLO error ratios Prometheus records (tradelab:slo_error_ratio:rate*)
divided by the error budget, over the windows the page and ticket alerts use
(tradelab.slo_policy), each next to the burn rate at which its alert fires.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tradelab import promql, slo_policy

POST_TRADES = 'method="POST",route="/trades"'


@dataclass(frozen=True)
class Signal:
    key: str
    label: str
    unit: str  # "/s", "%", "ms", "", "s"
    expr: str


SIGNALS = (
    Signal("order_rate", "orders accepted (POST /trades)", "/s",
           f'sum(rate(tradelab_http_requests_total{{{POST_TRADES}}}[1m]))'),
    Signal("trades_processed", "trades processed by the engine", "/s",
           "sum(rate(tradelab_trades_processed_total[1m]))"),
    Signal("api_error_ratio", "POST /trades answered 5xx", "%",
           f'(sum(rate(tradelab_http_requests_total{{{POST_TRADES},code=~"5.."}}[1m])) '
           f"or vector(0)) / sum(rate(tradelab_http_requests_total{{{POST_TRADES}}}[1m]))"),
    Signal("trade_failure_ratio", "trades that ended FAILED", "%",
           '(sum(rate(tradelab_trades_processed_total{status="FAILED"}[1m])) or vector(0)) '
           "/ sum(rate(tradelab_trades_processed_total[1m]))"),
    Signal("p99_latency", "p99 latency of POST /trades", "ms",
           "1000 * histogram_quantile(0.99, sum by (le) (rate("
           f"tradelab_http_request_duration_seconds_bucket{{{POST_TRADES}}}[1m])))"),
    Signal("backlog", "orders waiting for the engine", "",
           "sum(tradelab_order_backlog)"),
    Signal("oldest_pending_age", "oldest pending order", "s",
           "max(tradelab_oldest_pending_order_age_seconds)"),
)
ALERTS_EXPR = 'ALERTS{alertstate="firing"}'


def burn_windows() -> list[tuple[str, float, str]]:
    """(window, burn rate at which its alert fires, severity), shortest window first."""
    found: dict[str, tuple[float, str]] = {}
    for alert in slo_policy.BURN_ALERTS:
        for clause in alert.clauses:
            for window in (clause.long, clause.short):
                found.setdefault(window, (clause.factor, alert.severity))
    return sorted(((w, f, s) for w, (f, s) in found.items()),
                  key=lambda row: slo_policy.parse_duration(row[0]))


def burn_queries() -> dict[str, str]:
    """window -> the query of every SLO's burn rate over it (one series per slo)."""
    return {w: f"tradelab:slo_error_ratio:rate{w} / on (slo) (1 - tradelab:slo_objective)"
            for w, _factor, _severity in burn_windows()}


def read_signals(settings, url: str | None = None) -> dict[str, Any]:
    """One frame of `tradelab watch`, every number read from Prometheus now."""
    url = url or promql.prometheus_url(settings)
    signals = {s.key: {"label": s.label, "unit": s.unit, "value": promql.scalar(url, s.expr)}
               for s in SIGNALS}
    burn: dict[str, dict[str, Any]] = {}
    for (window, factor, severity), expr in zip(burn_windows(), burn_queries().values(),
                                                strict=True):
        for labels, value in promql.query(url, expr):
            slo = labels.get("slo", "?")
            row = burn.setdefault(slo, {})
            row[window] = {"burn": None if value != value else round(value, 2),  # NaN: no traffic
                           "fires_at": factor, "severity": severity}
    alerts = sorted({(labels.get("severity", ""), labels.get("alertname", ""),
                      labels.get("slo", "")) for labels, _v in promql.query(url, ALERTS_EXPR)})
    return {"prometheus": url, "time": time.time(), "signals": signals,
            "burn": dict(sorted(burn.items())),
            "alerts": [{"severity": s, "alertname": a, "slo": slo or None}
                       for s, a, slo in alerts]}
