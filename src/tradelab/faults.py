"""The fault catalogue: every fault tradelab can turn on, what it does, what it takes.

    check_fault("db-outage")           # the Fault, or a TradelabError listing the known ones
    FAULTS["exchange-errors"].params   # ("rate",)

In-process faults are read from the chaos file by api and engine
(tradelab.chaos_state); runtime faults are carried out by the orchestrator through
a driver's primitives (tradelab.chaos). This module imports nothing heavy: the
containers, the CLI and the metrics all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tradelab.errors import TradelabError

DEFAULT_FAULT = "exchange-errors"
DEFAULT_RATE = 0.6
DEFAULT_LATENCY_MS = 800


# The driver primitives a runtime fault is made of (tradelab.orchestrator.Driver).
Action = Literal["stop", "start", "kill", "pause", "unpause", "restart"]


@dataclass(frozen=True)
class Fault:
    name: str
    kind: Literal["in-process", "runtime"]  # read from the chaos file | done by a driver
    description: str
    params: tuple[str, ...] = ()  # which of rate / latency_ms it takes
    service: str | None = None  # runtime faults: the service acted on ...
    on: Action | None = None  # ... the primitive that turns the fault on ...
    off: Action | None = None  # ... and the one that undoes it


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("exchange-errors", "in-process",
          "the simulated exchange fails a share of orders (CHAOS: Forced connection failure)",
          ("rate",)),
    Fault("exchange-latency", "in-process",
          "the simulated exchange answers latency_ms slower", ("latency_ms",)),
    Fault("api-errors", "in-process", "the API answers a share of POST /trades with 500",
          ("rate",)),
    Fault("api-latency", "in-process", "the API answers latency_ms slower", ("latency_ms",)),
    Fault("engine-stall", "in-process",
          "the engine stops picking up orders; the backlog grows"),
    Fault("db-outage", "runtime", "PostgreSQL is stopped; started again on `chaos off`",
          service="postgres", on="stop", off="start"),
    Fault("kill-api", "runtime", "the API's process is killed (SIGKILL)",
          service="api", on="kill", off="start"),
    Fault("kill-engine", "runtime", "the engine's process is killed (SIGKILL)",
          service="engine", on="kill", off="start"),
)}


def known_faults() -> str:
    return ", ".join(FAULTS)


def check_fault(name: str) -> Fault:
    """The fault called `name`, or a TradelabError listing the known ones."""
    try:
        return FAULTS[name]
    except KeyError:
        raise TradelabError(f"unknown fault {name!r}: use one of {known_faults()}") from None


def runtime_faults() -> dict[str, Fault]:
    """The faults a driver carries out (service, on, off all set)."""
    return {name: f for name, f in FAULTS.items() if f.kind == "runtime"}
