"""A drill's red herrings: harmless events a responder can see, and must not chase.

    herring = RED_HERRINGS[0]                 # {"kind": "warning-logs", "summary": ...}
    play_red_herring(settings, lab, herring)  # from the watcher, at its planned time
    end_red_herring(settings, herring)        # at the drill's end (resolves a ticket)

- warning-logs: a burst of invalid orders sent to the API, which refuses each (400)
  and logs a warning: visible in `tradelab logs api` and the logs dashboard, no trade
  made, no SLO touched (client errors are not the service's).
- ticket-alert: a ticket (not a page) posted to Alertmanager for a while.

Each is played for real in the lab, never only written in the drill's records.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

RED_HERRINGS: tuple[dict[str, Any], ...] = (
    {"kind": "warning-logs", "summary": "a burst of warning logs from the api "
                                        "(a client sending invalid orders)"},
    {"kind": "ticket-alert", "alertname": "CertificateExpiresSoon",
     "summary": "a certificate expires in 20 days"},
)
WARNING_BURST = 25  # invalid orders, so the warnings stand out of the api's log
TICKET_MINUTES = 30


def play_red_herring(settings: Any, lab: Any, herring: dict[str, Any]) -> dict[str, Any]:
    """Play `herring` in the lab; what it did, for the drill's event."""
    if herring["kind"] == "warning-logs":
        return {"refused_orders": _send_invalid_orders(settings, WARNING_BURST)}
    post_ticket(settings, herring, minutes=TICKET_MINUTES)
    return {"alertname": herring["alertname"]}


def end_red_herring(settings: Any, herring: dict[str, Any]) -> None:
    if herring["kind"] == "ticket-alert":
        post_ticket(settings, herring, minutes=0)


def _send_invalid_orders(settings: Any, count: int) -> int:
    """POST `count` orders the API must refuse (side HOLD, quantity 0); how many it did."""
    refused = 0
    for n in range(count):
        body = {"client_order_id": f"drill-herring-{n}", "symbol": settings.symbols[0],
                "side": "HOLD", "quantity": 0}
        request = urllib.request.Request(
            f"http://127.0.0.1:{settings.ports.api}/trades", data=json.dumps(body).encode(),
            method="POST", headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=3).close()
        except urllib.error.HTTPError as exc:
            refused += exc.code == 400
        except OSError:
            break  # the api is away (the incident, maybe): the herring is smaller
    return refused


def post_ticket(settings: Any, herring: dict[str, Any], minutes: float) -> None:
    """Post (or, with minutes=0, resolve) the harmless ticket alert in Alertmanager."""
    from tradelab.alerts import alertmanager_url

    now = datetime.now(UTC)
    body = [{
        "labels": {"alertname": herring["alertname"], "severity": "ticket"},
        "annotations": {"summary": herring["summary"]},
        "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=minutes)).isoformat()
        if minutes else now.isoformat(),
    }]
    request = urllib.request.Request(f"{alertmanager_url(settings)}/api/v2/alerts",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=3).close()
    except OSError:
        pass  # a red herring nobody can see is no harm
