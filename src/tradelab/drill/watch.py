"""The drill's watcher: a detached process that injects, records alerts and sees mitigation.

    spawn_watcher(lab, session, poll_s=1.0, sustain_s=120)   # from `drill start`
    watch(settings, lab, session, poll_s, sustain_s)          # `tradelab drill watch ID`

It outlives `drill start`: it waits out the planned delay, turns the drill's faults on
(hidden), posts the red herring, and then polls once per `poll_s`: the alerts firing in
Alertmanager (their transitions become events), whether each fault's effect is gone,
and whether the SLIs are within objective (the game days' probe). The drill completes
once the effect has been gone, the SLIs fine and no page firing for `sustain_s` in a row.
Mitigation is seen in
the lab, never declared: a runtime fault is gone when its service runs again; a fault a
restart clears is gone once the service was restarted after it went on; a venue's fault
is gone once orders are routed to another venue (the `ops` levers, in the audit log).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

from tradelab.drill.session import DrillSession, parse_iso
from tradelab.errors import TradelabError
from tradelab.faults import check_fault


def spawn_watcher(lab: Any, session: DrillSession, poll_s: float, sustain_s: float) -> int:
    """Start `tradelab drill watch` in its own session; return its pid."""
    log = open(session.folder / "watcher.log", "ab")  # noqa: SIM115 - the child keeps it
    with log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tradelab", "--lab-dir", str(lab.root), "drill", "watch",
             session.id, "--poll", str(poll_s), "--sustain", str(sustain_s)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            env=dict(os.environ),
        )
    return proc.pid


def watch(settings: Any, lab: Any, session: DrillSession, poll_s: float = 1.0,
          sustain_s: float = 120.0) -> str:
    """Run the drill to its end; return how it finished."""
    from tradelab.drill.report import wrap_up

    plan = session.plan
    started = parse_iso(session.required("started")["time"])
    inject_at = started + timedelta(seconds=plan["inject_after_s"])
    herring = plan.get("red_herring")
    herring_at = started + timedelta(seconds=herring["after_s"]) if herring else None
    firing: dict[str, dict[str, Any]] = {}
    injected_at: datetime | None = None
    effect_gone = False
    healthy_since: float | None = None
    while not session.finished():
        now = datetime.now(UTC)
        if injected_at is None and now >= inject_at:
            injected_at = _inject(settings, lab, session, plan)
        if herring is not None and herring_at is not None and now >= herring_at:
            post_red_herring(settings, herring, minutes=30)
            session.append("red_herring", alertname=herring["alertname"])
            herring_at = None
        firing = _record_alerts(settings, session, firing)
        if injected_at is not None:
            gone = all(fault_effect_gone(settings, lab, f, injected_at) for f in plan["faults"])
            if gone != effect_gone:
                session.append("effect_gone" if gone else "effect_back")
                effect_gone = gone
            paging = any(a["severity"] == "page" for a in firing.values())
            if gone and not paging and slis_within_objective(lab):
                healthy_since = healthy_since or time.monotonic()
                if time.monotonic() - healthy_since >= sustain_s:
                    session.append("completed", sustained_s=sustain_s)
                    break
            else:
                healthy_since = None
        time.sleep(poll_s)
    wrap_up(settings, lab, session)
    return session.finished() or "ended"


def _inject(settings: Any, lab: Any, session: DrillSession, plan: dict[str, Any]) -> datetime:
    from tradelab.chaos import chaos_on

    for fault in plan["faults"]:
        chaos_on(settings, lab, fault["fault"], hidden=True, **fault["params"])
    event = session.append("injected", faults=[f["fault"] for f in plan["faults"]])
    return parse_iso(event["time"]) if event else datetime.now(UTC)


def _record_alerts(settings: Any, session: DrillSession,
                   before: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The alerts firing now; each that started or stopped firing becomes an event."""
    from tradelab.alerts import firing_alerts

    try:
        now = {a["alertname"]: a for a in firing_alerts(settings, timeout_s=2.0)}
    except TradelabError:
        return before  # Alertmanager away for a moment: nothing seen changed
    for name in now.keys() - before.keys():
        session.append("alert_firing", alertname=name, severity=now[name]["severity"],
                       summary=now[name]["summary"])
    for name in before.keys() - now.keys():
        session.append("alert_resolved", alertname=name, severity=before[name]["severity"])
    return now


def fault_effect_gone(settings: Any, lab: Any, fault: dict[str, Any],
                      injected_at: datetime) -> bool:
    """Whether the lab no longer suffers from `fault` (see the module docstring)."""
    spec = check_fault(fault["fault"])
    if spec.kind == "runtime" and spec.service is not None:
        from tradelab.orchestrator import running_driver
        from tradelab.runtimes.base import ServiceState

        try:
            state = running_driver(settings, lab).inspect(spec.service).state
        except TradelabError:
            return False
        return state is ServiceState.RUNNING
    levers = [lever.split() for lever in getattr(spec, "mitigated_by", ())]
    for command, arguments in levers_pulled(lab, injected_at):
        for lever in levers:
            if lever[:3] == ["ops", "restart", lever[-1]] and command == "ops restart" \
                    and lever[-1] in arguments:
                return True
            if lever[:2] == ["ops", "route"] and command == "ops route":
                venue = fault["params"].get("venue")
                chosen = _option(arguments, "--venue")
                if venue is not None and chosen is not None and chosen != venue:
                    return True
    return False


def levers_pulled(lab: Any, since: datetime) -> list[tuple[str, list[str]]]:
    """(command, arguments) of every lever that worked since `since`, from the audit log."""
    return [(e["command"], e.get("arguments", [])) for e in audit_entries(lab)
            if e.get("outcome") == "ok" and parse_iso(e["time"]) >= since]


def audit_entries(lab: Any) -> list[dict[str, Any]]:
    """The lab's audit log (tradelab.audit, when this tradelab has it)."""
    try:
        from tradelab.audit import read_audit
    except ImportError:
        return []
    return read_audit(lab)


def _option(arguments: list[str], name: str) -> str | None:
    for i, arg in enumerate(arguments):
        if arg == name and i + 1 < len(arguments):
            return arguments[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def slis_within_objective(lab: Any) -> bool:
    """The game days' steady-state probe (tradelab.gameday.probes); False when
    Prometheus cannot tell."""
    from tradelab.gameday.probes import slis_within_objective as probe

    try:
        return probe({"tradelab_lab_dir": str(lab.root)})
    except TradelabError:
        return False


def post_red_herring(settings: Any, herring: dict[str, Any], minutes: float) -> None:
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
