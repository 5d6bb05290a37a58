"""The one interface every runtime driver implements, and the typed status it reports.

    driver.inspect("api")        # ServiceStatus(name="api", state=ServiceState.RUNNING, ...)
    driver.pause("postgres")     # a primitive: one action on one service
    driver.exec("postgres", ["pg_isready"])   # ExecResult(exit_code=0, output="...")

The orchestrator (tradelab.orchestrator) plans and carries out `up`, `down`,
`status`, `doctor`, runtime faults and operator levers; a driver only knows how to do
each primitive on its runtime (Docker containers, supervised local processes; a
Kubernetes driver would be a third). A primitive a runtime cannot carry out raises
`unsupported(kind, primitive, service)`: one line naming the runtime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, TextIO

from tradelab.errors import TradelabError

if TYPE_CHECKING:
    from tradelab.stack import Stack


class RuntimeKind(StrEnum):
    DOCKER = "docker"
    LOCAL = "local"


class ServiceState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    STARTING = "starting"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    EXITED = "exited"
    CREATED = "created"
    DEAD = "dead"
    MISSING = "missing"  # not created (yet)
    UNAVAILABLE = "unavailable"  # cannot run on this runtime (e.g. Grafana off Docker)


class Action(StrEnum):
    """What `up` does for one service, as compose's convergence plan says it."""

    CREATE = "create"  # nothing of it exists yet
    RECREATE = "recreate"  # it exists, but its spec changed
    START = "start"  # it exists as specified, and is not running
    NOTHING = "nothing"  # running (a one-shot: done) as specified


class Health(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    STARTING = "starting"
    NONE = "none"  # running, and no check declared
    NOT_APPLICABLE = "n/a"  # not running: no health to speak of


@dataclass
class ServiceStatus:
    name: str
    state: ServiceState
    health: Health
    url: str | None = None
    detail: str = ""
    # Unix time its (oldest) process started, while it runs; None when unknown. Whole
    # seconds on the local runtime (supervisord): never later than the real start.
    started_at: float | None = None
    exit_code: int | None = field(default=None, repr=False)  # of an exited service

    def __post_init__(self) -> None:
        self.state = ServiceState(self.state)
        self.health = Health(self.health)

    def as_dict(self) -> dict[str, str | None]:
        shown = {k: v for k, v in asdict(self).items() if k != "exit_code"}
        return {**shown, "state": str(self.state), "health": str(self.health)}


@dataclass(frozen=True)
class Check:
    """One line of `tradelab doctor`: ok True (fine), False (blocks `up`), None (a note)."""

    check: str
    ok: bool | None
    detail: str

    def as_dict(self) -> dict[str, str | bool | None]:
        return asdict(self)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str


def unsupported(kind: RuntimeKind, primitive: str, service: str,
                can: RuntimeKind | None = None) -> TradelabError:
    """The one error for a primitive a runtime cannot carry out (and which one can)."""
    also = f": only the {can} runtime can (`tradelab up --runtime {can}`)" if can else ""
    return TradelabError(f"the {kind} runtime cannot {primitive} {service}{also}")


class Driver(Protocol):
    """What the orchestrator asks of a runtime. Service name first, everywhere."""

    kind: RuntimeKind

    @property
    def stack(self) -> Stack:
        """The Stack built for this runtime."""

    @property
    def name(self) -> str:
        """The runtime's name ("docker", "local"), as status and messages print it."""

    # -- the lab as a whole ------------------------------------------------------------
    def is_up(self) -> bool:
        """True when a lab of this runtime exists (any service created)."""

    def selectable(self, only: list[str] | None, without: list[str] | None) -> list[str]:
        """The services `up --only/--without` runs here, in start order."""

    def down(self, volumes: bool = False) -> list[str]:
        """Stop and remove everything; keep data unless `volumes`; return what data was
        deleted (paths, volume names: what `down --volumes` prints)."""

    def status(self) -> list[ServiceStatus]:
        """Every service of the stack, running or not."""

    def host_ports(self, service: str) -> list[tuple[str, int]]:
        """(address, port) pairs `service` holds on this machine while it runs."""

    def recover(self) -> None:
        """Clean up what a dead control process left (local: the programs of a killed
        supervisord, which hold the lab's ports); before `up` checks the ports."""

    def probes(self, names: list[str]) -> list[Check]:
        """The runtime's doctor checks for running `names`: the first says whether the
        runtime answers at all; then binaries, memory, images (as `preflight` judges them)."""

    def preflight(self, names: list[str], build: bool) -> None:
        """Raise one TradelabError naming everything `up` of `names` would lack (Docker:
        each image neither here nor pullable), before anything is created."""

    # -- what `up` is made of (tradelab.orchestrator.up plans and orders them) ----------
    def prepare(self, names: list[str], build: bool) -> None:
        """Make ready what `names` share before any of them is planned: Docker pulls and
        builds images, makes the network and volumes; local writes the supervisord config
        and starts supervisord."""

    def action_for(self, service: str) -> Action:
        """What `up` has to do for `service` now (after prepare)."""

    def finish(self, failed: bool) -> None:
        """The end of an `up`: when it failed, take back what prepare and create made
        (the lab is never left half made); else tidy up (Docker: replaced app images)."""

    # -- primitives --------------------------------------------------------------------
    def inspect(self, service: str) -> ServiceStatus:
        """The service's state and health now."""

    def create(self, service: str) -> None:
        """Create (or recreate, when its spec changed) and start the service; returns
        without waiting for it to be healthy."""

    def start(self, service: str) -> None: ...

    def stop(self, service: str) -> None: ...

    def kill(self, service: str) -> None:
        """SIGKILL the service's processes (a crash, as chaos sees it)."""

    def pause(self, service: str) -> None:
        """Freeze the service's processes (SIGSTOP / cgroup freezer): alive, answering nothing."""

    def unpause(self, service: str) -> None: ...

    def signal(self, service: str, signame: str) -> None:
        """Send the signal `signame` ("HUP") to the service's main process (a reload)."""

    def restart(self, service: str) -> None:
        """Stop and start the service (reattached to the lab's network where it was cut)."""

    # A network cut: the service off the lab's network and back (where a runtime has one).
    def disconnect(self, service: str) -> None: ...

    def connect(self, service: str) -> None: ...

    def exec(self, service: str, argv: list[str]) -> ExecResult:
        """Run `argv` where the service runs (in its container / beside its process)."""

    def logs(self, service: str, follow: bool = False, tail: int | None = 100,
             out: TextIO | None = None) -> None:
        """Write the service's logs to `out` (default stdout)."""

    def health(self, service: str) -> Health:
        """One health check of the service now (Docker runs the image's check command
        at once instead of waiting for its next interval)."""

    def scale(self, service: str, replicas: int) -> None:
        """Run `replicas` copies of `service` (Locust workers) until the next `up`."""
