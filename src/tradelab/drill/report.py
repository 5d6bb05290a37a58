"""The end of a drill: everything restored, then the scorecard and the postmortem draft.

    wrap_up(settings, lab, session)      # once per drill, whoever finishes it
    card = scorecard(settings, lab, session)
    card["passed"], card["times"]["ack_from_page_s"], card["harmful_actions"]

Facts come from the drill's events (injection, alert transitions, ack, diagnoses,
mitigation), the audit log, `tradelab verify` and the lab's Prometheus and database.
Written to <lab>/state/drills/<id>/: the charts, postmortem.md, then scorecard.json (the
sign that the drill's reports are complete).
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime
from typing import Any

from tradelab.drill.herrings import end_red_herring
from tradelab.drill.session import DrillSession, now_iso, parse_iso
from tradelab.drill.watch import audit_entries
from tradelab.errors import TradelabError

WRAPPED = ".wrapped"


def wrap_up(settings: Any, lab: Any, session: DrillSession) -> bool:
    """Restore the lab and write the reports, once (False: someone else does it)."""
    try:
        os.close(os.open(session.folder / WRAPPED, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    plan = session.plan
    from tradelab.chaos import chaos_off

    if session.first("injected"):
        for fault in plan["faults"]:
            try:
                chaos_off(settings, lab, fault["fault"], by_drill=True)
            except TradelabError as exc:
                session.append("restore_failed", fault=fault["fault"], error=str(exc))
    if plan.get("red_herring") and session.first("red_herring"):
        end_red_herring(settings, plan["red_herring"])
    if plan.get("load_started"):
        from tradelab.load import stop_load

        try:
            stop_load(settings, lab)
        except TradelabError:
            pass  # the run ended by itself
    card = scorecard(settings, lab, session)
    charts = write_charts(settings, session, card)
    session.write("postmortem.md", postmortem(session, card, charts))
    # Last: the scorecard is what `drill end`, `status` and `history` wait for, so
    # whoever sees it finds the postmortem and the charts already there.
    session.write("scorecard.json", json.dumps(card, indent=2) + "\n")
    return True


def write_charts(settings: Any, session: DrillSession, card: dict[str, Any]) -> list[str]:
    """The game days' charts over the drill (tradelab.gameday), as PNGs beside the
    postmortem; their file names (none when Prometheus or matplotlib is missing)."""
    from tradelab.gameday.report import draw_charts
    from tradelab.gameday.runner import fetch_series

    def epoch(kind: str) -> float | None:
        event = session.first(kind)
        return parse_iso(event["time"]).timestamp() if event else None

    page = next((e for e in session.events("alert_firing") if e["severity"] == "page"), None)
    gone = session.events("effect_gone")
    timeline = {"load_started_at": epoch("started"), "injected_at": epoch("injected"),
                "removed_at": parse_iso(gone[-1]["time"]).timestamp() if gone else None,
                "detected_at": parse_iso(page["time"]).timestamp() if page else None,
                "recovered_at": epoch("completed")}
    try:
        started = timeline["load_started_at"] or timeline["injected_at"] or time.time()
        series = fetch_series(settings, timeline, started)
        pictures = draw_charts({"tradelab": {
            "timeline": timeline, "series": series, "scenario": f"drill {session.id}",
            "fault": ", ".join(card["faults"] or []),
            "expected_alert": page["alertname"] if page else ""}})
    except (TradelabError, ImportError, OSError):
        return []
    names = []
    for name, png in pictures.items():
        session.write(f"{name}.png", png)
        names.append(f"{name}.png")
    return names


def scorecard(settings: Any, lab: Any, session: DrillSession) -> dict[str, Any]:
    plan = session.plan
    started = _time(session.first("started"))
    injected = _time(session.first("injected"))
    finish = next((e for e in session.events() if e["event"] in
                   ("completed", "ended", "abandoned")), None)
    finished = _time(finish) or datetime.fromisoformat(now_iso().replace("Z", "+00:00"))
    page = next((e for e in session.events("alert_firing") if e["severity"] == "page"), None)
    paged = _time(page)
    ack = _time(session.first("ack"))
    answers = session.events("diagnose")
    truth = {f["fault"] for f in plan["faults"]}
    right = [a for a in answers if a["correct"]]
    diagnosed = _time(right[-1]) if {a["fault"] for a in right} >= truth else None
    gone = [e for e in session.events("effect_gone")]
    mitigated = _time(gone[-1]) if gone and finish and finish["event"] == "completed" else None
    harmful = harmful_actions(settings, lab, session, started, finished)
    verify = _verify(settings, lab, plan.get("load_run_id"))
    lost = verify.get("lost")
    card = {
        "drill": session.id, "seed": plan["seed"], "level": plan["level"],
        "outcome": finish["event"] if finish else "running",
        "faults": sorted(truth) if finish else None,
        "times": {
            "ack_from_page_s": _between(paged, ack),
            "diagnose_from_injection_s": _between(injected, diagnosed),
            "mitigate_from_injection_s": _between(injected, mitigated),
            "mitigate_from_page_s": _between(paged, mitigated),
            "duration_s": _between(started, finished),
        },
        "paged": paged is not None,
        "diagnosis": {"correct": diagnosed is not None, "tries": len(answers),
                      "answers": [a["fault"] + (f" --venue {a['venue']}" if a.get("venue")
                                                else "") for a in answers]},
        "error_budget_spent_pct": _budget_spent(settings, injected, finished),
        "orders_affected": _orders_affected(settings, lab, injected, finished),
        "trades_lost": lost,
        "verify": verify,
        "harmful_actions": {"count": len(harmful), "actions": harmful},
    }
    card["passed"] = (card["outcome"] == "completed" and card["diagnosis"]["correct"]
                      and lost == 0 and not harmful)
    return card


def harmful_actions(settings: Any, lab: Any, session: DrillSession, since: datetime | None,
                    until: datetime) -> list[str]:
    """Actions during the drill that would hurt a real system: `down --volumes`, killing
    a healthy database, a silence that mutes every alert."""
    db_fault = any(f["fault"] == "db-outage" for f in session.plan["faults"])
    found = []
    for entry in audit_entries(lab):
        when = parse_iso(entry["time"])
        if since is None or not since <= when <= until:
            continue
        command, args = entry["command"], entry.get("arguments", [])
        line = " ".join([command, *args])
        if command == "down" and ("--volumes" in args or "-v" in args):
            found.append(line)
        elif not db_fault and (
                (command == "ops restart" and "postgres" in args)
                or (command == "chaos on" and "db-outage" in args)
                or (command == "ops db sessions" and any(a.startswith("--kill") for a in args))):
            found.append(line)
    found += [f"silence {s}" for s in _silences_of_everything(settings, since)]
    return found


def _silences_of_everything(settings: Any, since: datetime | None) -> list[str]:
    """Active silences created during the drill whose matchers match any alert name."""
    import urllib.request

    from tradelab.alerts import alertmanager_url

    try:
        with urllib.request.urlopen(f"{alertmanager_url(settings)}/api/v2/silences",
                                    timeout=3) as response:
            silences = json.load(response)
    except (OSError, ValueError):
        return []
    out = []
    for s in silences:
        if s.get("status", {}).get("state") != "active":
            continue
        try:
            created = parse_iso(re.sub(r"(\.\d{6})\d+", r"\1", s.get("startsAt", "")))
        except ValueError:
            continue
        if since is not None and created < since:
            continue
        if all(m.get("isRegex") and m.get("value") in (".*", ".+", "") or
               m.get("name") != "alertname" and m.get("isRegex") for m in s.get("matchers", [])):
            out.append(s.get("id", "?"))
    return out


def _verify(settings: Any, lab: Any, run_id: str | None) -> dict[str, Any]:
    from tradelab.verify import verify

    try:
        report = verify(settings, lab, run_id=run_id)
    except TradelabError as exc:
        return {"ok": None, "lost": None, "error": str(exc)}
    return {"ok": report.ok, "lost": report.by_kind().get("lost", 0),
            "summary": report.summary_line()}


def _budget_spent(settings: Any, start: datetime | None, end: datetime) -> dict[str, Any]:
    """Per SLO, the share of its 30-day error budget the drill burnt (from the 5m ratio)."""
    from tradelab import promql

    if start is None:
        return {}
    seconds = max(1.0, (end - start).total_seconds())
    url = promql.prometheus_url(settings)
    out: dict[str, Any] = {}
    for slo in ("availability", "latency", "processing_success"):
        target = getattr(settings.slo, slo)
        try:
            ratio = promql.scalar(url, f'avg_over_time(tradelab:slo_error_ratio:rate5m'
                                       f'{{slo="{slo}"}}[{int(seconds)}s])')
        except TradelabError:
            ratio = None
        out[slo] = None if ratio is None else round(
            100 * ratio / (1 - target) * seconds / (30 * 86400), 4)
    return out


def _orders_affected(settings: Any, lab: Any, start: datetime | None,
                     end: datetime) -> int | None:
    """Trades created while the fault was on that did not fill: failed, rejected, or
    still waiting."""
    if start is None:
        return 0
    from tradelab.db.connect import resolve_url
    from tradelab.ops import open_read_only

    try:
        with open_read_only(resolve_url(None, settings, lab, "operator")) as conn:
            row = conn.execute("SELECT count(*) FROM trades WHERE created_at BETWEEN %s AND %s"
                               " AND status <> 'FILLED'", (start, end)).fetchone()
    except (TradelabError, OSError):
        return None
    except Exception as exc:  # psycopg's errors: the count is unknown, the card still written
        if type(exc).__module__.startswith("psycopg"):
            return None
        raise
    return int(row[0])


def _time(event: dict[str, Any] | None) -> datetime | None:
    return parse_iso(event["time"]) if event else None


def _between(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else round((b - a).total_seconds(), 1)


# -- the postmortem draft -------------------------------------------------------------------

def postmortem(session: DrillSession, card: dict[str, Any], charts: list[str]) -> str:
    plan = session.plan
    faults = ", ".join(card["faults"] or [])
    times = card["times"]
    lines = [
        f"# Postmortem draft: drill {session.id}", "",
        "## Summary", "",
        f"A level {plan['level']} drill (seed {plan['seed']}) injected {faults}. "
        f"Outcome: {card['outcome']}; "
        f"{'passed' if card['passed'] else 'not passed'}.", "",
        "## Impact", "",
        f"- orders affected (created while the fault was on, not filled): "
        f"{_n(card['orders_affected'])}",
        f"- trades lost (tradelab verify): {_n(card['trades_lost'])}",
        "- error budget spent (% of 30 days): " + ", ".join(
            f"{k} {_n(v)}" for k, v in card["error_budget_spent_pct"].items()) or "-",
        f"- duration: {_n(times['duration_s'])} s", "",
        "## Timeline (UTC)", "",
    ]
    herring = (plan.get("red_herring") or {}).get("alertname")
    timeline = [(e["time"], _describe(e)) for e in session.events()  # the herring once
                if not (e["event"].startswith("alert_") and e["alertname"] == herring)]
    for entry in audit_entries_between(session):
        command = " ".join([entry["command"], *entry.get("arguments", [])])
        timeline.append((entry["time"], f"operator: `tradelab {command}` ({entry['outcome']})"))
    lines += [f"- {when} {what}" for when, what in sorted(timeline)]
    lines += [
        "", "## Root cause", "",
        "; ".join(_root_cause(f) for f in plan["faults"]) + ".",
        "", "## Detection", "",
        ("Paged: " + ", ".join(e["alertname"] for e in session.events("alert_firing")
                               if e["severity"] == "page") + "."
         if card["paged"] else "No page fired."),
        f"Acknowledged {_n(times['ack_from_page_s'])} s after the page; diagnosed "
        f"{_n(times['diagnose_from_injection_s'])} s after injection in "
        f"{card['diagnosis']['tries']} tries ({', '.join(card['diagnosis']['answers']) or '-'}).",
        "", "## Mitigation", "",
        f"Effect gone {_n(times['mitigate_from_injection_s'])} s after injection "
        f"({_n(times['mitigate_from_page_s'])} s after the page). Harmful actions: "
        f"{card['harmful_actions']['count']}"
        + (f" ({'; '.join(card['harmful_actions']['actions'])})"
           if card["harmful_actions"]["actions"] else "") + ".",
    ]
    if charts:
        lines += ["", "## Charts", "", *[f"![{c[:-4]}]({c})" for c in charts]]
    lines += ["", "## What went well", "", "", "## What to change", "", ""]
    return "\n".join(lines)


def audit_entries_between(session: DrillSession) -> list[dict[str, Any]]:
    from tradelab.lab import Lab

    lab = Lab(session.folder.parent.parent.parent)
    events = session.events()
    if not events:
        return []
    start, end = parse_iso(events[0]["time"]), parse_iso(events[-1]["time"])
    return [e for e in audit_entries(lab) if start <= parse_iso(e["time"]) <= end
            and not e["command"].startswith("drill")]


def _root_cause(fault: dict[str, Any]) -> str:
    params = ", ".join(f"{k} {v}" for k, v in fault["params"].items())
    text = fault["fault"] + (f" ({params})" if params else "")
    if fault.get("persists"):
        text += (f", persisting: its trigger ended {fault['trigger_s']:g} s after the "
                 "injection, and the processes it hit stayed wedged until restarted")
    return text


def _describe(event: dict[str, Any]) -> str:
    kind = event["event"]
    if kind == "injected":
        return f"fault injected ({', '.join(event['faults'])})"
    if kind in ("alert_firing", "alert_resolved"):
        return f"{event['alertname']} ({event['severity']}) {kind.split('_')[1]}"
    if kind == "diagnose":
        return (f"diagnosis: {event['fault']} ({'right' if event['correct'] else 'wrong'})")
    if kind == "red_herring":
        return f"red herring: {event['summary']}"
    if kind == "trigger_ended":
        return f"trigger ended ({event['fault']}); the processes it hit stay wedged"
    return kind.replace("_", " ")


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
