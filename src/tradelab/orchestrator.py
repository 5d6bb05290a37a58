"""The lab orchestrator: `up`, `down`, `status`, `doctor`, faults and levers, once for all runtimes.

    report = up(settings, lab, "auto", without=["grafana"])   # UpReport(driver, services)
    status(settings, lab).as_dict()                           # services, chaos, alerts
    doctor(settings, lab).ok                                  # DoctorReport(runtime, checks)
    down(settings, lab, volumes=True)                         # DownReport(runtime, removed)
    act(running_driver(settings, lab), "pause", "postgres")   # one primitive (a fault, a lever)
    wait_healthy(driver, "api", timeout_s=60)                 # after a lever: back in service?
    converge(driver, names, timeout=300, echo=print)          # [Step("api", Action.START), ...]

What every runtime shares lives here: choosing the driver, selecting services,
rendering what they read (render writes every output), the one port check, doctor,
a plan per service (create, recreate, start, nothing: compose's convergence plan),
the start in dependency order with health waits, and the status report. A driver
(tradelab.runtimes.base.Driver) only carries out primitives on its runtime; nothing
here assumes Docker or processes.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tradelab.alerts import AlertmanagerUnavailable, firing_alerts
from tradelab.chaos_state import store_for
from tradelab.errors import TradelabError
from tradelab.faults import Action as Primitive
from tradelab.files import remove_path, write_atomic
from tradelab.host import port_free
from tradelab.limits import known_limits
from tradelab.render import render_stack
from tradelab.runtimes import docker_available
from tradelab.runtimes.base import (
    Action,
    Check,
    Driver,
    Health,
    RuntimeKind,
    ServiceState,
    ServiceStatus,
    unsupported,
)
from tradelab.runtimes.docker import DockerRuntime
from tradelab.runtimes.local import LocalRuntime
from tradelab.stack import mounted_config_digest
from tradelab.web_ui import web_page

if TYPE_CHECKING:
    from tradelab.lab import Lab
    from tradelab.settings import Settings

NO_LAB = "no lab is running: start one with `tradelab up`"
# How each runtime holds a port: a container publishes it, a process listens on it.
_HOLDS = {RuntimeKind.DOCKER: "publish", RuntimeKind.LOCAL: "listen on"}


# -- choosing the driver ------------------------------------------------------------------

def select_driver(settings: Settings, lab: Lab, kind: str | None = None,
                  echo: Callable[[str], None] | None = None) -> Driver:
    """The driver for `kind` (auto | docker | local); auto prefers Docker when it answers."""
    kind = kind or settings.runtime
    if kind == "auto":
        kind = RuntimeKind.DOCKER if docker_available() else RuntimeKind.LOCAL
    if kind == RuntimeKind.DOCKER:
        return DockerRuntime(settings, lab, echo=echo)
    if kind == RuntimeKind.LOCAL:
        return LocalRuntime(settings, lab, echo=echo)
    raise TradelabError(f"unknown runtime {kind!r}: use auto, docker or local")


def running_driver(settings: Settings, lab: Lab) -> Driver:
    """The driver of the lab that is up now, or a TradelabError saying to run `tradelab up`."""
    driver = lab_driver(settings, lab)
    if driver is None:
        raise TradelabError(NO_LAB)
    return driver


def lab_driver(settings: Settings, lab: Lab,
               echo: Callable[[str], None] | None = None) -> Driver | None:
    """The driver of the lab that is up now, wherever it runs, or None when it is down.

    The runtime the lab last came up on is asked first (no Docker ping for a local
    lab); the truth is the runtime's own (a container, a supervisord), never the file.
    """
    remembered = remembered_runtime(lab)
    kinds = [RuntimeKind.LOCAL]
    if settings.runtime != RuntimeKind.LOCAL:
        kinds.insert(0, RuntimeKind.DOCKER)
    if remembered in kinds:
        kinds.remove(remembered)
        kinds.insert(0, remembered)
    for kind in kinds:
        if kind is RuntimeKind.DOCKER and not docker_available():
            continue
        driver = select_driver(settings, lab, kind, echo=echo)
        if driver.is_up():
            return driver
    return None


def remembered_runtime(lab: Lab) -> RuntimeKind | None:
    """The runtime the lab was last brought up on (state/runtime), None if never."""
    try:
        return RuntimeKind(lab.runtime_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _remember_runtime(lab: Lab, kind: RuntimeKind) -> None:
    if remembered_runtime(lab) is not kind:
        write_atomic(lab.runtime_file, f"{kind}\n")


# -- up, down ------------------------------------------------------------------------------

@dataclass
class UpReport:
    driver: Driver
    services: list[ServiceStatus]


def up(settings: Settings, lab: Lab, runtime: str | None = None,
       only: list[str] | None = None, without: list[str] | None = None, build: bool = True,
       timeout: float = 300, echo: Callable[[str], None] | None = None) -> UpReport:
    """Bring the lab up on `runtime` (default: where it runs already, else the setting):
    select, render, check ports, then let the driver create and start what is missing
    or changed, in dependency order, until healthy."""
    driver = _driver_for_up(settings, lab, runtime, echo or _progress)
    lab.ensure()
    lab.ensure_secrets()
    names = driver.selectable(only, without)
    driver.recover()
    running = {s.name for s in driver.status() if s.state is ServiceState.RUNNING}
    configs = {name: config_digest(driver, name) for name in names}
    render_for(driver, settings, lab, names)
    check_ports(driver, settings, names)
    driver.preflight(names, build)
    converge(driver, names, build=build, timeout=timeout, echo=echo or _progress)
    for name in names:  # still the old process: it rereads its rendered config
        if name in running and config_digest(driver, name) != configs[name] \
                and driver.stack.services[name].reload_signal:
            (echo or _progress)(f"reloading {name} (its rendered configuration changed)")
            reload(driver, name)
    _remember_runtime(lab, driver.kind)
    # What cannot run on this runtime is listed too, with why (local: Grafana, Loki).
    return UpReport(driver, with_web_pages([s for s in driver.status() if s.name in names
                                            or s.state is ServiceState.UNAVAILABLE]))


def _driver_for_up(settings: Settings, lab: Lab, runtime: str | None,
                   echo: Callable[[str], None]) -> Driver:
    """Where the lab runs already; else the runtime asked for (auto: Docker if it answers).
    Asking for another runtime than the one it runs on is refused: both would want the
    lab's ports."""
    wanted = runtime or settings.runtime
    running = lab_driver(settings, lab, echo=echo)
    if running is not None:
        if wanted not in ("auto", running.kind):
            raise TradelabError(
                f"the lab is up on the {running.kind} runtime: take it down first "
                f"(`tradelab down`), then `tradelab up --runtime {wanted}`")
        return running
    driver = select_driver(settings, lab, wanted, echo=echo)
    if wanted == "auto" and driver.kind is RuntimeKind.LOCAL:
        echo("no Docker engine answers: using the local runtime (--runtime docker to insist)")
    return driver


