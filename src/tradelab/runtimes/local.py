"""The local runtime: the lab as processes under supervisord, with an embedded PostgreSQL.

    driver = LocalRuntime(settings, lab)      # usually through tradelab.orchestrator
    driver.prepare(names, build=False)        # supervisord up with the programs' config
    driver.action_for("api"); driver.create("api")   # the orchestrator waits for health
    driver.status()         # every service of the stack, unavailable ones included
    driver.kill("api")      # SIGKILL; supervisord brings it back
    driver.pause("postgres")  # SIGSTOP to its process group; unpause: SIGCONT
    driver.down()           # stops everything, leaves no process; data is kept

For a machine without Docker. supervisord (daemonised, controlled over a unix socket
in <lab>/state/local/) runs postgres, the one-shot migrate, api, engine, the Locust
master, and Prometheus and Alertmanager when their binaries are on PATH. Each program
logs to <lab>/state/logs/<service>.log. Grafana, Loki and Promtail cannot run here
and are reported as unavailable: they are never imitated.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from tradelab.errors import TradelabError
from tradelab.files import count_files, remove_path
from tradelab.host import pid_alive, port_free, process_tree
from tradelab.runtimes import local_programs as lp
from tradelab.runtimes.base import (
    Action,
    Check,
    ExecResult,
    Health,
    RuntimeKind,
    ServiceState,
    ServiceStatus,
    unsupported,
)
from tradelab.runtimes.local_postgres import (
    ensure_database,
    postgres_data_dir,
    prepare,
    remove_postgres_data,
    server_bindir,
)
from tradelab.runtimes.supervisor import Supervisor

if TYPE_CHECKING:
    from tradelab.lab import Lab
    from tradelab.settings import Settings
    from tradelab.stack import Stack

NOT_HERE = "not available in the local runtime"


class LocalRuntime:
    """The local driver: every primitive through supervisord and signals to its programs."""

    kind = RuntimeKind.LOCAL
    name = "local"

    def __init__(self, settings: Settings, lab: Lab,
                 echo: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.lab = lab
        self.echo = echo or _progress
        self.supervisor = Supervisor(lab.state_dir / "local", lab.state_dir / "logs",
                                     identifier=f"tradelab-{lab.root.name}")
        self._plan: lp.Plan | None = None
        self._cold = False  # this `up` started supervisord
        self._replaced: list[str] = []  # programs this `up` replaced (settings changed)

    @property
    def plan(self) -> lp.Plan:
        """What runs here, built from the Stack (cached: finding binaries costs a little)."""
        if self._plan is None:
            self.lab.ensure_secrets()  # the programs' environment reads them
            self._plan = lp.build_plan(self.settings, self.lab, postgres_data_dir(self.lab))
        return self._plan

    @property
    def stack(self) -> Stack:
        return self.plan.stack

    # -- lifecycle ---------------------------------------------------------------------
    def selectable(self, only: list[str] | None, without: list[str] | None) -> list[str]:
        """Those that can run here: --only grafana is an error, --without grafana a no-op."""
        return self.plan.select(only, without)

    def host_ports(self, service: str) -> list[tuple[str, int]]:
        return [(lp.HOST, port) for port, _ in self.plan.by_name[service].ports]

    def recover(self) -> None:
        """Programs left by a supervisord that was killed hold the lab's ports: a new `up`
        stops them as `down` would, instead of calling its own ports taken."""
        session = self.supervisor.recorded_pid()
        if (session is not None and self.supervisor.pid() is None
                and session_processes(session)):
            self.echo("supervisord of this lab's last run is gone: stopping what it left")
            self._stop_all()
            # The killed processes' sockets close as the kernel reaps them: the port
            # check that follows must not find this lab's own ports taken meanwhile.
            ports = [hp for name in self.plan.by_name for hp in self.host_ports(name)]
            deadline = time.monotonic() + 10
            while (not all(port_free(*hp) for hp in ports)
                   and time.monotonic() < deadline):
                time.sleep(0.2)

    def prepare(self, names: list[str], build: bool) -> None:
        """Directories, the database cluster, and supervisord holding the programs' config
        (started, or told to reread it: a changed program is replaced, stopped)."""
        self._cold = not self.supervisor.running()
        self._prepare_files(names, running=not self._cold)
        self.supervisor.write_config(self.plan.programs())
        if self._cold:
            self.echo("starting supervisord (local runtime)")
            self.supervisor.start_daemon()
            return
        # Compared with what supervisord holds, not with the file: a run that failed
        # halfway may have written a file supervisord never took in.
        self._replaced = self.supervisor.apply_config()
        if self._replaced:
            self.echo(f"settings changed: restarting {', '.join(self._replaced)}")

    def action_for(self, service: str) -> Action:
        if service in self._replaced:
            return Action.RECREATE
        if not self._not_running([service]):
            return Action.NOTHING
        return Action.CREATE if self._cold else Action.START

    def finish(self, failed: bool) -> None:
        if failed and self._cold:  # a failed first start leaves no half-made lab (logs stay)
            self._stop_all(quiet=True)
        self._cold, self._replaced = False, []

    def down(self, volumes: bool = False) -> list[str]:
        """Stop every program and supervisord; with `volumes`, delete the lab's data and
        the programs' logs. Return what was deleted (paths, with their file counts)."""
        if self.supervisor.pid() is not None:
            self.echo("stopping the local lab")
        self._stop_all()
        return self._remove_data() if volumes else []

    def _remove_data(self) -> list[str]:
        """data/ (the database cluster, wherever it is kept; Prometheus TSDB; Alertmanager
        state) and state/logs/; return what went."""
        removed = []
        cluster = self.lab.data_dir / "postgres"
        if cluster.is_dir():  # kept outside the lab (a lab under /root): both go
            where = f" in {os.readlink(cluster)}" if cluster.is_symlink() else ""
            removed.append(f"{cluster} (the database cluster{where}, {count_files(cluster)})")
        remove_postgres_data(self.lab)
        if self.lab.data_dir.is_dir():
            removed += [gone for entry in sorted(self.lab.data_dir.iterdir())
                        if (gone := remove_path(entry))]
            self.lab.data_dir.rmdir()
        logs = remove_path(self.supervisor.logs_dir)
        return removed + ([f"{logs}: the services' logs"] if logs else [])

    def is_up(self) -> bool:
        return self.supervisor.running()

    # -- inspection --------------------------------------------------------------------
    def status(self) -> list[ServiceStatus]:
        infos = self.supervisor.process_info()
        return [self._status_of(name, infos.get(name)) for name in self.plan.services]

    def _status_of(self, name: str, info: dict | None) -> ServiceStatus:
        spec = self.plan.by_name.get(name)
        if spec is None or spec.unavailable:
            return ServiceStatus(name, ServiceState.UNAVAILABLE, Health.NOT_APPLICABLE,
                                 detail=spec.unavailable if spec else NOT_HERE)
        url = spec.url
        if info is None:
            return ServiceStatus(name, ServiceState.MISSING, Health.NOT_APPLICABLE, url)
        state = _STATES.get(info["statename"], ServiceState.MISSING)
        pids = info.get("pids") or []
        if state is ServiceState.RUNNING and pids and all(_stopped(pid) for pid in pids):
            state = ServiceState.PAUSED
        code = info.get("exitstatus") if state is ServiceState.EXITED else None
        if spec.oneshot:
            detail = f"exit {code}" if state is ServiceState.EXITED else ""
            return ServiceStatus(name, state, Health.NOT_APPLICABLE, url, detail,
                                 exit_code=code)
        health = Health.NONE  # also for a running service that declares no check
        if state is ServiceState.RUNNING and spec.probe_port is not None:
            healthy = lp.probe(spec, self.settings, self.lab)
            health = Health.HEALTHY if healthy else Health.UNHEALTHY
        elif state is ServiceState.STARTING:
            health = Health.STARTING
        elif state is ServiceState.PAUSED:
            health = Health.UNHEALTHY
        detail = (f"pid {pids[0]}" if len(pids) == 1 else
                  f"{len(pids)} replicas, pids {', '.join(map(str, pids))}" if pids else "")
        started = float(info["start"]) if pids and info.get("start") else None
        return ServiceStatus(name, state, health, url, detail, started_at=started,
                             exit_code=code)

    def logs(self, service: str, follow: bool = False, tail: int | None = 100,
             out: TextIO | None = None) -> None:
        out = out or sys.stdout
        spec = self.plan.by_name.get(service)
        if spec is None:
            raise TradelabError(f"unknown service {service!r}: one of "
                                f"{', '.join(self.plan.services)}")
        if spec.unavailable:
            raise TradelabError(f"{service} is {spec.unavailable}: it has no logs here")
        paths = self.supervisor.log_files(service)
        if not paths:
            raise TradelabError(f"{service} has not run yet (no log in "
                                f"{self.supervisor.logs_dir}): start it with `tradelab up`")
        for path in paths:
            if len(paths) > 1:  # replicas: one section per process, as tail(1) does
                out.write(f"==> {path.name} <==\n")
            out.writelines(tail_lines(path, tail))
        out.flush()
        if follow:
            _follow(paths, out)

    def probes(self, names: list[str]) -> list[Check]:
        """supervisor importable (first), PostgreSQL's server binaries, the optional
        binaries (prometheus, alertmanager, locust: found, or what is lost without them),
        and a note for each service that cannot run here (Grafana, Loki: never imitated)."""
        checks: list[Check] = []
        try:
            import supervisor  # noqa: F401

            checks.append(Check("supervisor", True, "supervisord importable"))
        except ImportError:
            checks.append(Check("supervisor", False,
                                "the `supervisor` package is missing: pip install supervisor"))
        try:
            plan = self.plan
        except TradelabError as exc:  # no PostgreSQL binaries
            return checks + [Check("postgresql", False, str(exc))]
        cluster = plan.cluster
        checks.append(Check("postgresql", True,
                            f"server binaries in {cluster.bindir}; data in {cluster.data_dir}"
                            + (f" (runs as {cluster.user})" if cluster.user else "")))
        missing = set()
        for tool, path, lost in lp.binary_checks():  # optional: a note when missing
            if path is None:
                missing.add(lp.missing_binary_text(tool))
            checks.append(Check(tool, True, f"found: {path}") if path else
                          Check(tool, None, f"{lp.missing_binary_text(tool)}: {lost}"))
        checks.extend(Check(name, None, spec.unavailable) for name, spec in plan.by_name.items()
                      if spec.unavailable and spec.unavailable not in missing)
        return checks

    def preflight(self, names: list[str], build: bool) -> None:
        """Nothing to fetch: what cannot run here is left out by selectable()."""

    # -- primitives ----------------------------------------------------------------------
    def inspect(self, service: str) -> ServiceStatus:
        self._spec(service)
        return self._status_of(service, self.supervisor.process_info().get(service))

    def create(self, service: str) -> None:
        """supervisord takes the program in (replacing it when its spec changed) and
        starts it, without waiting."""
        self._rpc_on(service, lambda rpc: self.supervisor.write_config(self.plan.programs()))
        self.supervisor.apply_config()
        self._before_start(service)
        self._rpc_on(service, lambda rpc: rpc.startProcessGroup(service, False))

    def stop(self, service: str) -> None:
        self._rpc_on(service, lambda rpc: rpc.stopProcessGroup(service, True))

    def start(self, service: str) -> None:
        self._before_start(service)
        self._rpc_on(service, lambda rpc: rpc.startProcessGroup(service, True))

    def restart(self, service: str) -> None:
        """Stopped and started again by supervisord (a paused one is woken first, or it
        could not hear the stop signal)."""
        if self.inspect(service).state is ServiceState.PAUSED:
            self.unpause(service)
        self.stop(service)
        self.start(service)

    def kill(self, service: str) -> None:
        """SIGKILL the program's whole process group, as a crashed container would be;
        supervisord sees an unexpected exit and restarts it."""
        self._signal_group(service, signal.SIGKILL, "kill")

    def pause(self, service: str) -> None:
        """SIGSTOP to the program's whole process group (gunicorn's workers too): alive,
        answering nothing. supervisord does not see a stopped child; it keeps it."""
        self._signal_group(service, signal.SIGSTOP, "pause")

    def unpause(self, service: str) -> None:
        self._signal_group(service, signal.SIGCONT, "unpause")

    def disconnect(self, service: str) -> None:
        """Processes on one host share its loopback: there is no network to cut."""
        self._spec(service)
        raise unsupported(self.kind, "cut the network of", service, can=RuntimeKind.DOCKER)

    def connect(self, service: str) -> None:
        """Nothing was ever cut here (disconnect refuses): nothing to reconnect."""
        self._spec(service)

    def signal(self, service: str, signame: str) -> None:
        """`supervisorctl signal`: to the program's process (Prometheus reloads on HUP)."""
        self._rpc_on(service, lambda rpc: rpc.signalProcessGroup(service, signame))

    def exec(self, service: str, argv: list[str]) -> ExecResult:
        """Run `argv` beside the service: its environment and working directory."""
        program = self._spec(service).program
        if program is None:
            raise unsupported(self.kind, "exec in", service)
        try:
            done = subprocess.run(argv, env={**os.environ, **program.env}, cwd=program.directory,
                                  capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TradelabError(f"cannot run {argv[0]} beside {service}: {exc}") from None
        return ExecResult(done.returncode, done.stdout + done.stderr)

    def health(self, service: str) -> Health:
        return self.inspect(service).health

    def scale(self, service: str, replicas: int) -> None:
        """Run `replicas` processes of `service` (Locust workers) until the next `up`,
        which goes back to the settings (load_workers)."""
        spec = self.plan.by_name.get(service)
        if spec is None or spec.program is None or service != "locust-worker":
            raise TradelabError(f"only locust-worker can be scaled, not {service}")
        if not self.supervisor.running():
            raise TradelabError("the local lab is not running: start it with `tradelab up`")
        spec.program.numprocs = max(1, replicas)
        self.supervisor.write_config(self.plan.programs())
        self.supervisor.apply_config()
        self.echo(f"running {replicas} {service} process(es)")
        self._rpc_on(service, lambda rpc: rpc.startProcessGroup(service, False))
        self._wait_running(service, deadline=time.monotonic() + 120)

    # -- internals -------------------------------------------------------------------
    def _spec(self, service: str) -> lp.LocalService:
        spec = self.plan.by_name.get(service)
        if spec is None:
            raise TradelabError(f"unknown service {service!r}: one of "
                                f"{', '.join(self.plan.services)}")
        return spec

    def _signal_group(self, service: str, signum: int, verb: str) -> None:
        def send(_rpc) -> None:
            pids = self.supervisor.process_info().get(service, {}).get("pids")
            if not pids:
                raise TradelabError(f"{service} is not running: nothing to {verb}")
            for pid in pids:
                os.killpg(pid, signum)  # supervisord makes each program its own group ...
                for child in process_tree(pid)[1:]:  # ... but not every child stays in it
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signum)
        self._rpc_on(service, send)

    def _rpc_on(self, service: str, action) -> None:
        spec = self._spec(service)
        if spec.unavailable:
            raise TradelabError(f"{service} is not a service of the local lab")
        if not self.supervisor.running():
            raise TradelabError("the local lab is not running: start it with `tradelab up`")
        try:
            action(self.supervisor.rpc)
        except xmlrpc.client.Fault as exc:
            raise TradelabError(f"supervisord could not act on {service}: "
                                f"{exc.faultString}") from None

    def _not_running(self, wanted: list[str]) -> list[str]:
        infos = self.supervisor.process_info()
        todo = []
        for name in wanted:
            info = infos.get(name, {})
            spec = self.plan.by_name[name]
            done = (info.get("statename") == "EXITED" and info.get("exitstatus") == 0
                    if spec.oneshot else info.get("statename") == "RUNNING")
            if not done:
                todo.append(name)
        return todo

    def _prepare_files(self, wanted: list[str], running: bool = False) -> None:
        """Directories, rendered configs and (first time) the database cluster."""
        for d in self.plan.directories:
            d.mkdir(parents=True, exist_ok=True)
        if "postgres" in wanted and not running:
            postgres_data_dir(self.lab, create=True)
            cluster = self.plan.cluster
            server_bindir(create=True)  # as root, a copy the postgres user can run, if need be
            if not cluster.initialised():
                self.echo(f"initialising PostgreSQL in {cluster.data_dir}")
            prepare(cluster, self.lab.secret("postgres_password"))

    def _before_start(self, service: str) -> None:
        """migrate needs the lab's database, which the embedded server has to be asked
        for (PostgreSQL's image makes it from POSTGRES_DB); the server is up by then."""
        if service == "migrate" and ensure_database(self.plan.admin_url("postgres"), lp.DB_NAME):
            self.echo(f"created database {lp.DB_NAME}")

    def _wait_running(self, service: str, deadline: float) -> None:
        """Until every process of `service` answers its health check (scale)."""
        while self.inspect(service).health not in (Health.HEALTHY, Health.NONE):
            if self.supervisor.process_info().get(service, {}).get("statename") == "FATAL":
                raise self._failure(service, f"{service} keeps exiting at start")
            if time.monotonic() > deadline:
                raise self._failure(service, f"{service} did not become healthy in time "
                                             f"({self.plan.by_name[service].health_text})")
            time.sleep(0.2)

    def _failure(self, name: str, message: str) -> TradelabError:
        paths = self.supervisor.log_files(name) or [self.supervisor.log_file(name)]
        path = paths[0]
        lines = tail_lines(path, 15) if path.exists() else []
        tail = "".join("\n  | " + line.rstrip("\n") for line in lines)
        return TradelabError(f"{message}; last log lines of {path}:{tail}" if lines
                             else f"{message}; no output in {path}")

    def _stop_all(self, quiet: bool = False) -> None:
        """supervisord stops its programs; then nothing of its session may remain."""
        session = self.supervisor.recorded_pid()
        ours = self.supervisor.pid() is not None
        self.supervisor.shutdown()
        if session is None or (not ours and pid_alive(session)):
            return  # never ran, or the recorded pid now belongs to someone else
        deadline = time.monotonic() + (30 if ours else 0)
        while session_processes(session) and time.monotonic() < deadline:
            time.sleep(0.2)
        # Left behind only when supervisord itself was killed: its programs are orphans.
        # Killed until none is left (a dying postmaster may still fork), so their ports
        # are free when this returns.
        # A program's children may have left the session (PostgreSQL's backends call
        # setsid): each one's process tree is taken while its parent still holds it.
        killed: set[int] = set()
        deadline = time.monotonic() + 10
        while (left := session_processes(session)) and time.monotonic() < deadline:
            for pid in dict.fromkeys(c for p in left for c in process_tree(p)):
                if not quiet and pid not in killed:
                    self.echo(f"process {pid} outlived supervisord: killing it")
                killed.add(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        self.supervisor.pid_file.unlink(missing_ok=True)


_STATES = {"RUNNING": ServiceState.RUNNING, "STARTING": ServiceState.STARTING,
           "BACKOFF": ServiceState.STARTING, "STOPPED": ServiceState.STOPPED,
           "STOPPING": ServiceState.STOPPING, "EXITED": ServiceState.EXITED,
           "FATAL": ServiceState.EXITED, "UNKNOWN": ServiceState.MISSING}


def _stopped(pid: int) -> bool:
    """True while `pid` is stopped by a signal (SIGSTOP: paused)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


def session_processes(session_id: int) -> list[int]:
    """Pids in the session `session_id` (supervisord's: it calls setsid when it
    daemonises, and every program and its children stay in that session)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state, [3] the session id (stat fields 3 and 6).
        if fields[0] != "Z" and int(fields[3]) == session_id:
            pids.append(int(entry))
    return pids


def tail_lines(path: Path, n: int | None) -> list[str]:
    """The last `n` lines of a file (all when n is None), reading from the end."""
    with open(path, "rb") as f:
        if n is None:
            return f.read().decode(errors="replace").splitlines(keepends=True)
        f.seek(0, os.SEEK_END)
        end = f.tell()
        data = b""
        while end > 0 and data.count(b"\n") <= n:
            step = min(65536, end)
            end -= step
            f.seek(end)
            data = f.read(step) + data
    lines = data.decode(errors="replace").splitlines(keepends=True)
    return lines[-n:] if n else []


def _follow(paths: list[Path], out: TextIO) -> None:
    """Print what is appended to `paths` until interrupted; reopen a file when rotated."""
    files = {}
    for path in paths:
        f = open(path, "rb")  # noqa: SIM115 - kept open while following, reopened on rotation
        f.seek(0, os.SEEK_END)
        files[path] = f
    try:
        while True:
            quiet = True
            for path, f in list(files.items()):
                chunk = f.read()
                if chunk:
                    quiet = False
                    out.write(chunk.decode(errors="replace"))
                    out.flush()
                    continue
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                if st.st_ino != os.fstat(f.fileno()).st_ino or st.st_size < f.tell():
                    f.close()
                    files[path] = open(path, "rb")  # noqa: SIM115
            if quiet:
                time.sleep(0.3)
    finally:
        for f in files.values():
            f.close()


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
