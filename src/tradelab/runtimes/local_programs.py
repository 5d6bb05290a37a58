"""From the Stack to supervisord programs: what the local runtime runs, and how it checks it.

    plan = build_plan(settings, lab, postgres_data_dir(lab))
    plan.services                # every service of the Stack, in start order
    plan.by_name["api"].program  # a supervisor Program, or None when unavailable here
    plan.dependencies(plan.select())   # {"api": ["migrate"], "migrate": ["postgres"], ...}
    probe(plan.by_name["api"], settings, lab)   # one health check (GET /readyz ...)

Commands, environment, ports and health checks come from `build_stack(settings, lab,
runtime="local")`; this module only turns them into processes on this machine:
it finds the binaries (prometheus, alertmanager, locust) on PATH, runs `tradelab`
with this very Python, and marks what cannot run here as unavailable, with why.
"""

from __future__ import annotations

import shutil
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from tradelab.const import DOCKER_ONLY_SERVICES
from tradelab.db.cluster import PostgresCluster
from tradelab.runtimes.local_postgres import postgres_program, server_bindir
from tradelab.runtimes.supervisor import Program
from tradelab.stack import DB_NAME, Service, Stack, build_stack

if TYPE_CHECKING:
    from tradelab.lab import Lab
    from tradelab.settings import Settings

HOST = "127.0.0.1"
__all__ = ["DB_NAME", "HOST", "Plan", "binary_checks", "build_plan", "probe"]


# Binaries tried in order; Debian names Alertmanager `prometheus-alertmanager`.
BINARIES = {
    "prometheus": ("prometheus",),
    "alertmanager": ("alertmanager", "prometheus-alertmanager"),
    "locust": ("locust",),
}
INSTALL_HINT = {
    "prometheus": "apt-get install prometheus",
    "alertmanager": "apt-get install prometheus-alertmanager",
    "locust": "pip install locust",
}
# What the lab cannot do without each optional binary (`tradelab doctor` says it).
LOST_WITHOUT = {
    "prometheus": "no metrics, SLO alerts, `tradelab watch` or game-day detection",
    "alertmanager": "no pages: `tradelab alerts`, `status` and drills cannot see what fires",
    "locust": "no `tradelab load`, so no game days (they put load on the lab)",
}

PRIORITY = {"postgres": 10, "migrate": 20}  # the rest: 30 + position (stop before these)


@dataclass
class LocalService:
    name: str
    program: Program | None
    unavailable: str = ""  # why it does not run here ("" when it does)
    oneshot: bool = False
    ports: list[tuple[int, str]] = field(default_factory=list)  # (port, settings key)
    probe_port: int | None = None
    probe_path: str | None = None  # None with a probe_port: a TCP connect
    url: str | None = None

    @property
    def health_text(self) -> str:
        if self.name == "postgres":
            return f"PostgreSQL accepting connections on {HOST}:{self.probe_port}"
        if self.probe_path:
            return f"GET http://{HOST}:{self.probe_port}{self.probe_path} answers 200"
        if self.probe_port:
            return f"TCP {HOST}:{self.probe_port} accepts connections"
        return "process running"


@dataclass
class Plan:
    stack: Stack
    by_name: dict[str, LocalService]
    cluster: PostgresCluster
    multiproc_dir: Path
    directories: list[Path]
    postgres_password: str

    @property
    def services(self) -> list[str]:
        return list(self.by_name)

    def select(self, only: list[str] | None = None,
               without: list[str] | None = None) -> list[str]:
        """Services to start for --only/--without (with their dependencies), in order;
        those that cannot run here are left out."""
        missing = [n for n in (only or []) if n in self.by_name and self.by_name[n].unavailable]
        if missing:
            from tradelab.errors import TradelabError

            name = missing[0]
            raise TradelabError(f"{name} cannot run in the local runtime: "
                                f"{self.by_name[name].unavailable}")
        here = [n for n, s in self.by_name.items() if not s.unavailable]
        # --without grafana is fine (and a no-op) here, as it is with Docker.
        without = [n for n in (without or []) if n not in self.by_name or n in here]
        return self.stack.subset(here).select(only, without)

    def dependencies(self, names: list[str]) -> dict[str, list[str]]:
        """name -> the services among `names` it must wait for."""
        return {n: [d.service for d in self.stack.services[n].depends_on if d.service in names]
                for n in names}

    def programs(self) -> list[Program]:
        return [s.program for s in self.by_name.values() if s.program is not None]

    def admin_url(self, dbname: str = DB_NAME) -> str:
        return self.cluster.url("postgres", self.postgres_password, dbname)


def build_plan(settings: Settings, lab: Lab, pg_data_dir: Path) -> Plan:
    stack = build_stack(settings, lab, runtime="local")
    pg = stack.services["postgres"]
    cluster = PostgresCluster(pg_data_dir, port=pg.port("postgres").container, host=HOST,
                              bindir=server_bindir())
    multiproc = lab.state_dir / "local" / "api-metrics"
    by_name: dict[str, LocalService] = {}
    directories = [lab.state_dir, multiproc]
    for position, (name, svc) in enumerate(stack.services.items()):
        local = _local_service(name, svc, settings, stack)
        if not local.unavailable:
            if name == "postgres":
                local.program = postgres_program(cluster, HOST)
            else:
                local.program = _program(name, svc, lab, position, multiproc, settings)
                if local.program is None:
                    local.unavailable = _missing_binary(svc)
            for mount in svc.mounts:  # local data folders (prometheus TSDB, ...)
                if mount.kind == "bind" and not mount.read_only and name != "postgres":
                    directories.append(Path(mount.source))
        by_name[name] = local
    return Plan(stack=stack, by_name=by_name, cluster=cluster, multiproc_dir=multiproc,
                directories=directories, postgres_password=lab.secret("postgres_password"))


