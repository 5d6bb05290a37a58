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
from typing import Any, Literal

from tradelab.errors import TradelabError

DEFAULT_FAULT = "exchange-errors"
DEFAULT_RATE = 0.6
DEFAULT_LATENCY_MS = 800
MAX_LATENCY_MS = 10_000  # past this a latency fault only parks worker threads past `chaos off`


ALL_RUNTIMES = ("docker", "local")

# The driver primitives a runtime fault is made of (tradelab.orchestrator.Driver).
Action = Literal["stop", "start", "kill", "pause", "unpause", "restart", "disconnect",
                 "connect"]


@dataclass(frozen=True)
class Fault:
    name: str
    kind: Literal["in-process", "runtime"]  # read from the chaos file | done by a driver
    description: str
    params: tuple[str, ...] = ()  # which of rate / latency_ms / venue / persist it takes
    service: str | None = None  # runtime faults: the service acted on ...
    on: Action | None = None  # ... the primitive that turns the fault on ...
    off: Action | None = None  # ... and the one that undoes it
    breaks: str = ""  # what the fault breaks, as a user of the lab sees it
    signal: str = ""  # the metric (or log) it leaves
    alert: str = ""  # the alert that detects it (docs/runbooks.md has its section)
    runtimes: tuple[str, ...] = ALL_RUNTIMES  # the runtimes that can carry it out
    # The `tradelab ops` levers that mitigate it (an operator's fix, not `chaos off`).
    mitigated_by: tuple[str, ...] = ()
    # An in-process fault that models a wedged process: a process started after the
    # fault went on does not have it, so `ops restart SERVICE` mitigates it.
    cleared_by_restart: bool = False
    # A module run detached (`python -m MODULE --lab-dir L --since S`) that carries the
    # fault out while it is on, and prints "ready" once it does (e.g. holds a lock).
    process: str | None = None

    @property
    def restarted_service(self) -> str | None:
        """The service whose restart clears this wedged-process fault (its `ops restart`)."""
        if not self.cleared_by_restart:
            return None
        return next((lever.split()[-1] for lever in self.mitigated_by
                     if lever.startswith("ops restart ")), None)

    @property
    def runbook(self) -> str:
        """The runbook section that answers the fault's alert."""
        return f"docs/runbooks.md#{self.alert.lower()}"

    def as_dict(self) -> dict[str, Any]:
        """What `tradelab chaos list --json` and docs/chaos.md show of the fault."""
        return {"fault": self.name, "kind": self.kind, "description": self.description,
                "options": " ".join("--" + p.replace("_", "-") for p in self.params) or "-",
                "breaks": self.breaks, "signal": self.signal, "alert": self.alert,
                "runbook": self.runbook, "runtimes": list(self.runtimes),
                "mitigated_by": list(self.mitigated_by)}


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("exchange-errors", "in-process",
          "a venue (--venue; default every venue) fails a share of orders "
          "(CHAOS: Forced connection failure)", ("rate", "venue"),
          breaks="orders end FAILED instead of FILLED",
          signal='tradelab_venue_orders_total{status="FAILED"}',
          alert="TradeProcessingBurnRateHigh",
          mitigated_by=("ops route --venue OTHER",)),
    Fault("exchange-latency", "in-process",
          "a venue (--venue; default every venue) answers latency_ms slower",
          ("latency_ms", "venue"),
          breaks="orders take seconds to fill",
          signal="tradelab_trade_processing_duration_seconds",
          alert="TradeProcessingSlow",
          mitigated_by=("ops route --venue OTHER",)),
    Fault("market-data-stale", "in-process",
          "a venue's price feed (--venue; default every venue) stops: its prices age and "
          "the engine rejects orders on them", ("venue",),
          breaks="orders end REJECTED (STALE_MARKET_DATA)",
          signal="tradelab_market_data_age_seconds",
          alert="MarketDataStale",
          mitigated_by=("ops route --venue OTHER",)),
    Fault("api-errors", "in-process", "the API answers a share of POST /trades with 500",
          ("rate",),
          breaks="clients see 500s; orders are not accepted",
          signal='tradelab_http_requests_total{code="500"}',
          alert="OrderAcceptanceBurnRateHigh",
          mitigated_by=("ops restart api",), cleared_by_restart=True),
    Fault("api-latency", "in-process", "the API answers latency_ms slower", ("latency_ms",),
          breaks="every request is slow",
          signal="tradelab_http_request_duration_seconds",
          alert="ApiLatencyBurnRateHigh",
          mitigated_by=("ops restart api",), cleared_by_restart=True),
    Fault("engine-stall", "in-process",
          "the engine stops picking up orders; the backlog grows",
          breaks="accepted orders stay NEW",
          signal="tradelab_oldest_pending_order_age_seconds",
          alert="OrderBacklogStale",
          mitigated_by=("ops restart engine",), cleared_by_restart=True),
    Fault("pool-exhaustion", "in-process",
          "the API's database connections are held and never given back (a leak)",
          breaks="requests wait for the pool, then answer 503 after api.db_timeout_s",
          signal="tradelab_db_pool_available == 0",
          alert="DatabasePoolExhausted",
          mitigated_by=("ops restart api",), cleared_by_restart=True),
    Fault("db-outage", "runtime", "PostgreSQL is stopped; started again on `chaos off`",
          service="postgres", on="stop", off="start",
          breaks="the API answers 503, the engine waits",
          signal="tradelab_db_up == 0",
          alert="DatabaseDown",
          mitigated_by=("ops restart postgres",)),
    Fault("db-pause", "runtime",
          "PostgreSQL is frozen (processes SIGSTOPped, container paused); woken on `chaos off`",
          service="postgres", on="pause", off="unpause",
          breaks="connections hang instead of being refused; the API answers 503 after"
                 " api.db_timeout_s",
          signal="tradelab_db_up == 0",
          alert="DatabaseDown",
          mitigated_by=("ops restart postgres",)),
    Fault("kill-api", "runtime", "the API's process is killed (SIGKILL)",
          service="api", on="kill", off="start",
          breaks="no order is accepted; connections refused",
          signal='changes(tradelab_process_start_time_seconds{job="api"}[10m]) > 0',
          alert="ServiceRestarted",
          mitigated_by=("ops restart api",)),
    Fault("kill-engine", "runtime", "the engine's process is killed (SIGKILL)",
          service="engine", on="kill", off="start",
          breaks="accepted orders stay NEW",
          signal='changes(tradelab_process_start_time_seconds{job="engine"}[10m]) > 0',
          alert="ServiceRestarted",
          mitigated_by=("ops restart engine",)),
    # -- resource faults and a network cut --
    Fault("cpu-hog", "in-process",
          "threads in the engine burn CPU (a runaway loop in a C extension)",
          breaks="the engine competes for CPU; orders take longer to execute",
          signal='tradelab_process_runnable_threads{job="engine"}',
          alert="ServiceCpuSaturated",
          mitigated_by=("ops restart engine",), cleared_by_restart=True),
    Fault("memory-leak", "in-process",
          "the API's workers keep memory they never free, up to 90% of memory.api",
          breaks="the API nears its memory limit; past it Docker kills the container",
          signal="tradelab_process_resident_memory_bytes / tradelab_process_memory_limit_bytes",
          alert="ServiceMemoryHigh",
          mitigated_by=("ops restart api",), cleared_by_restart=True),
    Fault("network-cut", "runtime",
          "the engine's container is cut off the lab's network (docker network disconnect)",
          service="engine", on="disconnect", off="connect",
          breaks="the engine reaches neither PostgreSQL nor Prometheus; orders stay NEW",
          signal='up{job="engine"} == 0',
          alert="ScrapeTargetDown", runtimes=("docker",),
          mitigated_by=("ops restart engine",)),
    # -- database locks, bad releases, clients and venues (issue 13) --------------------
    Fault("db-lock-contention", "in-process",
          "a session takes a SHARE lock on trades (as CREATE INDEX without CONCURRENTLY "
          "does) and sits idle in its transaction; order inserts and fills wait behind it",
          breaks="POST /trades waits out the lock timeout and answers 503; orders stay NEW",
          signal="tradelab_db_lock_timeouts_total",
          alert="DatabaseLockContention",
          mitigated_by=("ops db sessions --kill PID",
                        "ops db sessions --kill-idle-in-transaction"),
          process="tradelab.app.lock_holder"),
    Fault("bad-fills", "in-process",
          "a bad release of the engine fills a share (--rate) of limit orders past their "
          "limit price", ("rate",),
          breaks="limit orders fill at prices the client refused; `tradelab verify` names them",
          signal="tradelab_fills_outside_limit_total",
          alert="FillsOutsideLimit",
          mitigated_by=("ops halt",)),
    Fault("retry-storm", "in-process",
          "the load's clients send every order several times at once with its key; with "
          "--persist they get stuck resending the order in flight, also after the fault "
          "is off, until a 503 with Retry-After (`ops halt`) resets them", ("persist",),
          breaks="POST /trades traffic multiplies; idempotency is tested under pressure",
          signal="tradelab_idempotent_replays_total",
          alert="IdempotentReplaysHigh",
          mitigated_by=("ops halt", "ops resume")),
    Fault("exchange-down", "in-process",
          "a venue (--venue; default every venue) stops answering: each call waits out "
          "trading.venue_timeout_ms and the order ends FAILED (EXCHANGE_TIMEOUT)", ("venue",),
          breaks="orders sent to the venue end FAILED after a timeout; execution slows",
          signal='tradelab_venue_orders_total{status="FAILED"}',
          alert="VenueFailing",
          mitigated_by=("ops route --venue OTHER",)),
)}


