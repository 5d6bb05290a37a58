"""Chaos Toolkit actions of a game day: load, fault, waits that measure, reconciliation.

    {"type": "action", "name": "inject-fault",
     "provider": {"type": "python", "module": "tradelab.gameday.actions",
                  "func": "inject_fault"}}

Every action takes only Chaos Toolkit's `configuration` (see tradelab.gameday.context)
and returns a JSON-ready dict, which Chaos Toolkit keeps in the journal as the
activity's output. The times they measure are also written to the run's timeline
(tradelab.gameday.timeline), from which the runner builds its report. A wait that times
out raises, so Chaos Toolkit marks the activity failed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from tradelab.errors import TradelabError
from tradelab.gameday.context import lab_of, log, number, text
from tradelab.gameday.timeline import Timeline

PROGRESS_EVERY_S = 5.0
LOAD_MARGIN_S = 600.0  # the load's own --duration beyond the planned run: it is stopped
_LOAD_PROCESSES: dict[int, subprocess.Popen] = {}  # reaped by stop_load in this process


# -- load -------------------------------------------------------------------------------

def start_load(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start `tradelab load --headless` in the background and wait out the warm-up."""
    from tradelab.load import load_status

    settings, lab = lab_of(configuration)
    users = int(number(configuration, "users"))
    warmup = number(configuration, "warmup_s")
    planned = sum(number(configuration, k) for k in
                  ("warmup_s", "fault_for_s", "detect_timeout_s", "recover_timeout_s"))
    out = lab.state_dir / "gameday-load.out"
    lab.state_dir.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as stdout, open(out.with_suffix(".log"), "ab") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tradelab", "--lab-dir", str(lab.root), "load", "--headless",
             "--users", str(users), "--spawn-rate", str(users),
             "--duration", f"{int(planned + LOAD_MARGIN_S)}s", "--fail-ratio", "1", "--json"],
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True)
    _LOAD_PROCESSES[proc.pid] = proc
    timeline = Timeline.of(lab)
    deadline = time.monotonic() + 60
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TradelabError(f"the load generator exited at once: {_tail(out, 'log')}")
        try:
            status = load_status(settings, lab)
        except TradelabError:
            status = {}
        if status.get("run_id") and status.get("state") in ("spawning", "running"):
            break
        time.sleep(0.5)
    else:
        raise TradelabError(f"the load generator did not start in 60s: {_tail(out, 'log')}")
    timeline.mark("load", {"pid": proc.pid, "run_id": status["run_id"], "users": users,
                           "output": str(out)})
    timeline.mark("load_started_at")
    log.info(f"warm-up: {users} users for {warmup:g}s (load run {status['run_id']})")
    _sleep_with_progress(warmup, "warm-up load")
    return {"run_id": status["run_id"], "users": users, "warmup_s": warmup}


