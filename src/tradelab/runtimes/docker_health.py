"""Waiting for a service's containers: until a compose-style condition holds, or one clear error.

    wait_for(runtime.containers, service, service.ready_condition, deadline, timeout, echo)

The conditions are compose's `depends_on` ones: service_started, service_healthy (the
image's health check, or running when it has none) and service_completed_successfully
(a one-shot exited 0). A container that stopped, or one Docker keeps restarting, fails
the wait at once with its last log lines, so a broken service never costs the timeout.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tradelab.errors import TradelabError
from tradelab.stack import Service

POLL_S = 0.5


def wait_for(containers_of: Callable[[str], list], svc: Service, condition: str,
             deadline: float, timeout: float, echo: Callable[[str], None],
             probe: bool = False) -> None:
    """Until `condition` holds for every replica of `svc`; a failure names its last log lines.

    With `probe` (a dependency others wait for), the service's health check is also
    run here, right away: Docker 20.10 runs the first check only one interval after
    the start, and every link of the dependency chain would wait that long.
    """
    name = svc.name
    last: tuple | None = None
    while True:
        containers = containers_of(name)
        if not containers:
            raise TradelabError(f"service {name} has no container: run `tradelab up`")
        states = [state(c) for c in containers]
        if all(meets(s, condition) for s in states):
            echo(f"{name}: {describe(states[0], condition)}")
            return
        if probe and condition == "service_healthy" and all(
                s["Status"] == "running" for s in states) and all(
                probe_now(c, svc) for c in containers):
            echo(f"{name}: ready")
            return
        for c, s in zip(containers, states, strict=True):
            # "restarting": it crashed and Docker's restart policy is looping it.
            if s["Status"] in ("exited", "dead", "restarting") and not meets(s, condition):
                what = "failed" if condition == "service_completed_successfully" else "stopped"
                raise TradelabError(f"{name} {what} (exit {s.get('ExitCode')}); "
                                    f"its last log lines:\n{tail(c)}")
        now = tuple(describe(s, condition) for s in states)
        if now != last:
            echo(f"{name}: waiting ({now[0]})")
            last = now
        if time.monotonic() > deadline:
            raise TradelabError(
                f"{name} did not become {goal(condition)} within {timeout:g}s "
                f"(a slow machine: raise --timeout); its last log lines:\n"
                f"{tail(containers[0])}")
        time.sleep(POLL_S)


def probe_now(container, svc: Service) -> bool:
    """Run the service's health check command in the container now: True on exit 0."""
    if svc.healthcheck is None:
        return True
    kind, *rest = svc.healthcheck.test
    cmd = ["/bin/sh", "-c", rest[0]] if kind == "CMD-SHELL" else rest
    try:
        return container.exec_run(cmd, user=svc.user or "").exit_code == 0
    except Exception:  # noqa: BLE001 - not answering yet is the common case
        return False


def state(container) -> dict[str, Any]:
    container.reload()
    return container.attrs["State"]


def started_at(state: dict[str, Any]) -> float | None:
    """Unix time a running container last started (Docker's StartedAt, nanoseconds cut)."""
    if state.get("Status") != "running" or not state.get("StartedAt"):
        return None
    text = re.sub(r"(\.\d{6})\d*", r"\1", state["StartedAt"]).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def meets(state: dict[str, Any], condition: str) -> bool:
    if condition == "service_completed_successfully":
        return state["Status"] == "exited" and state.get("ExitCode") == 0
    if state["Status"] != "running":
        return False
    health = (state.get("Health") or {}).get("Status")
    return condition == "service_started" or health in (None, "healthy")


def describe(state: dict[str, Any], condition: str) -> str:
    if condition == "service_completed_successfully" and state["Status"] == "exited":
        return "done" if state.get("ExitCode") == 0 else f"exit {state.get('ExitCode')}"
    return (state.get("Health") or {}).get("Status") or state["Status"]


def goal(condition: str) -> str:
    return {"service_completed_successfully": "done", "service_healthy": "healthy"}.get(
        condition, "running")


def tail(container, lines: int = 20) -> str:
    try:
        text = container.logs(tail=lines).decode(errors="replace").rstrip()
    except Exception:  # noqa: BLE001 - best effort while reporting another error
        text = ""
    return text or "(no output)"
