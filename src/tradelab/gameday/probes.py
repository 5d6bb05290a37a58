"""Chaos Toolkit probes: the lab's steady state, read from its Prometheus and Alertmanager.

    {"type": "probe", "name": "slis-within-objective", "tolerance": true,
     "provider": {"type": "python", "module": "tradelab.gameday.probes",
                  "func": "slis_within_objective"}}

An SLI is "within objective" when it is not burning error budget at page speed over
the short window (the 5m one, times slo.window_scale): its error ratio is at most
14.4 x (1 - objective), or the window holds fewer than 3 bad events (the noise guard the
burn-rate alerts themselves use, docs/slo.md). A window with no traffic is within.
"""

from __future__ import annotations

import math
from typing import Any

from tradelab.gameday.context import lab_of, log

FAST_BURN = 14.4  # the page threshold of templates/prometheus/rules/slo.yml
MIN_BAD_EVENTS = 3


def sli_values(configuration: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """slo -> {"error_ratio", "allowed", "bad_events", "within"} over the short window."""
    from tradelab.gameday.prometheus import query

    settings, _lab = lab_of(configuration)
    window_s = 300 * settings.slo.window_scale
    objectives = {r["metric"].get("slo"): r["value"]
                  for r in query(settings, "tradelab:slo_objective")}
    ratios = {r["metric"].get("slo"): r["value"]
              for r in query(settings, "tradelab:slo_error_ratio:rate5m")}
    errors = {r["metric"].get("slo"): r["value"]
              for r in query(settings, "tradelab:slo_errors:rate5m")}
    out = {}
    for slo, objective in sorted(objectives.items()):
        ratio = ratios.get(slo, math.nan)
        bad = errors.get(slo, 0.0) * window_s
        allowed = FAST_BURN * (1 - objective)
        within = math.isnan(ratio) or ratio <= allowed or not bad >= MIN_BAD_EVENTS
        out[slo] = {"error_ratio": None if math.isnan(ratio) else round(ratio, 6),
                    "allowed": round(allowed, 6),
                    "bad_events": None if math.isnan(bad) else round(bad, 1),
                    "within": within}
    return out


def slis_within_objective(configuration: dict[str, Any] | None = None) -> bool:
    """True when every SLO's SLI is within objective (see the module docstring)."""
    values = sli_values(configuration)
    outside = {slo: v for slo, v in values.items() if not v["within"]}
    for slo, v in outside.items():
        log.info(f"SLI {slo} outside objective: error ratio {v['error_ratio']} > "
                 f"{v['allowed']} ({v['bad_events']} bad events in the short window)")
    return bool(values) and not outside


def pages_firing(configuration: dict[str, Any] | None = None) -> list[str]:
    """Names of the page-severity alerts Alertmanager holds now (silenced ones too)."""
    from tradelab.alerts import firing_alerts

    settings, _lab = lab_of(configuration)
    return sorted({a["alertname"] for a in firing_alerts(settings, include_muted=True)
                   if a["severity"] == "page"})


def no_page_firing(configuration: dict[str, Any] | None = None) -> bool:
    pages = pages_firing(configuration)
    if pages:
        log.info(f"paging now: {', '.join(pages)}")
    return not pages


def alert_firing(alert: str, configuration: dict[str, Any] | None = None) -> bool:
    """Is `alert` (an alertname) active in Alertmanager right now?"""
    from tradelab.alerts import firing_alerts

    settings, _lab = lab_of(configuration)
    return any(a["alertname"] == alert for a in firing_alerts(settings, include_muted=True))
