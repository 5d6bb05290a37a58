"""Firing alerts, as Alertmanager knows them (its API v2), with their runbook links.

    alerts = firing_alerts(settings)            # [{"alertname", "severity", "summary", ...}]
    alerts = firing_alerts(settings, url="http://127.0.0.1:9093", include_muted=True)
    add_clearing_times(settings, alerts)        # SLO alerts: "clears": window, rule, seconds

Used by `tradelab alerts` and `tradelab status`. An unreachable Alertmanager raises
AlertmanagerUnavailable (a TradelabError) with what to do; callers that only
decorate a report (status) catch it and say "unknown".
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tradelab.errors import TradelabError

SEVERITY_ORDER = {"page": 0, "ticket": 1}


class AlertmanagerUnavailable(TradelabError):
    pass


def alertmanager_url(settings) -> str:
    """Where Alertmanager answers on this machine (its published port)."""
    from tradelab.promql import published_url

    return published_url(settings, settings.ports.alertmanager)


def firing_alerts(settings, url: str | None = None, include_muted: bool = False,
                  timeout_s: float = 3.0) -> list[dict[str, Any]]:
    """Alerts firing now, pages first, oldest first; silenced and inhibited ones only
    with `include_muted`."""
    base = (url or alertmanager_url(settings)).rstrip("/")
    query = {"active": "true"}
    if not include_muted:
        query.update(silenced="false", inhibited="false")
    address = f"{base}/api/v2/alerts?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(address, timeout=timeout_s) as response:
            raw = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AlertmanagerUnavailable(
            f"Alertmanager does not answer at {base} ({reason}); is the lab up "
            f"(`tradelab status`)? Its port is the setting ports.alertmanager"
        ) from None
    alerts = [_alert(a) for a in raw]
    return sorted(alerts, key=lambda a: (SEVERITY_ORDER.get(a["severity"], 9), a["since"],
                                         a["alertname"]))


def _alert(raw: dict[str, Any]) -> dict[str, Any]:
    labels = dict(raw.get("labels", {}))
    notes = raw.get("annotations", {})
    status = raw.get("status", {})
    return {
        "alertname": labels.get("alertname", ""),
        "severity": labels.get("severity", ""),
        "state": status.get("state", ""),  # active | suppressed
        "since": raw.get("startsAt", ""),
        "summary": notes.get("summary", ""),
        "description": notes.get("description", ""),
        "runbook_url": notes.get("runbook_url", ""),
        "labels": labels,
    }


def add_clearing_times(settings, alerts: list[dict[str, Any]],
                       prometheus: str | None = None) -> list[dict[str, Any]]:
    """Give each firing SLO burn-rate alert a "clears" entry: the rule in words, the
    window it waits on and about how many seconds after the fault ends it stops firing,
    from the error ratios Prometheus has now (tradelab.slo_policy). Without Prometheus,
    the longest it can take (`measured`: False)."""
    import math

    from tradelab import promql, slo_policy
    from tradelab.durations import parse_duration, prometheus_duration

    url = prometheus or promql.prometheus_url(settings)
    for alert in alerts:
        slo = alert["labels"].get("slo")
        policy = slo_policy.policy_for(alert["severity"])
        if not slo or policy is None or not hasattr(settings.slo, slo):
            continue
        windows = {w for c in policy.clauses for w in (c.long, c.short)}
        try:
            ratios = {w: promql.scalar(url, f'tradelab:slo_error_ratio:rate{w}{{slo="{slo}"}}')
                      for w in windows}
            bad = promql.scalar(url, f'tradelab:slo_errors:rate{slo_policy.MIN_BAD_WINDOW}'
                                     f'{{slo="{slo}"}} * '
                                     f'{slo_policy.parse_duration(slo_policy.MIN_BAD_WINDOW):g}')
            measured = True
        except TradelabError:
            ratios, bad, measured = {w: math.inf for w in windows}, math.inf, False
        scale = settings.slo.window_scale
        seconds, window = slo_policy.clears_after(policy, ratios, bad,
                                                  getattr(settings.slo, slo), scale)
        if scale != 1:  # the rule's window as it really lasts
            window = f"{window} x {scale:g} = {prometheus_duration(parse_duration(window) * scale)}"

        alert["clears"] = {"rule": slo_policy.describe(policy), "waits_on": window,
                           "after_fault_s": round(seconds), "measured": measured}
    return alerts