def stop_load(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Stop the game day's load and return its summary (requests, failures, orders)."""
    from tradelab.load import stop_load as stop_lab_load

    _settings, lab = lab_of(configuration)
    timeline = Timeline.of(lab)
    load = timeline.read().get("load")
    if not load:
        return {"stopped": False, "reason": "no load was started"}
    try:
        stop_lab_load(_settings, lab)
    except TradelabError:
        pass  # already over
    proc = _LOAD_PROCESSES.pop(load["pid"], None)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _alive(load["pid"], proc):
        time.sleep(0.5)
    timeline.mark("load_stopped_at")
    try:
        summary = json.loads(open(load["output"]).read())
    except (OSError, ValueError):
        summary = {}
    return {"stopped": True, "run_id": load["run_id"],
            **{k: summary.get(k) for k in ("requests", "failures", "rps", "p99_ms", "orders")}}


# -- fault ------------------------------------------------------------------------------

def inject_fault(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn the scenario's fault on. Its duration is a safety net: it ends by itself
    even if this process dies; remove_fault normally ends it sooner."""
    from tradelab.chaos import chaos_on

    settings, lab = lab_of(configuration)
    fault = text(configuration, "fault")
    rate = (configuration or {}).get("fault_rate")
    latency = (configuration or {}).get("fault_latency_ms")
    safety = sum(number(configuration, k) for k in ("fault_for_s", "detect_timeout_s")) + 60
    entry = chaos_on(settings, lab, fault,
                     rate=None if rate in (None, "") else float(rate),
                     latency_ms=None if latency in (None, "") else int(float(latency)),
                     duration_s=safety)
    at = Timeline.of(lab).mark("injected_at")
    log.info(f"fault {fault} on{_params(entry)}")
    return {"fault": fault, "injected_at": at, **entry}


def hold_fault(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keep the fault on until fault_for_s have passed since it was injected."""
    _settings, lab = lab_of(configuration)
    injected = Timeline.of(lab).read().get("injected_at", time.time())
    left = injected + number(configuration, "fault_for_s") - time.time()
    if left > 0:
        _sleep_with_progress(left, f"fault {text(configuration, 'fault')} held on")
    return {"held_s": round(time.time() - injected, 1)}


def remove_fault(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn the scenario's fault off (a runtime fault is undone: the service started)."""
    from tradelab.chaos import chaos_off

    settings, lab = lab_of(configuration)
    fault = text(configuration, "fault")
    names = chaos_off(settings, lab, fault)
    timeline = Timeline.of(lab)
    at = timeline.read().get("removed_at") or timeline.mark("removed_at")
    log.info(f"fault {fault} off")
    return {"fault": fault, "removed": names, "removed_at": at}


# -- waits that measure -----------------------------------------------------------------

def wait_for_alert(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Wait until the expected alert is active in Alertmanager; time to detect is from
    the injection to the first poll that saw it."""
    settings, lab = lab_of(configuration)
    alert = text(configuration, "expected_alert")
    timeline = Timeline.of(lab)
    injected = timeline.read().get("injected_at", time.time())
    timeout = number(configuration, "detect_timeout_s")

    def detected(alerts):
        return any(a["alertname"] == alert for a in alerts)

    _poll(settings, timeline, detected, f"alert {alert} to fire", injected, timeout,
          number(configuration, "poll_s"))
    seen = timeline.read()["alerts"][alert]
    ttd = round(seen["first_seen"] - injected, 1)
    timeline.mark("detected_at", seen["first_seen"])
    timeline.mark("time_to_detect_s", ttd)
    log.info(f"detected: {alert} fired {ttd:g}s after the fault")
    return {"alert": alert, "time_to_detect_s": ttd, "first_seen": seen["first_seen"],
            "starts_at": seen["starts_at"]}


def wait_for_recovery(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Wait until the expected alert resolved, no page fires and the SLIs are within
    objective; time to recover is from the fault's removal."""
    from tradelab.gameday.probes import slis_within_objective

    settings, lab = lab_of(configuration)
    alert = text(configuration, "expected_alert")
    timeline = Timeline.of(lab)
    removed = timeline.read().get("removed_at", time.time())

    def recovered(alerts):
        if any(a["alertname"] == alert or a["severity"] == "page" for a in alerts):
            return False
        return slis_within_objective(configuration)

    _poll(settings, timeline, recovered, f"{alert} resolved, no page, SLIs within objective",
          removed, number(configuration, "recover_timeout_s"), number(configuration, "poll_s"))
    ttr = round(time.time() - removed, 1)
    timeline.mark("recovered_at")
    timeline.mark("time_to_recover_s", ttr)
    log.info(f"recovered {ttr:g}s after the fault was removed")
    return {"time_to_recover_s": ttr}


def reconcile(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every order the game day's load had acknowledged, checked against the database."""
    from tradelab.gameday.reconciliation import reconcile_run

    settings, lab = lab_of(configuration)
    timeline = Timeline.of(lab)
    run_id = (timeline.read().get("load") or {}).get("run_id")
    expected = (configuration or {}).get("expected_violations") or []
    result = reconcile_run(settings, lab, run_id, expected=[str(k) for k in expected])
    timeline.mark("reconciliation", result)
    log.info(f"reconciliation: {result['summary']}")
    return result


# -- helpers ----------------------------------------------------------------------------

def _poll(settings, timeline: Timeline, done, what: str, since: float, timeout: float,
          every: float) -> None:
    from tradelab.alerts import AlertmanagerUnavailable, firing_alerts

    started = time.monotonic()
    last_note = started
    while True:
        try:
            alerts = firing_alerts(settings, include_muted=True)
        except AlertmanagerUnavailable as exc:
            log.info(f"(Alertmanager: {exc})")
            alerts = None
        if alerts is not None:
            timeline.saw_alerts(alerts)
            if done(alerts):
                return
        waited = time.monotonic() - started
        if waited >= timeout:
            raise TradelabError(f"gave up waiting for {what} after {timeout:g}s")
        if time.monotonic() - last_note >= PROGRESS_EVERY_S:
            last_note = time.monotonic()
            firing = ", ".join(sorted({a["alertname"] for a in alerts or []})) or "none"
            log.info(f"waiting for {what}: {time.time() - since:.0f}s "
                     f"(gives up after {timeout:g}s; firing: {firing})")
        time.sleep(every)


def _sleep_with_progress(seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, PROGRESS_EVERY_S))
        if end - time.monotonic() > 0.5:
            log.info(f"{what}: {end - time.monotonic():.0f}s left")


def _alive(pid: int, proc: subprocess.Popen | None) -> bool:
    if proc is not None:
        return proc.poll() is None
    from tradelab.host import pid_alive

    return pid_alive(pid)


def _params(entry: dict[str, Any]) -> str:
    parts = [f"{k} {entry[k]}" for k in ("rate", "latency_ms") if entry.get(k) is not None]
    return f" ({', '.join(parts)})" if parts else ""


def _tail(out, suffix: str) -> str:
    try:
        lines = [x for x in out.with_suffix("." + suffix).read_text().splitlines() if x.strip()]
    except OSError:
        return "no output"
    return " | ".join(lines[-3:]) or "no output"
