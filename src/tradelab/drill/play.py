"""The drill commands as plain functions: start, ack, diagnose, status, end, history.

    info = start(settings, lab, seed=7, level=2, window=(30, 180))
    ack(lab); diagnose(lab, "db-outage")       # {"correct": ...} is never told back
    status(settings, lab)                       # elapsed, firing alerts, the answer never
    card = end(settings, lab)                   # restores the lab, the scorecard
    history(lab)                                # past drills with their scores

Every function returns a JSON-ready dict; the CLI prints it.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from tradelab.drill.plan import DEFAULT_WINDOW, plan_drill
from tradelab.drill.session import (
    DrillSession,
    all_sessions,
    current_session,
    last_session,
    new_session,
    parse_iso,
)
from tradelab.errors import TradelabError

DRILL_LOAD_USERS = 5
DRILL_LOAD_DURATION_S = 3600.0


def start(settings: Any, lab: Any, seed: int | None = None, level: int = 1,
          scenario: str | None = None, window: tuple[float, float] = DEFAULT_WINDOW,
          load: bool = True, poll_s: float = 1.0, sustain_s: float = 120.0) -> dict[str, Any]:
    """Plan a drill, start load if none runs, and leave the watcher to inject it."""
    previous = last_session(lab)
    if previous is not None and not previous.finished():
        raise TradelabError(f"drill {previous.id} is still running: `tradelab drill end` "
                            "stops it")
    if sustain_s < 0 or poll_s <= 0:
        raise TradelabError("--sustain must be 0 or more and --poll more than zero")
    from tradelab.orchestrator import running_driver

    running_driver(settings, lab)  # a running lab, or the error saying how to start one
    seed = random.SystemRandom().randrange(10**6) if seed is None else seed
    plan = plan_drill(seed, level, scenario, window, _venues(settings), _venues_in_use(settings))
    plan.update(load_started=False, load_run_id=None, sustain_s=sustain_s)
    if load:
        plan.update(_ensure_load(settings, lab))
    session = new_session(lab, plan)
    session.append("started")
    from tradelab.drill.watch import spawn_watcher

    session.write("watcher.pid", f"{spawn_watcher(lab, session, poll_s, sustain_s)}\n")
    return {"drill": session.id, "seed": seed, "level": level,
            "window_s": plan["window_s"], "load_run_id": plan["load_run_id"],
            "message": "the incident starts within the window; watch your alerts"}


def _venues(settings: Any) -> list[str] | None:
    """The lab's venues, where this tradelab has them (settings.trading.venues)."""
    venues = getattr(getattr(settings, "trading", None), "venues", None)
    return sorted(venues) if venues else None


def _venues_in_use(settings: Any) -> list[str] | None:
    """The venues orders are routed to: the default one and those of the routing table."""
    trading = getattr(settings, "trading", None)
    if trading is None:
        return None
    return sorted({trading.default_venue, *trading.routes.values()})


def _ensure_load(settings: Any, lab: Any) -> dict[str, Any]:
    from tradelab.load import ACTIVE, LoadOptions, load_status, start_load

    try:
        running = load_status(settings, lab)
        if running.get("state") in ACTIVE:
            return {"load_started": False, "load_run_id": running.get("run_id")}
    except TradelabError:
        pass
    info = start_load(settings, lab, LoadOptions(users=DRILL_LOAD_USERS,
                                                 duration=DRILL_LOAD_DURATION_S))
    return {"load_started": True, "load_run_id": info.get("run_id")}


def ack(lab: Any) -> dict[str, Any]:
    session = current_session(lab)
    first = session.first("ack")
    event = first or session.append("ack") or session.required("ack")
    return {"drill": session.id, "acknowledged_at": event["time"], "again": bool(first)}