def config_digest(driver: Driver, service: str) -> str:
    """A digest of the rendered files `service` reads."""
    return mounted_config_digest(driver.stack.services[service], driver.stack.rendered_dir)


def reload(driver: Driver, service: str) -> None:
    """Make a running service reread its rendered config: its reload signal (Prometheus,
    Alertmanager: SIGHUP) through the driver. No HTTP lifecycle API is enabled."""
    signame = driver.stack.services[service].reload_signal
    if signame is None:
        raise TradelabError(f"{service} cannot reload its configuration: restart it "
                            f"(`tradelab ops restart {service}`)")
    driver.signal(service, signame)


# -- the plan, and the start in dependency order -------------------------------------------

POLL_S = 0.25
_DOING = {Action.CREATE: "creating", Action.RECREATE: "recreating", Action.START: "starting"}


@dataclass(frozen=True)
class Step:
    """One service's part of `up`: what to do, then the condition it must reach."""

    service: str
    action: Action
    condition: str  # compose's: service_healthy, service_started, service_completed_successfully


def converge(driver: Driver, names: list[str], build: bool = True, timeout: float = 300,
             echo: Callable[[str], None] | None = None) -> list[Step]:
    """Make the services `names` (in start order) run as specified: prepare, plan each
    one, then start each as soon as what it depends on holds, and wait for all. A failure
    takes back what this `up` made (driver.finish) and names the service's last log lines."""
    echo = echo or _progress
    started_at = time.monotonic()
    failed = True
    try:
        driver.prepare(names, build)
        steps = [Step(n, driver.action_for(n), driver.stack.services[n].ready_condition)
                 for n in names]
        if all(s.action is Action.NOTHING for s in steps):
            echo(f"the lab is already up ({driver.name} runtime): nothing to do")
        else:
            _start_in_order(driver, steps, started_at + timeout, timeout, echo)
            echo(f"all services healthy in {time.monotonic() - started_at:.1f}s")
        failed = False
        return steps
    finally:
        driver.finish(failed)


