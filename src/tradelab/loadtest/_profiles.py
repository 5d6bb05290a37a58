"""Load profiles as plain schedules: how many users at second t of a run.

    tick("spike", t=42.0, users=50, spawn_rate=5, duration=120)   # -> (50, 50.0)
    tick("steady", t=130, users=50, spawn_rate=5, duration=120)   # -> None: the run is over

The shape classes in steady.py, spike.py and market_open.py only call `tick`;
keeping the schedule free of Locust makes it testable without gevent's
monkey-patching. Every profile is scaled to the run's duration: stages are
fractions of it, so `--duration 1m` and `--duration 1h` tell the same story.
The leading underscore keeps `locust -f <this directory>` from loading it as a locustfile.
"""

from __future__ import annotations

import math

DEFAULT_USERS = 20
DEFAULT_DURATION_S = 300.0

# profile -> stages of (end as a fraction of the duration, share of the peak users, pace).
# "ramp" moves at the requested spawn rate; "burst" gets there within about a second.
STAGES: dict[str, list[tuple[float, float, str]]] = {
    "steady": [(1.0, 1.0, "ramp")],
    "spike": [(0.4, 0.2, "ramp"), (0.6, 1.0, "burst"), (1.0, 0.2, "burst")],
    "market-open": [
        (0.15, 1.0, "burst"),  # the opening bell
        (0.3, 0.5, "ramp"),  # the first rush fades
        (0.75, 0.2, "ramp"),  # midday lull
        (1.0, 1.0, "burst"),  # the closing auction
    ],
}
PROFILES = tuple(STAGES)


def tick(profile: str, t: float, users: int, spawn_rate: float,
         duration: float) -> tuple[int, float] | None:
    """(user count, spawn rate) at `t` seconds into the run; None once it is over."""
    if profile not in STAGES:
        raise ValueError(f"unknown load profile {profile!r}: use one of {', '.join(PROFILES)}")
    if t >= duration:
        return None
    for end, share, pace in STAGES[profile]:
        if t < end * duration:
            count = max(1, math.ceil(users * share))
            rate = float(spawn_rate) if pace == "ramp" else float(max(spawn_rate, users))
            return count, rate
    return None  # unreachable: the last stage ends at 1.0


def options(parsed_options: object) -> tuple[int, float, float]:
    """(peak users, spawn rate, duration s) from Locust's -u, -r and -t, with defaults.

    In the web UI these are the "users", "ramp up" and "run time" fields, because the
    shapes set `use_common_options`; a remote master receives them through /swarm.
    """
    # /swarm's user count lands in `users` in older Locusts (2.32, the lab's image) and
    # in `num_users` (the -u option itself) in newer ones.
    users = int(getattr(parsed_options, "users", None) or getattr(parsed_options, "num_users",
                                                                  None) or DEFAULT_USERS)
    rate = float(getattr(parsed_options, "spawn_rate", None) or max(1.0, users / 10))
    duration = float(getattr(parsed_options, "run_time", None) or DEFAULT_DURATION_S)
    return users, rate, duration