def known_faults() -> str:
    return ", ".join(FAULTS)


def check_fault(name: str) -> Fault:
    """The fault called `name`, or a TradelabError listing the known ones."""
    try:
        return FAULTS[name]
    except KeyError:
        raise TradelabError(f"unknown fault {name!r}: use one of {known_faults()}") from None


def check_runtime(fault: Fault, runtime: str) -> None:
    """Refuse, in one line naming the runtime that can, a fault `runtime` cannot carry out."""
    if runtime not in fault.runtimes:
        can = " or ".join(fault.runtimes)
        raise TradelabError(f"the {runtime} runtime cannot carry out {fault.name}: only the "
                            f"{can} runtime can (`tradelab up --runtime {fault.runtimes[0]}`)")


def runtime_faults() -> dict[str, Fault]:
    """The faults a driver carries out (service, on, off all set)."""
    return {name: f for name, f in FAULTS.items() if f.kind == "runtime"}


CATALOGUE_BEGIN = "<!-- catalogue: generated by `python -m tradelab.faults`; do not edit -->"
CATALOGUE_END = "<!-- end of catalogue -->"


def catalogue_markdown() -> str:
    """The catalogue as the Markdown table docs/chaos.md holds (tests/test_chaos.py checks it)."""
    lines = [CATALOGUE_BEGIN, "",
             "| fault | kind | options | what it breaks | signal | alert (runbook) | runtimes "
             "| mitigated by |",
             "|---|---|---|---|---|---|---|---|"]
    for f in FAULTS.values():
        runbook = f"[{f.alert}](runbooks.md#{f.alert.lower()})"
        lines.append(f"| `{f.name}` | {f.kind} | {f.as_dict()['options']} | {f.breaks} "
                     f"| `{f.signal}` | {runbook} | {', '.join(f.runtimes)} "
                     f"| {', '.join(f'`{m}`' for m in f.mitigated_by)} |")
    return "\n".join([*lines, "", CATALOGUE_END]) + "\n"


if __name__ == "__main__":
    print(catalogue_markdown(), end="")
