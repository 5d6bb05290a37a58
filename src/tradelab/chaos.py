"""Chaos actions: turn a fault on or off, through the running lab where it takes a runtime.

    chaos_on(settings, lab)                                  # the default fault (exchange-errors)
    chaos_on(settings, lab, "db-outage", duration_s=60)      # PostgreSQL stopped for a minute
    chaos_off(settings, lab)                                 # every fault; services restored

In-process faults are only a record in the chaos file (tradelab.chaos_state), which
api and engine read. A runtime fault is first carried out through the driver of the
running lab (the primitives its catalogue entry names, tradelab.faults), and recorded
only once that worked; with a duration, a detached process undoes it when it ends.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradelab.chaos_state import store_for
from tradelab.errors import TradelabError
from tradelab.faults import DEFAULT_FAULT, Action, Fault, check_fault, check_runtime
from tradelab.orchestrator import act, lab_driver, restore, running_driver

if TYPE_CHECKING:
    from tradelab.lab import Lab
    from tradelab.settings import Settings


def chaos_on(settings: Settings, lab: Lab, fault: str | None = None, rate: float | None = None,
             latency_ms: int | None = None, duration_s: float | None = None,
             venue: str | None = None, hidden: bool = False,
             persists: bool = False,
             notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Turn a fault on (default: settings.chaos.default_fault); return its entry.

    Runtime faults are carried out through the running lab's driver first, and
    recorded only once that worked; with a duration, a detached process undoes
    them when it ends (in-process faults simply expire). A fault carried out by a
    process of its own (Fault.process) is on once that process says it is ready.
    `hidden`: a drill's fault, which reports show only as "a drill is running"
    (chaos_state.reported_faults). `persists`: the fault outlives its trigger: retry-storm's
    clients stay stuck (tradelab.faults); a wedged-process fault's processes stay wedged
    past `duration_s` until restarted (chaos_state).
    `notice(line)` hears that an in-process fault was recorded for a lab that is down.
    """
    from tradelab.durations import parse_duration

    name = fault or settings.chaos.default_fault
    spec = check_fault(name)
    if duration_s is not None:
        duration_s = parse_duration(duration_s)  # nan, inf, 1e400 refused before anything
    store = store_for(settings, lab)
    if venue is not None and venue not in settings.trading.venues:
        raise TradelabError(f"unknown venue {venue!r}: use one of "
                            f"{', '.join(settings.trading.venues)}")
    end_overdue(settings, lab)
    if spec.kind == "runtime":
        if rate is not None or latency_ms is not None:
            raise TradelabError(f"fault {name} takes no --rate or --latency-ms")
        driver = running_driver(settings, lab)
        check_runtime(spec, driver.kind)
        act(driver, _action(spec, "on"), _service(spec))
    entry = store.enable(name, rate=rate, latency_ms=latency_ms, duration_s=duration_s,
                         venue=venue, hidden=hidden, persists=persists)
    if spec.process is not None:
        try:
            _start_process(lab, store.path, spec.name, spec.process, entry["since"])
        except TradelabError:
            store.disable(name)
            raise
    if spec.kind != "runtime" and notice and lab_driver(settings, lab) is None:
        notice(f"the lab is down: nothing will see {name} until `tradelab up`")
    if spec.kind == "runtime" and duration_s is not None:
        _schedule_off(lab, store.path, name, duration_s, entry["since"])
    return entry