def _start_in_order(driver: Driver, steps: list[Step], deadline: float, timeout: float,
                    echo: Callable[[str], None]) -> None:
    names = [s.service for s in steps]
    needs = {s.service: [(d.service, d.condition) for d in
                         driver.stack.services[s.service].depends_on if d.service in names]
             for s in steps}
    held: set[tuple[str, str]] = set()  # (service, condition) seen to hold
    started: list[Step] = []
    while True:
        # In start order, as compose does: each as soon as what it depends on holds.
        for step in steps[len(started):]:
            if not all(_holds(driver, dep, cond, held, probe=True)
                       for dep, cond in needs[step.service]):
                break
            if step.action is not Action.NOTHING:
                echo(f"{_DOING[step.action]} {step.service}")
                (driver.start if step.action is Action.START else driver.create)(step.service)
            started.append(step)
        waiting = []
        for step in started:
            if (step.service, step.condition) in held:
                continue
            if _holds(driver, step.service, step.condition, held):
                if step.action is not Action.NOTHING:
                    echo(f"{step.service} {_GOAL[step.condition]}")
            else:
                waiting.append(step)
        if len(started) == len(steps) and not waiting:
            return
        if time.monotonic() > deadline:
            late = (waiting or [s for s in steps if s not in started])[0]
            raise _failure(driver, late.service, f"{late.service} did not become "
                           f"{_GOAL[late.condition]} within {timeout:g}s (a slow machine: "
                           "raise --timeout)")
        time.sleep(POLL_S)


_GOAL = {"service_completed_successfully": "done", "service_healthy": "healthy",
         "service_started": "running"}
_OVER = (ServiceState.EXITED, ServiceState.DEAD, ServiceState.RESTARTING)


def _holds(driver: Driver, name: str, condition: str, held: set[tuple[str, str]],
           probe: bool = False) -> bool:
    """Whether `condition` holds for `name` now; a service that stopped instead fails at
    once. `probe` (others wait on it): a health check now counts, not only the runtime's
    own record (Docker runs its first check one interval after the start)."""
    if (name, condition) in held:
        return True
    status = driver.inspect(name)
    if condition == "service_completed_successfully":
        ok = status.state is ServiceState.EXITED and status.exit_code == 0
    elif status.state is not ServiceState.RUNNING:
        ok = False
    elif condition == "service_started":
        ok = True
    else:
        ok = status.health in (Health.HEALTHY, Health.NONE) or (
            probe and driver.health(name) is Health.HEALTHY)
    if ok:
        held.add((name, condition))
        return True
    if status.state in _OVER:
        what = "failed" if condition == "service_completed_successfully" else "stopped"
        code = "could not start" if status.exit_code is None else f"exit {status.exit_code}"
        raise _failure(driver, name, f"{name} {what} ({code})")
    return False


def _failure(driver: Driver, name: str, message: str) -> TradelabError:
    """`message` with the service's last log lines."""
    out = io.StringIO()
    try:
        driver.logs(name, tail=15, out=out)
    except TradelabError:
        pass
    lines = out.getvalue().rstrip() or "(no output)"
    return TradelabError(f"{message}; its last log lines:\n{lines}")


def render_for(driver: Driver, settings: Settings, lab: Lab, names: list[str]) -> None:
    """Write what the services `names` read (configs, the app image's build context)."""
    render_stack(driver.stack.subset(names), settings, lab, driver.stack.rendered_dir)


@dataclass
class DownReport:
    runtime: str  # the runtime(s) the lab was on; "none" when nothing ran
    removed: list[str] = field(default_factory=list)  # what --volumes deleted


