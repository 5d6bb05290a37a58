"""The seeded pick of a drill: which fault(s), when, and the red herring.

    plan = plan_drill(seed=7, level=2, window=(30, 180))
    plan["faults"]       # [{"fault": "db-outage", "params": {}}]
    plan["inject_after_s"], plan["red_herring"]

The same seed, level, scenario and window give the same plan. A drill only uses faults
whose mitigation the watcher can see: db-outage (postgres runs again), the faults a
restart clears (the service's process started after them) and a venue's faults (orders
routed to another venue). Faults whose levers it cannot see yet (ops halt, ops db
sessions --kill) are left out.
Level 3 plays two faults at once, or one wedged-process fault that persists: its
trigger ends after `trigger_s` (a random time in the window), and the processes it hit
stay wedged until restarted ({"fault": "engine-stall", "persists": True, "trigger_s": 42}).
"""

from __future__ import annotations

import random
from typing import Any

from tradelab.drill.herrings import RED_HERRINGS
from tradelab.errors import TradelabError
from tradelab.faults import FAULTS, Fault, check_fault

LEVELS = (1, 2, 3)
DEFAULT_WINDOW = (30.0, 180.0)
# The parameters a drill gives a fault that takes them (strong enough to page).
DRILL_PARAMS = {"rate": 0.6, "latency_ms": 1500}


def drill_faults(venues: list[str] | None = None) -> list[str]:
    """The faults a drill may pick, in catalogue order."""
    return [name for name, f in FAULTS.items() if _mitigable(f, venues)]


def _mitigable(fault: Fault, venues: list[str] | None) -> bool:
    """Whether the watcher can see this fault mitigated (tradelab.drill.watch)."""
    if fault.kind == "runtime":
        return fault.name == "db-outage"  # a supervisor restarts a killed process by itself
    if any(lever.startswith("ops route") for lever in fault.mitigated_by):
        # routing away mitigates one venue's fault, not every venue's
        return "venue" in fault.params and venues is not None and len(venues) > 1
    return fault.restarted_service is not None  # seen in the service's start time


def plan_drill(seed: int, level: int = 1, scenario: str | None = None,
               window: tuple[float, float] = DEFAULT_WINDOW,
               venues: list[str] | None = None,
               in_use: list[str] | None = None) -> dict[str, Any]:
    """The drill for this seed: faults with their parameters, injection delay, red herring.

    A venue's fault hits a venue orders are routed to (`in_use`, default all `venues`):
    one nobody trades on would be no incident at all."""
    if level not in LEVELS:
        raise TradelabError(f"invalid level {level}: use 1, 2 or 3")
    low, high = window
    if not 0 <= low <= high:
        raise TradelabError(f"invalid window {low:g}s-{high:g}s: use e.g. 30s-3m")
    candidates = drill_faults(venues)
    if scenario is not None:
        check_fault(scenario)
        if scenario not in candidates:
            raise TradelabError(f"fault {scenario} cannot be played as a drill (no lever "
                                f"mitigates it); use one of {', '.join(candidates)}")
    rng = random.Random(seed)
    wedging = [n for n in candidates if FAULTS[n].cleared_by_restart]
    persisting = level == 3 and rng.choice((False, True)) and bool(wedging) and (
        scenario is None or scenario in wedging)
    first = scenario or rng.choice(wedging if persisting else candidates)
    names = [first]
    if level == 3 and not persisting:
        others = [n for n in candidates if n != first]
        if not others:
            raise TradelabError(f"level 3 plays two faults at once, and this lab can play "
                                f"only {first} as a drill: use level 1 or 2")
        names.append(rng.choice(others))
    delay = round(rng.uniform(low, high), 1)
    faults = [_fault_plan(check_fault(n), rng, in_use or venues) for n in names]
    if persisting:
        faults[0].update(persists=True, trigger_s=max(1.0, round(rng.uniform(low, high), 1)))
    plan: dict[str, Any] = {
        "seed": seed, "level": level, "window_s": [low, high], "inject_after_s": delay,
        "faults": faults, "red_herring": None,
    }
    if level >= 2:
        herring: dict[str, Any] = dict(rng.choice(RED_HERRINGS))
        herring["after_s"] = round(rng.uniform(low, max(low, high)), 1)
        plan["red_herring"] = herring
    return plan


def _fault_plan(fault: Fault, rng: random.Random, venues: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {p: DRILL_PARAMS[p] for p in fault.params if p in DRILL_PARAMS}
    if "venue" in fault.params and venues:
        params["venue"] = rng.choice(sorted(venues))
    return {"fault": fault.name, "params": params}
