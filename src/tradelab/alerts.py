"""Firing alerts, as Alertmanager knows them (its API v2), with their runbook links.

    alerts = firing_alerts(settings)            # [{"alertname", "severity", "summary", ...}]
    alerts = firing_alerts(settings, url="http://127.0.0.1:9093", include_muted=True)

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
    host = settings.bind_address
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.ports.alertmanager}"


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
