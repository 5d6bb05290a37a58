"""The operator's levers: halt/resume, route, restart and requeue (`tradelab ops ...`).

    halt(settings, lab, symbol="AAPL")         # the kill switch (None: every symbol)
    resume(settings, lab)                      # lift every halt
    route(settings, lab, "beta")               # fail every symbol over to venue beta
    restart(settings, lab, "engine")           # through the running lab's runtime, until healthy
    requeue(url, stuck_for_s=120)              # NEW orders older than that, first in line, once
    lever_status(settings, lab)                # halts and the effective route per symbol

Halts and routes are written to <lab>/state/levers.json (tradelab.levers_state), which
the api and engine poll: no restart, effect within about a second. Every function
returns a JSON-ready dict; the CLI prints it. Each lever is recorded in the audit log
by the CLI's dispatch (tradelab.audit).
"""

from __future__ import annotations

import time
from typing import Any

from tradelab.errors import TradelabError
from tradelab.levers_state import ALL, LEVERS_FILE, LeverStore, venue_for

RESTARTABLE = ("api", "engine", "postgres", "prometheus", "alertmanager", "grafana", "loki",
               "promtail", "alloy", "locust-master", "locust-worker")


def store_for(lab: Any) -> LeverStore:
    from tradelab.chaos_state import state_file_from_env

    return LeverStore(state_file_from_env(LEVERS_FILE, lab))


def _symbol(settings: Any, symbol: str | None) -> str | None:
    if symbol is None:
        return None
    symbol = symbol.upper()
    if symbol not in settings.symbols:
        raise TradelabError(f"unknown symbol {symbol!r}: use one of {', '.join(settings.symbols)}")
    return symbol


def halt(settings: Any, lab: Any, symbol: str | None = None,
         reason: str | None = None) -> dict[str, Any]:
    symbol = _symbol(settings, symbol)
    halts = store_for(lab).halt(symbol, reason)
    return {"halted": symbol or "ALL", "halts": _halts_out(halts)}


def resume(settings: Any, lab: Any, symbol: str | None = None) -> dict[str, Any]:
    symbol = _symbol(settings, symbol)
    store = store_for(lab)
    if symbol is not None and ALL in store.read()["halts"]:
        raise TradelabError(f"the whole lab is halted, not only {symbol}: "
                            "`tradelab ops resume` without --symbol lifts it")
    lifted = store.resume(symbol)
    return {"resumed": [("ALL" if k == ALL else k) for k in lifted],
            "halts": _halts_out(store.read()["halts"])}


def route(settings: Any, lab: Any, venue: str | None, symbol: str | None = None,
          reset: bool = False) -> dict[str, Any]:
    """Send `symbol` (None: every symbol) to `venue`; `reset`: back to the settings' table."""
    store = store_for(lab)
    if reset:
        store.clear_routes()
    else:
        if venue is None or venue not in settings.trading.venues:
            raise TradelabError(f"unknown venue {venue!r}: use one of "
                                f"{', '.join(settings.trading.venues)}")
        store.route(venue, _symbol(settings, symbol))
    return {"routes": effective_routes(settings, store.read()["routes"])}


def effective_routes(settings: Any, live: dict[str, str]) -> dict[str, str]:
    return {s: venue_for(s, live, settings.trading) for s in settings.symbols}


def lever_status(settings: Any, lab: Any) -> dict[str, Any]:
    data = store_for(lab).read()
    return {"halts": _halts_out(data["halts"]), "live_routes": data["routes"],
            "routes": effective_routes(settings, data["routes"]),
            "venues": list(settings.trading.venues)}


def restart(settings: Any, lab: Any, service: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Stop and start `service` of the running lab (either runtime), then wait until it
    is healthy again; its state before and after, and how long that took."""
    if service not in RESTARTABLE:
        raise TradelabError(f"unknown service {service!r}: use one of {', '.join(RESTARTABLE)}")
    from tradelab.orchestrator import act, running_driver, wait_healthy
    from tradelab.runtimes.base import ServiceState

    driver = running_driver(settings, lab)
    before = driver.inspect(service)
    if before.state is ServiceState.UNAVAILABLE:
        raise TradelabError(f"{service} cannot be restarted: {before.detail}")
    if before.state is ServiceState.MISSING:
        raise TradelabError(f"{service} is not part of the running {driver.name} lab: "
                            "nothing to restart (`tradelab up` starts it)")
    started = time.monotonic()
    act(driver, "restart", service)
    after = wait_healthy(driver, service, timeout_s)
    return {"service": service, "runtime": driver.name, "before": str(before.state),
            "after": str(after.state), "health": str(after.health),
            "seconds": round(time.monotonic() - started, 1)}


# -- requeue ---------------------------------------------------------------------------

# SKIP LOCKED: an order another session holds is in flight (or held by a stuck session,
# which `ops db sessions` shows and frees); it is reported, not touched.
_REQUEUE = """
WITH stuck AS (
    SELECT id FROM trades
    WHERE status = 'NEW' AND requeued_at IS NULL
      AND created_at < now() - make_interval(secs => %(age)s)
    ORDER BY created_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE trades t SET requeued_at = clock_timestamp(), updated_at = clock_timestamp()
    FROM stuck WHERE t.id = stuck.id
    RETURNING t.id, t.created_at
), events AS (
    INSERT INTO trade_events (trade_id, event, status, detail)
    SELECT id, 'requeued', 'NEW', jsonb_build_object('stuck_for_s', %(age)s::float8)
    FROM marked
)
SELECT id FROM marked ORDER BY id
"""
_STILL_STUCK = """
SELECT count(*) FILTER (WHERE requeued_at IS NOT NULL),
       count(*) FILTER (WHERE requeued_at IS NULL)
FROM trades WHERE status = 'NEW' AND created_at < now() - make_interval(secs => %s)
"""


def requeue(url: str, stuck_for_s: float, limit: int = 10_000) -> dict[str, Any]:
    """Put NEW orders older than `stuck_for_s` first in the engine's line, each at most
    once in its life (a `requeued` event marks it); needs a writing role (the app's)."""
    if stuck_for_s <= 0:
        raise TradelabError(f"invalid --stuck-for {stuck_for_s:g}s: must be more than zero")
    from tradelab.db.connect import connect

    with connect(url, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute(_REQUEUE, {"age": stuck_for_s,
                                                      "limit": limit}).fetchall()]
        requeued_before, held = conn.execute(_STILL_STUCK, (stuck_for_s,)).fetchone()
    return {"requeued": len(ids), "trade_ids": ids,
            "already_requeued_still_new": requeued_before - len(ids),
            "held_by_other_sessions": held, "stuck_for_s": stuck_for_s}


def _halts_out(halts: dict[str, Any]) -> dict[str, Any]:
    return {("ALL" if k == ALL else k): v for k, v in halts.items()}