def chaos_off(settings: Settings, lab: Lab, fault: str | None = None,
              if_since: str | None = None, by_drill: bool = False,
              echo: Callable[[str], None] | None = None) -> list[str]:
    """Turn `fault` off (None: all); return the faults turned off.

    Runtime faults are undone through the driver (e.g. PostgreSQL started
    again). With `if_since`, only the fault switched on at that time is turned
    off: a scheduled off must not end a fault that was switched on again since.
    The `chaos.flag` switch is removed too (`echo` says so) when its fault goes off.
    Turning a drill's hidden fault off abandons the drill, unless the drill itself
    does it (`by_drill`).
    """
    flagged = _remove_flag(settings, lab, fault, echo) if if_since is None else []
    if fault is not None:
        check_fault(fault)
    from tradelab.faults import runtime_faults

    store = store_for(settings, lab)
    unreadable = False
    try:
        entries = store.read(include_expired=True)
    except TradelabError:
        if fault is not None or if_since is not None:
            raise
        entries, unreadable = {}, True  # store.disable() below rewrites the file
    names = [n for n in entries if fault is None or n == fault]
    if if_since is not None:
        names = [n for n in names if entries[n].get("since") == if_since]
    undo = [n for n in names if check_fault(n).kind == "runtime"] if names else []
    if unreadable:  # the record that named them is lost: every service a fault can break
        undo = list(runtime_faults())
    if fault is not None and check_fault(fault).kind == "runtime" and if_since is None \
            and fault not in undo:
        undo.append(fault)  # asked by name: restore the service even if the record is gone
    if undo:
        try:
            driver = running_driver(settings, lab)
        except TradelabError:
            driver = None  # no lab running: nothing left to restart, only the record
        if driver is not None:
            for name in undo:
                spec = check_fault(name)
                restore(driver, _service(spec), _action(spec, "off"))
    for name in names:
        store.disable(name)
    if unreadable:
        store.disable()
    if not by_drill and any(entries[n].get("hidden") for n in names):
        from tradelab.drill.session import abandon_current

        abandon_current(lab, "chaos off")
    return names + [n for n in flagged if n not in names]


def _remove_flag(settings: Settings, lab: Lab, fault: str | None,
                 echo: Callable[[str], None] | None) -> list[str]:
    """Remove the flag file when `fault` (None: every fault) is the one it turns on."""
    store = store_for(settings, lab)
    if fault not in (None, DEFAULT_FAULT) or not store.remove_flag():
        return []
    if echo:
        echo(f"removed {store.flag_file} (it turned {DEFAULT_FAULT} on)")
    return [DEFAULT_FAULT]


def end_overdue(settings: Settings, lab: Lab) -> list[str]:
    """Restore every runtime fault past its end (its `chaos off --after` died); return them.

    Whichever tradelab command looks first does it: a fault's end never depends on
    the detached process alone, and its record stays until the service is back.
    """
    overdue = store_for(settings, lab).overdue()
    ended = []
    for name, entry in overdue.items():
        try:
            ended += chaos_off(settings, lab, name, if_since=entry.get("since"))
        except TradelabError:
            continue  # no lab reachable now: the record stays for the next command
    return ended


def _service(spec: Fault) -> str:
    if spec.service is None:
        raise TradelabError(f"fault {spec.name} names no service to act on")
    return spec.service


def _action(spec: Fault, which: str) -> Action:
    action = spec.on if which == "on" else spec.off
    if action is None:
        raise TradelabError(f"fault {spec.name} names no primitive to turn it {which}")
    return action


PROCESS_READY_S = 20.0  # a lock waits for the writes in flight before it is granted


def _start_process(lab: Lab, path: Path, fault: str, module: str, since: str) -> None:
    """Start the fault's own detached process; return once it says "ready", else raise
    with the last line it wrote. It ends by itself once the fault's record is gone."""
    import select
    import subprocess
    import sys

    log_file = path.parent / f"chaos-{fault}.log"
    with open(log_file, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "--lab-dir", str(lab.root), "--since", since],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
            start_new_session=True, env={**os.environ, "TRADELAB_CHAOS_FILE": str(path)})
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], PROCESS_READY_S)
    line = proc.stdout.readline().strip() if ready else b""
    proc.stdout.close()
    if line == b"ready":
        return
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    lines = [x for x in log_file.read_text(errors="replace").splitlines() if x.strip()]
    why = lines[-1] if lines else f"no answer in {PROCESS_READY_S:g}s"
    raise TradelabError(f"cannot turn {fault} on: {why} (log: {log_file})")


def _schedule_off(lab: Lab, path: Path, fault: str, seconds: float, since: str) -> None:
    """A detached `tradelab chaos off FAULT --after SECONDS` that outlives this command."""
    import subprocess
    import sys

    log_file = path.parent / f"chaos-off-{fault}.log"
    with open(log_file, "ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "tradelab", "--lab-dir", str(lab.root), "chaos", "off",
             fault, "--after", str(seconds), "--if-since", since],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            env={**os.environ, "TRADELAB_CHAOS_FILE": str(path)},
        )