def down(settings: Settings, lab: Lab, runtime: str | None = None,
         volumes: bool = False) -> DownReport:
    """Take the lab down (runtime "none" when nothing ran: not an error, there is nothing
    to do); with `volumes`, delete its data, the load ledgers that describe it included,
    and report what went."""
    if runtime:
        driver = select_driver(settings, lab, runtime)
    else:
        try:
            driver = running_driver(settings, lab)
        except TradelabError:  # nothing runs; `--volumes` may still have data to delete
            if not volumes:
                # A killed supervisord leaves its programs behind: they still go.
                select_driver(settings, lab, RuntimeKind.LOCAL).down()
                return DownReport("none")
            # the data may be of either runtime: delete both kinds
            kinds = [RuntimeKind.LOCAL] + ([RuntimeKind.DOCKER] if docker_available() else [])
            removed = [gone for kind in kinds
                       for gone in select_driver(settings, lab, kind).down(volumes=True)]
            return DownReport("none", removed + _remove_ledgers(lab))
    removed = driver.down(volumes=volumes)
    return DownReport(driver.name, removed + (_remove_ledgers(lab) if volumes else []))


def _remove_ledgers(lab: Lab) -> list[str]:
    """The load ledgers: they describe orders of the database just deleted."""
    gone = remove_path(lab.state_dir / "load")
    return [f"{gone}: the load ledgers"] if gone else []


# -- the one port check --------------------------------------------------------------------

def port_setting(settings: Settings, port: int) -> str | None:
    """The settings key a port comes from ("ports.api"), or None for a fixed port."""
    keys = settings.port_keys(port)
    return keys[0] if keys else None


def port_problems(driver: Driver, settings: Settings, names: list[str]
                  ) -> list[tuple[str, int, str | None]]:
    """(service, port, problem or None) for every port `names` hold on this machine;
    a service of this lab that runs already holds its own ports."""
    running = {s.name for s in driver.status() if s.state is ServiceState.RUNNING}
    owners: dict[int, list[str]] = {}
    for name in names:
        for _, port in driver.host_ports(name):
            if name not in owners.setdefault(port, []):
                owners[port].append(name)
    found: list[tuple[str, int, str | None]] = []
    for name in names:
        for address, port in driver.host_ports(name):
            if len(owners[port]) > 1:
                keys = " = ".join(settings.port_keys(port)) or "ports"
                found.append((name, port, (
                    f"{' and '.join(owners[port])} would both {_HOLDS[driver.kind]} port "
                    f"{port} ({keys}): give each its own port in tradelab.yaml")))
            elif name not in running and not port_free(address, port):
                found.append((name, port, _port_taken(driver.kind, settings, name, port)))
            else:
                found.append((name, port, None))
    return found


def check_ports(driver: Driver, settings: Settings, names: list[str]) -> None:
    """Fail before anything is created when a port is shared or taken by something else."""
    problems = [p for _, _, p in port_problems(driver, settings, names) if p]
    if problems:  # two settings with one port first: the user's own mistake
        shared = [p for p in problems if " would both " in p]
        raise TradelabError((shared or problems)[0])


def _port_taken(kind: RuntimeKind, settings: Settings, service: str, port: int) -> str:
    key = port_setting(settings, port)
    if kind is RuntimeKind.DOCKER:
        key = key or "ports"
        return (f"port {port} ({key}) is in use: stop what uses it, "
                f"or set {key} to a free port in tradelab.yaml")
    if key is None:
        return f"port {port} ({service}'s fixed port) is already in use: free it"
    return f"port {port} ({key}) is already in use: free it or set {key} in tradelab.yaml"


# -- doctor, status ------------------------------------------------------------------------

@dataclass
class DoctorReport:
    runtime: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.ok is False for c in self.checks)


