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
restart clears is gone once the service's process (as its runtime reports it) started
after the fault went on, or, for a persisting one, after its trigger ended, since the
processes it hit stay wedged; a venue's fault is gone once orders are routed to another
venue (the `ops route` lever, in the audit log).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
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
    """Run the drill to its end; return how it finished. Whatever happens, the lab is
    restored and the reports written (a watcher that fails ends its drill)."""
    from tradelab.drill.report import wrap_up

    try:
        _watch_until_finished(settings, lab, session, poll_s, sustain_s)
    except BaseException as exc:
        session.append("ended", reason=f"the watcher failed: {exc!r}"[:300])
        raise
    finally:
        wrap_up(settings, lab, session)
    return session.finished() or "ended"


def _watch_until_finished(settings: Any, lab: Any, session: DrillSession, poll_s: float,
                          sustain_s: float) -> None:
    plan = session.plan
    started = parse_iso(session.required("started")["time"])
    inject_at = started + timedelta(seconds=plan["inject_after_s"])
    herring = plan.get("red_herring")
    herring_at = started + timedelta(seconds=herring["after_s"]) if herring else None
    firing: dict[str, dict[str, Any]] = {}
    injected_at: datetime | None = None
    effect_gone = False
    healthy_since: float | None = None
    triggers_ended: set[str] = set()
    while not session.finished():
        now = datetime.now(UTC)
        if injected_at is None and now >= inject_at:
            injected_at = _inject(settings, lab, session, plan)
        if herring is not None and herring_at is not None and now >= herring_at:
            from tradelab.drill.herrings import play_red_herring

            session.append("red_herring", herring=herring["kind"], summary=herring["summary"],
                           **play_red_herring(settings, lab, herring))
            herring_at = None
        firing = _record_alerts(settings, session, firing)
        if injected_at is not None:
            for fault in plan["faults"]:
                if fault.get("persists") and fault["fault"] not in triggers_ended and \
                        now >= injected_at + timedelta(seconds=fault["trigger_s"]):
                    session.append("trigger_ended", fault=fault["fault"])
                    triggers_ended.add(fault["fault"])
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


def _inject(settings: Any, lab: Any, session: DrillSession, plan: dict[str, Any]) -> datetime:
    from tradelab.chaos import chaos_on

    for fault in plan["faults"]:
        chaos_on(settings, lab, fault["fault"], hidden=True, **fault["params"],
                 persists=fault.get("persists", False), duration_s=fault.get("trigger_s"))
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
        status = _inspect(settings, lab, spec.service)
        from tradelab.runtimes.base import ServiceState

        return status is not None and status.state is ServiceState.RUNNING
    if spec.restarted_service is not None:
        status = _inspect(settings, lab, spec.restarted_service)
        # Processes started before this were hit (by the trigger, for a persisting fault).
        clean_after = injected_at + timedelta(seconds=fault.get("trigger_s") or 0)
        return (status is not None and status.started_at is not None
                and status.started_at >= clean_after.timestamp())
    levers = [lever.split() for lever in getattr(spec, "mitigated_by", ())]
    for command, arguments in levers_pulled(lab, injected_at):
        for lever in levers:
            if lever[:2] == ["ops", "route"] and command == "ops route":
                venue = fault["params"].get("venue")
                chosen = _option(arguments, "--venue")
                if venue is not None and chosen is not None and chosen != venue:
                    return True
    return False


def _inspect(settings: Any, lab: Any, service: str) -> Any:
    """The service's ServiceStatus in the running lab, or None when it cannot be had."""
    from tradelab.orchestrator import running_driver

    try:
        return running_driver(settings, lab).inspect(service)
    except TradelabError:
        return None


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
