"""The local runtime: the lab as processes under supervisord, with an embedded PostgreSQL.

    runtime = LocalRuntime(settings, lab)
    runtime.up()            # returns once every service is healthy
    runtime.status()        # every service of the stack, unavailable ones included
    runtime.kill("api")   # SIGKILL; supervisord brings it back
    runtime.down()          # stops everything, leaves no process; data is kept

For a machine without Docker. supervisord (daemonised, controlled over a unix socket
in <lab>/state/local/) runs postgres, the one-shot migrate, api, engine, the Locust
master, and Prometheus and Alertmanager when their binaries are on PATH. Each program
logs to <lab>/state/logs/<service>.log. Grafana, Loki and Promtail cannot run here
and are reported as unavailable: they are never imitated.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path

from tradelab.errors import TradelabError
from tradelab.host import pid_alive, port_free
from tradelab.runtimes import local_programs as lp
from tradelab.runtimes.base import ServiceStatus
from tradelab.runtimes.local_postgres import (
    ensure_database,
    postgres_data_dir,
    prepare,
    remove_postgres_data,
    server_bindir,
)
from tradelab.runtimes.supervisor import Supervisor

NOT_HERE = "not available in the local runtime"


class LocalRuntime:
    name = "local"

    def __init__(self, settings, lab, echo: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.lab = lab
        self.echo = echo or _progress
        self.supervisor = Supervisor(lab.state_dir / "local", lab.state_dir / "logs",
                                     identifier=f"tradelab-{lab.root.name}")
        self._plan: lp.Plan | None = None

    @property
    def plan(self) -> lp.Plan:
        """What runs here, built from the Stack (cached: finding binaries costs a little)."""
        if self._plan is None:
            self.lab.ensure_secrets()  # the programs' environment reads them
            self._plan = lp.build_plan(self.settings, self.lab, postgres_data_dir(self.lab))
        return self._plan

    # -- lifecycle ---------------------------------------------------------------------
    def up(self, only: list[str] | None = None, without: list[str] | None = None,
           build: bool = True, timeout: float = 300) -> list[ServiceStatus]:
        """Start what is not running, in dependency order; return once all are healthy."""
        self.lab.ensure()
        self.lab.ensure_secrets()
        plan = self.plan
        wanted = plan.select(only, without)
        started_at = time.monotonic()
        cold = not self.supervisor.running()
        if cold:
            self._stop_orphans()
            self._check_ports(wanted)
            self._prepare_files(wanted)
            self.supervisor.write_config(plan.programs())
            self.echo("starting supervisord (local runtime)")
            self.supervisor.start_daemon()
        else:
            self._prepare_files(wanted, running=True)
            self.supervisor.write_config(plan.programs())
            # Compared with what supervisord holds, not with the file: a run that failed
            # halfway may have written a file supervisord never took in.
            replaced = self.supervisor.apply_config()
            if replaced:
                self.echo(f"settings changed: restarting {', '.join(replaced)}")
            todo = self._not_running(wanted)
            if not todo:
                self.echo("the lab is already up (local runtime): nothing to do")
                return self.status()
            self._check_ports(todo)
        try:
            self._start_in_order(wanted, deadline=started_at + timeout)
        except xmlrpc.client.Fault as exc:
            if cold:
                self._stop_all(quiet=True)
            raise TradelabError(f"supervisord refused: {exc.faultString} (log: "
                                f"{self.supervisor.logs_dir / 'supervisord.log'})") from None
        except BaseException:
            if cold:  # a failed first start leaves no half-made lab behind (logs stay)
                self._stop_all(quiet=True)
            raise
        self.echo(f"all services healthy in {time.monotonic() - started_at:.1f}s")
        return self.status()

    def down(self, volumes: bool = False) -> None:
        """Stop every program and supervisord; with `volumes`, delete the lab's data."""
        if self.supervisor.pid() is not None:
            self.echo("stopping the local lab")
        self._stop_all()
        if volumes:
            directories = self.plan.directories
            remove_postgres_data(self.lab)
            for path in directories:
                if path.is_relative_to(self.lab.data_dir):  # Prometheus TSDB, Alertmanager
                    shutil.rmtree(path, ignore_errors=True)
            self.echo(f"removed the lab's data in {self.lab.data_dir}")

    def is_up(self) -> bool:
        return self.supervisor.running()

    # -- inspection --------------------------------------------------------------------
    def status(self) -> list[ServiceStatus]:
        plan = self.plan
        infos = self.supervisor.process_info()
        out = []
        for name in plan.services:
            spec = plan.by_name.get(name)
            if spec is None or spec.unavailable:
                out.append(ServiceStatus(name, "unavailable", "n/a",
                                         detail=spec.unavailable if spec else NOT_HERE))
                continue
            info = infos.get(name)
            url = spec.url
            if info is None:
                out.append(ServiceStatus(name, "missing", "n/a", url))
                continue
            state = _STATES.get(info["statename"], info["statename"].lower())
            if spec.oneshot:
                code = info.get("exitstatus", 0)
                detail = f"exit {code}" if state == "exited" else ""
                out.append(ServiceStatus(name, state, "n/a", url, detail))
                continue
            health = "none"  # also for a running service that declares no check
            if state == "running" and spec.probe_port is not None:
                health = "healthy" if lp.probe(spec, self.settings, self.lab) else "unhealthy"
            elif state == "starting":
                health = "starting"
            pids = info.get("pids") or []
            detail = (f"pid {pids[0]}" if len(pids) == 1 else
                      f"{len(pids)} replicas, pids {', '.join(map(str, pids))}" if pids else "")
            out.append(ServiceStatus(name, state, health, url, detail))
        return out

    def logs(self, service: str, follow: bool = False, tail: int | None = 100) -> None:
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
                sys.stdout.write(f"==> {path.name} <==\n")
            sys.stdout.writelines(tail_lines(path, tail))
        sys.stdout.flush()
        if follow:
            _follow(paths)

    def doctor(self) -> list[dict]:
        """Checks a person can act on: supervisor, PostgreSQL binaries, ports, binaries.

        Each check is {"check", "ok", "detail"}; ok None is a note (e.g. Grafana here).
        """
        checks: list[dict] = []
        try:
            import supervisor  # noqa: F401

            checks.append({"check": "supervisor", "ok": True, "detail": "supervisord importable"})
        except ImportError:
            checks.append({"check": "supervisor", "ok": False,
                           "detail": "the `supervisor` package is missing: pip install supervisor"})
        try:
            plan = self.plan
        except TradelabError as exc:  # no PostgreSQL binaries
            return checks + [{"check": "postgresql", "ok": False, "detail": str(exc)}]
        cluster = plan.cluster
        checks.append({"check": "postgresql", "ok": True,
                       "detail": f"server binaries in {cluster.bindir}; data in {cluster.data_dir}"
                                 + (f" (runs as {cluster.user})" if cluster.user else "")})
        running = {n for n, i in self.supervisor.process_info().items()
                   if i["statename"] == "RUNNING"}
        for name, spec in plan.by_name.items():
            if spec.unavailable:
                checks.append({"check": name, "ok": None, "detail": spec.unavailable})
                continue
            for port, key in spec.ports:
                try:
                    free = name in running or self._check_ports_of([(port, key)]) is None
                    detail = f"{key} for {name}" + (" (this lab)" if name in running else "")
                except TradelabError as exc:
                    free, detail = False, str(exc)
                checks.append({"check": f"port {port}", "ok": free, "detail": detail})
        return checks

    # -- runtime faults ----------------------------------------------------------------
    def stop(self, service: str) -> None:
        self._rpc_on(service, lambda rpc: rpc.stopProcessGroup(service, True))

    def start(self, service: str) -> None:
        self._rpc_on(service, lambda rpc: rpc.startProcessGroup(service, True))

    def kill(self, service: str) -> None:
        """SIGKILL the program's whole process group, as a crashed container would be;
        supervisord sees an unexpected exit and restarts it."""
        def kill(_rpc):
            pids = self.supervisor.process_info().get(service, {}).get("pids")
            if not pids:
                raise TradelabError(f"{service} is not running: nothing to kill")
            for pid in pids:
                os.killpg(pid, signal.SIGKILL)  # supervisord makes each its own group
        self._rpc_on(service, kill)

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
        self._start_in_order([service], deadline=time.monotonic() + 120)

    # -- internals -------------------------------------------------------------------
    def _rpc_on(self, service: str, action) -> None:
        spec = self.plan.by_name.get(service)
        if spec is None or spec.unavailable:
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

    def _check_ports(self, names: list[str]) -> None:
        owner: dict[int, tuple[str, str]] = {}  # two settings with one value: say so first
        for name in names:
            for port, key in self.plan.by_name[name].ports:
                other, other_key = owner.setdefault(port, (name, key))
                if other != name:
                    keys = f" ({other_key} = {key})" if other_key != key else ""
                    raise TradelabError(
                        f"{other} and {name} would both listen on port {port}{keys}: "
                        "give each its own port in tradelab.yaml")
        for name in names:
            self._check_ports_of(self.plan.by_name[name].ports)

    @staticmethod
    def _check_ports_of(ports: list[tuple[int, str]]) -> None:
        """A one-line TradelabError naming the first port something else listens on."""
        for port, key in ports:
            if not port_free(lp.HOST, port):
                fix = (f"free it or set {key} in tradelab.yaml" if key.startswith("ports.")
                       else "free it")
                raise TradelabError(f"port {port} ({key}) is already in use: {fix}")

    def _prepare_files(self, wanted: list[str], running: bool = False) -> None:
        """Directories, rendered configs and (first time) the database cluster."""
        for d in self.plan.directories:
            d.mkdir(parents=True, exist_ok=True)
        lp.render_configs(self.settings, self.lab, self.plan.stack, wanted)
        if "postgres" in wanted and not running:
            postgres_data_dir(self.lab, create=True)
            cluster = self.plan.cluster
            server_bindir(create=True)  # as root, a copy the postgres user can run, if need be
            if not cluster.initialised():
                self.echo(f"initialising PostgreSQL in {cluster.data_dir}")
            prepare(cluster, self.lab.secret("postgres_password"))

    def _start_in_order(self, wanted: list[str], deadline: float) -> None:
        """Start each service as soon as what it depends on is ready; wait for all."""
        todo = set(self._not_running(wanted))
        deps = self.plan.dependencies(wanted)
        started: list[str] = []
        ready: set[str] = set()
        while len(ready) < len(wanted):
            for name in wanted:
                if name not in started and all(d in ready for d in deps[name]):
                    if name in todo:
                        self.echo(f"starting {name}")
                        self.supervisor.rpc.startProcessGroup(name, False)
                    started.append(name)
            infos = self.supervisor.process_info()
            for name in started:
                if name not in ready and self._ready(name, infos, announce=name in todo):
                    ready.add(name)
            if len(ready) == len(wanted):
                return
            if time.monotonic() > deadline:
                late = next(n for n in started if n not in ready)
                raise self._failure(late, f"{late} did not become healthy in time "
                                          f"({self.plan.by_name[late].health_text})")
            time.sleep(0.2)

    def _ready(self, name: str, infos: dict[str, dict], announce: bool) -> bool:
        """One look at a started service: ready, not yet, or a TradelabError if it failed."""
        spec = self.plan.by_name[name]
        info = infos.get(name, {"statename": "UNKNOWN", "exitstatus": None})
        state = info["statename"]
        if spec.oneshot:
            if state == "EXITED" and info["exitstatus"] == 0:
                if announce:
                    self.echo(f"{name} finished")
                return True
            if state in ("EXITED", "FATAL", "BACKOFF"):
                raise self._failure(name, f"{name} failed (exit {info['exitstatus']})")
            return False
        if state == "FATAL":
            raise self._failure(name, f"{name} keeps exiting at start")
        if state != "RUNNING" or not lp.probe(spec, self.settings, self.lab):
            return False
        if name == "postgres" and ensure_database(self.plan.admin_url("postgres"), lp.DB_NAME):
            self.echo(f"created database {lp.DB_NAME}")
        if announce:
            self.echo(f"{name} healthy")
        return True

    def _failure(self, name: str, message: str) -> TradelabError:
        paths = self.supervisor.log_files(name) or [self.supervisor.log_file(name)]
        path = paths[0]
        lines = tail_lines(path, 15) if path.exists() else []
        tail = "".join("\n  | " + line.rstrip("\n") for line in lines)
        return TradelabError(f"{message}; last log lines of {path}:{tail}" if lines
                             else f"{message}; no output in {path}")

    def _stop_orphans(self) -> None:
        """Programs left by a supervisord that was killed hold the lab's ports: a new `up`
        stops them as `down` would, instead of calling its own ports taken."""
        session = self.supervisor.recorded_pid()
        if (session is not None and self.supervisor.pid() is None
                and session_processes(session)):
            self.echo("supervisord of this lab's last run is gone: stopping what it left")
            self._stop_all()

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
        killed: set[int] = set()
        deadline = time.monotonic() + 10
        while (left := session_processes(session)) and time.monotonic() < deadline:
            for pid in left:
                if not quiet and pid not in killed:
                    self.echo(f"process {pid} outlived supervisord: killing it")
                killed.add(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        self.supervisor.pid_file.unlink(missing_ok=True)


_STATES = {"RUNNING": "running", "STARTING": "starting", "BACKOFF": "starting",
           "STOPPED": "stopped", "STOPPING": "stopping", "EXITED": "exited",
           "FATAL": "exited", "UNKNOWN": "missing"}


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


def _follow(paths: list[Path]) -> None:
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
                    sys.stdout.write(chunk.decode(errors="replace"))
                    sys.stdout.flush()
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