def doctor(settings: Settings, lab: Lab, runtime: str | None = None,
           only: list[str] | None = None, without: list[str] | None = None) -> DoctorReport:
    """Can the lab (`up --only/--without`) run here? The driver's probes, then every port
    it needs; it fails where `up` would."""
    driver = select_driver(settings, lab, runtime)
    names = driver.selectable(only, without)
    checks = driver.probes(names)
    limits = known_limits(settings, driver.name, names)  # notes: what it cannot promise here
    if checks and checks[0].ok is False:
        return DoctorReport(driver.name, checks + limits)  # unreachable: ports mean nothing
    running = {s.name for s in driver.status() if s.state is ServiceState.RUNNING}
    for name, port, problem in port_problems(driver, settings, names):
        key = port_setting(settings, port) or f"{name}'s fixed port"
        detail = problem or f"{key} for {name}" + (" (this lab)" if name in running else "")
        checks.append(Check(f"port {port}", problem is None, detail))
    return DoctorReport(driver.name, checks + limits)


@dataclass
class StatusReport:
    """The lab now. Down: `up` False, no services, `runtime` the one it last ran on."""

    runtime: str | None
    up: bool
    services: list[ServiceStatus]
    chaos: dict[str, Any]
    alerts: list[dict[str, Any]] | None  # None: Alertmanager cannot be asked

    def as_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "up": self.up,
                "services": [s.as_dict() for s in self.services],
                "chaos": self.chaos, "alerts": self.alerts}


def status(settings: Settings, lab: Lab) -> StatusReport:
    """Every service of the lab where it runs, the chaos faults on, and the alerts firing
    in Alertmanager; a lab that is down says so (and where it last ran)."""
    from tradelab.chaos_state import reported_faults

    chaos = reported_faults(store_for(settings, lab).active())
    driver = lab_driver(settings, lab)
    if driver is None:
        last = remembered_runtime(lab)
        return StatusReport(str(last) if last else None, False, [], chaos, None)
    services = with_web_pages(driver.status())
    return StatusReport(driver.name, True, services, chaos, _firing_alerts(settings, services))


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def with_web_pages(services: list[ServiceStatus]) -> list[ServiceStatus]:
    """Each running service's URL made a page that opens on the binary actually running
    (Debian's Prometheus: /classic/alerts), or none, saying why (tradelab.web_ui)."""
    out = []
    for service in services:
        if service.url and service.state is ServiceState.RUNNING:
            page = web_page(service.name, service.url)
            service = replace(service, url=page.url,
                              detail="; ".join(filter(None, (service.detail, page.note))))
        out.append(service)
    return out


def _firing_alerts(settings: Settings, services: list[ServiceStatus]
                   ) -> list[dict[str, Any]] | None:
    if not any(s.name == "alertmanager" and s.state is ServiceState.RUNNING for s in services):
        return None
    try:
        return firing_alerts(settings, timeout_s=2.0)
    except AlertmanagerUnavailable:
        return None


# -- primitives, for faults and levers -----------------------------------------------------

def act(driver: Driver, action: Primitive, service: str) -> None:
    """Carry out one primitive on `service` (a fault going on or off, an operator lever)."""
    match action:
        case "stop":
            driver.stop(service)
        case "start":
            driver.start(service)
        case "kill":
            driver.kill(service)
        case "pause":
            driver.pause(service)
        case "unpause":
            driver.unpause(service)
        case "restart":
            driver.restart(service)
        case "disconnect":
            driver.disconnect(service)
        case "connect":
            driver.connect(service)
        case _:
            raise unsupported(driver.kind, str(action), service)


def restore(driver: Driver, service: str, action: Primitive) -> None:
    """Undo a runtime fault, unless the service is already back (a supervisor restarts a
    killed process by itself, and starting a running one is an error there). A running
    service may still be cut off its network: `connect` is done whatever its state."""
    if action != "connect" and driver.inspect(service).state is ServiceState.RUNNING:
        return
    act(driver, action, service)


def wait_healthy(driver: Driver, service: str, timeout_s: float,
                 every_s: float = 0.25) -> ServiceStatus:
    """Wait until `service` runs and passes its health check (or declares none); its
    status then, or a TradelabError naming the state it is stuck in."""
    deadline = time.monotonic() + timeout_s
    while True:
        st = driver.inspect(service)
        if st.state is ServiceState.RUNNING and st.health in (Health.HEALTHY, Health.NONE):
            return st
        if time.monotonic() >= deadline:
            raise TradelabError(
                f"{service} is not healthy {timeout_s:g}s after the restart (state {st.state}, "
                f"health {st.health}): see `tradelab logs {service}`")
        time.sleep(every_s)
