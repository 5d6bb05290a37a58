"""The SLO alerting policy: which burn rates over which windows page or open a ticket.

    for alert in BURN_ALERTS:          # rendered into prometheus/rules/slo.yml
        alert.suffix, alert.severity, alert.clauses   # [BurnClause(14.4, "1h", "5m"), ...]
    clears_after(alert, ratios, bad_5m, target)   # seconds until it clears once the fault ends

The rule template (templates/prometheus/rules/slo.yml) and `tradelab alerts` both read
this module, so the windows an alert is said to wait on are the ones it really uses.
Multi-window, multi-burn-rate in the manner of the Google SRE Workbook, table 5-8.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tradelab.durations import parse_duration

WINDOWS = ("5m", "30m", "1h", "6h", "3d")  # error ratios recorded for each SLO
MIN_BAD = 3  # a page also wants this many bad events in 5 minutes (docs/slo.md)
MIN_BAD_WINDOW = "5m"


@dataclass(frozen=True)
class BurnClause:
    """Burn `factor` times the budget over both the long and the short window."""

    factor: float
    long: str
    short: str


@dataclass(frozen=True)
class BurnAlert:
    suffix: str  # the alert is <SLO's alert prefix><suffix>, e.g. OrderAcceptanceBurnRateHigh
    severity: str
    clauses: tuple[BurnClause, ...]  # any clause fires the alert
    min_bad: int | None  # and this many bad events in MIN_BAD_WINDOW, when set


BURN_ALERTS = (
    BurnAlert("BurnRateHigh", "page",
              (BurnClause(14.4, "1h", "5m"), BurnClause(6, "6h", "30m")), MIN_BAD),
    BurnAlert("BudgetBurn", "ticket", (BurnClause(1, "3d", "6h"),), None),
)


def policy_for(severity: str) -> BurnAlert | None:
    return next((a for a in BURN_ALERTS if a.severity == severity), None)


def clears_after(alert: BurnAlert, ratios: Mapping[str, float | None], bad_5m: float | None,
                 target: float, scale: float = 1.0) -> tuple[float, str]:
    """(seconds, window) until `alert` stops firing if the fault ended now, and the window
    that decides it. Traffic is taken as steady and the bad events as spread over the
    window: once they stop, a window's error ratio falls linearly to 0 over the window's
    length, so it is under a threshold k after window * (1 - k / ratio now). For a fault
    that already ended (or was shorter than the window) this is an upper bound. A clause
    holds while both its windows do, the alert while any clause does (and, for a page,
    while MIN_BAD bad events remain). `scale` is settings.slo.window_scale: the rules'
    windows, named as unscaled (rate5m), last `scale` times as long."""
    def until_under(window: str, threshold: float, now: float | None) -> float:
        if now is None or now <= threshold:
            return 0.0
        return parse_duration(window) * scale * (1 - threshold / now)

    per_clause = []
    for clause in alert.clauses:
        k = clause.factor * (1 - target)
        per_clause.append(min((until_under(w, k, ratios.get(w)), w)
                              for w in (clause.long, clause.short)))
    seconds, window = max(per_clause)
    if alert.min_bad is not None:
        gate = (until_under(MIN_BAD_WINDOW, alert.min_bad - 1e-9, bad_5m), MIN_BAD_WINDOW)
        seconds, window = min((seconds, window), gate)
    return seconds, window


def describe(alert: BurnAlert) -> str:
    """The rule in words: 'burn 14.4x over 1h and 5m, or 6x over 6h and 30m'."""
    clauses = ", or ".join(f"burn {c.factor:g}x over {c.long} and {c.short}"
                           for c in alert.clauses)
    gate = f", with {alert.min_bad}+ bad events in {MIN_BAD_WINDOW}" if alert.min_bad else ""
    return clauses + gate