def _local_service(name: str, svc: Service, settings: Settings, stack) -> LocalService:
    if name in DOCKER_ONLY_SERVICES:  # no binary here; an imitation would mislead
        return LocalService(name, None, unavailable="not available in the local runtime")
    local = LocalService(name, None, oneshot=svc.one_shot, url=_url(name, svc, stack))
    for port in svc.ports:
        local.ports.append((port.container, _port_key(settings, port.container, name, port.name)))
    check = svc.healthcheck
    if check is not None and check.port:
        local.probe_port = svc.port(check.port).container
        local.probe_path = check.path
    if name == "locust-master" or name == "locust-worker":
        locustfiles = Path(svc.command[svc.command.index("-f") + 1])  # a file or a folder
        if not locustfiles.exists():
            local.unavailable = f"no locustfiles at {locustfiles}"
    return local


def _url(name: str, svc: Service, stack) -> str | None:
    if svc.web_path is not None:
        return stack.url(name)
    if name == "postgres":
        return f"postgresql://{HOST}:{svc.port('postgres').container}/{DB_NAME}"
    if svc.metrics is not None:
        return f"http://{HOST}:{svc.port(svc.metrics.port).container}{svc.metrics.path}"
    return None


def _port_key(settings: Settings, port: int, service: str, port_name: str) -> str:
    """The setting that chooses this port, for error messages ("ports.api")."""
    keys = settings.port_keys(port)
    return keys[0] if keys else f"{service}'s fixed {port_name} port"


def _program(name: str, svc: Service, lab: Lab, position: int, multiproc: Path,
             settings) -> Program | None:
    argv = _resolve_argv(svc)
    if argv is None:
        return None
    env = _environment(svc)
    env["TRADELAB_HOME"] = str(lab.root)  # the children use this lab's secrets and state
    if name == "api":
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    if name == "locust-master" and "--master-bind-host" not in argv:
        argv += ["--master-bind-host", HOST]  # locust binds every interface otherwise
    return Program(
        name=name, command=argv, env=env,
        # The service's working directory: a `chaos.flag` dropped there turns chaos on.
        directory=str(lab.state_dir),
        oneshot=svc.one_shot,
        priority=PRIORITY.get(name, 30 + position),
        numprocs=svc.replicas,
    )


def _resolve_argv(svc: Service) -> list[str] | None:
    argv = list(svc.argv)
    if not argv:
        return None
    if argv[0] == "tradelab":  # the very tradelab (and Python) running this command
        return [sys.executable, "-m", "tradelab", *argv[1:]]
    found = find_binary(argv[0])
    return [found, *argv[1:]] if found else None


def find_binary(tool: str) -> str | None:
    """The path of `tool` (Debian's name too: prometheus-alertmanager) on PATH or
    beside this Python, or None."""
    for candidate in BINARIES.get(tool, (tool,)):
        found = shutil.which(candidate) or _next_to_python(candidate)
        if found:
            return found
    return None


def binary_checks() -> list[tuple[str, str | None, str]]:
    """(tool, its path or None, what is lost without it) for every optional binary."""
    return [(tool, find_binary(tool), LOST_WITHOUT[tool]) for tool in BINARIES]


def _next_to_python(name: str) -> str | None:
    """Console scripts of this environment's packages (locust) when not on PATH."""
    path = Path(sys.executable).parent / name
    return str(path) if path.is_file() else None


def _missing_binary(svc: Service) -> str:
    return missing_binary_text(svc.argv[0] if svc.argv else svc.name)


def missing_binary_text(tool: str) -> str:
    """"prometheus not found on PATH (apt-get install prometheus)"."""
    names = " or ".join(BINARIES.get(tool, (tool,)))
    hint = INSTALL_HINT.get(tool)
    return f"{names} not found on PATH" + (f" ({hint})" if hint else "")


def _environment(svc: Service) -> dict[str, str]:
    """The Stack's environment with database passwords put into the URL itself.

    The Stack names a password file next to a password-less URL (so containers never
    carry the secret in their environment); a local process gets the complete URL,
    which every tool and library understands. The supervisord config holding it is 0600.
    """
    from tradelab.db_url import with_password

    env = dict(svc.environment)
    password_file = env.pop("TRADELAB_DATABASE_PASSWORD_FILE", None)
    url = env.get("TRADELAB_DATABASE_URL")
    if password_file and url:
        password = Path(password_file).read_text().strip()
        env["TRADELAB_DATABASE_URL"] = with_password(url, password)
    return env


# Health checks go straight to 127.0.0.1, whatever HTTP_PROXY says.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def probe(service: LocalService, settings: Settings, lab: Lab, timeout: float = 2.0) -> bool:
    """One health check of a running service, from this machine."""
    if service.name == "postgres" and service.probe_port is not None:
        return _postgres_ready(service.probe_port, lab, timeout)
    if service.probe_port is None:
        return True  # no check declared: running is all we can know
    if service.probe_path is None:
        try:
            with socket.create_connection((HOST, service.probe_port), timeout=timeout):
                return True
        except OSError:
            return False
    url = f"http://{HOST}:{service.probe_port}{service.probe_path}"
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _postgres_ready(port: int, lab: Lab, timeout: float) -> bool:
    import psycopg

    try:
        url = (f"postgresql://postgres:{quote(lab.secret('postgres_password'), safe='')}"
               f"@{HOST}:{port}/postgres")
        with psycopg.connect(url, connect_timeout=max(1, int(timeout))):
            return True
    except psycopg.Error:
        return False