def diagnose(lab: Any, fault: str, venue: str | None = None) -> dict[str, Any]:
    """Record a diagnosis; whether it is right is kept for the scorecard."""
    from tradelab.faults import check_fault

    check_fault(fault)
    session = current_session(lab)
    truth = session.plan["faults"]
    correct = any(f["fault"] == fault and f["params"].get("venue") in (None, venue)
                  for f in truth)
    session.append("diagnose", fault=fault, venue=venue, correct=correct)
    return {"drill": session.id, "diagnosis": fault, "venue": venue,
            "tries": len(session.events("diagnose"))}


def status(settings: Any, lab: Any) -> dict[str, Any]:
    """The current (or last) drill: elapsed time, firing alerts, acks and tries."""
    session = last_session(lab)
    if session is None:
        raise TradelabError("no drill has been run here: start one with "
                            "`tradelab drill start`")
    events = session.events()
    started = parse_iso(events[0]["time"])
    end = next((e for e in events if e["event"] in ("completed", "ended", "abandoned")), None)
    from datetime import UTC, datetime

    until = parse_iso(end["time"]) if end else datetime.now(UTC)
    alerts: list[dict[str, Any]] | None
    try:
        from tradelab.alerts import firing_alerts

        alerts = [{"alertname": a["alertname"], "severity": a["severity"],
                   "since": a["since"], "summary": a["summary"]}
                  for a in firing_alerts(settings, timeout_s=2.0)]
    except TradelabError:
        alerts = None
    return {"drill": session.id, "state": end["event"] if end else "running",
            "level": session.plan["level"],
            "elapsed_s": round((until - started).total_seconds()),
            "acknowledged": session.first("ack") is not None,
            "diagnosis_tries": len(session.events("diagnose")),
            "firing_alerts": alerts,
            "scorecard": str(card) if (card := session.folder / "scorecard.json").exists()
            else None}


def end(settings: Any, lab: Any, wait_s: float = 60.0) -> dict[str, Any]:
    """Stop the running drill early (or collect the finished one's scorecard)."""
    session = last_session(lab)
    if session is None:
        raise TradelabError("no drill has been run here: start one with "
                            "`tradelab drill start`")
    if not session.finished():
        session.append("ended")
    from tradelab.drill.report import wrap_up

    wrap_up(settings, lab, session)  # unless the watcher does it right now
    return _wait_for_card(session, wait_s)


def _wait_for_card(session: DrillSession, wait_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    path = session.folder / "scorecard.json"
    while not path.exists():
        if time.monotonic() > deadline:
            raise TradelabError(f"drill {session.id}: no scorecard after {wait_s:g}s; see "
                                f"{session.folder / 'watcher.log'}")
        time.sleep(0.3)
    card = json.loads(path.read_text())
    card["files"] = {"scorecard": str(path), "postmortem": str(session.folder / "postmortem.md")}
    return card


def scorecard_of(lab: Any, drill_id: str | None = None) -> dict[str, Any]:
    session = last_session(lab) if drill_id is None else next(
        (s for s in all_sessions(lab) if s.id == drill_id), None)
    if session is None:
        raise TradelabError(f"no drill {drill_id or ''} here: `tradelab drill history` "
                            "lists them".replace("  ", " "))
    return _wait_for_card(session, 0)


def history(lab: Any) -> dict[str, Any]:
    rows = []
    for session in all_sessions(lab):
        path = session.folder / "scorecard.json"
        card = json.loads(path.read_text()) if path.exists() else None
        rows.append({
            "drill": session.id, "level": session.plan["level"],
            "outcome": card["outcome"] if card else "running",
            "passed": card["passed"] if card else None,
            "faults": card["faults"] if card else None,
            "ack_from_page_s": card["times"]["ack_from_page_s"] if card else None,
            "mitigate_from_injection_s": card["times"]["mitigate_from_injection_s"]
            if card else None,
            "diagnosis_correct": card["diagnosis"]["correct"] if card else None,
            "tries": card["diagnosis"]["tries"] if card else None,
            "harmful_actions": card["harmful_actions"]["count"] if card else None,
        })
    return {"drills": rows}
