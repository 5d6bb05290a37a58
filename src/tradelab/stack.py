"""The Stack: what runs in a lab, built from Settings; the one source templates and runtimes read.

    stack = build_stack(settings, lab, runtime="docker")
    for name in stack.start_order(stack.select(only=["api"])):   # postgres, migrate, api
        service = stack.services[name]
        service.image, service.argv, service.environment, service.spec_hash()
    stack.address("api", "http")    # "api:8000" (docker) / "127.0.0.1:8000" (local)
    stack.url("grafana")            # "http://127.0.0.1:3000"

Nothing here talks to Docker or starts a process: the Stack is plain frozen data.
Paths in it are resolved for its runtime. Mounts of kind "config" name a folder
of the rendered tree (`tradelab render`), relative to the rendered directory, so
the compose file (relative paths) and the Docker runtime (absolute) agree.

Secrets never appear as values: a service gets `secrets` (a lab secret file and
where it shows up in the service) and environment variables naming that file:
  TRADELAB_DATABASE_URL            the role's URL without its password
  TRADELAB_DATABASE_PASSWORD_FILE  the role's password (see db.connect.resolve_url)
  TRADELAB_<SECRET>_FILE           for migrate: the app and operator role passwords
  POSTGRES_PASSWORD_FILE, GF_SECURITY_ADMIN_PASSWORD__FILE  for the official images
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from tradelab import __version__
from tradelab.const import (
    ALL_SERVICES,
    LABEL_COMPOSE_CONFIG_HASH,
    LABEL_CONFIG_HASH,
    LABEL_CONTAINER_NUMBER,
    LABEL_ONEOFF,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_VERSION,
)
from tradelab.errors import TradelabError

APP_IMAGE = f"tradelab-app:{__version__}"
APP_USER = "10001:10001"  # the user the app Dockerfile creates
SECRETS_DIR_IN_CONTAINER = "/run/secrets"
STATE_DIR_IN_CONTAINER = "/var/lib/tradelab/state"
LOCUST_DIR_IN_CONTAINER = "/mnt/locust"  # <rendered>/locust: the bundled tradelab/loadtest/*.py
# <rendered>/locust-vendor: pure-Python libraries the locustfiles need and the official
# Locust image lacks (prometheus_client, for the master's /metrics); on PYTHONPATH.
# Not inside locust/: `locust -f <folder>` loads every .py file of the tree as a locustfile.
LOCUST_VENDOR_DIR_IN_CONTAINER = "/mnt/locust-vendor"
LOAD_DIR_IN_CONTAINER = "/var/lib/tradelab/load"  # order ledgers of load runs
DOCKER_LOG_DIR = "/var/lib/docker/containers"  # json-file logs the log agent tails
DB_NAME = "tradelab"
BUILD_CONTEXT = "app-image"  # rendered folder: the app image's build context
SLACK_SECRET = "slack_webhook_url"  # written from settings.alerting by `render`
WEBHOOK_SECRET = "alert_webhook_url"  # likewise, where Alertmanager reads url_file
USER_DB_SECRET = "user_database_password"  # the password of a user-set database_url
# Every container logs to json-file with these labels copied into each line ("attrs"),
# so the log agent can tail the files (no Docker socket) and still know the service.
LOG_DRIVER = "json-file"
LOG_OPTIONS = {"labels": f"{LABEL_PROJECT},{LABEL_SERVICE}", "max-size": "10m", "max-file": "3"}
# The official postgres image's entrypoint starts as root: it gives the data folder to
# the postgres user (chown, chmod) and then becomes that user (gosu; setpriv in the
# stand-in). Nothing else of root's is needed.
POSTGRES_ENTRYPOINT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID")

Runtime = Literal["docker", "local"]


@dataclass(frozen=True)
class Port:
    name: str  # "http", "metrics", "postgres", "web", "master"
    container: int  # where the process listens (in local mode: on the host)
    host: int | None  # published on host_ip:host, or None (reachable inside the network only)
    host_ip: str = "127.0.0.1"


@dataclass(frozen=True)
class Mount:
    kind: Literal["volume", "config", "bind"]
    source: str  # volume key | folder relative to the rendered dir | absolute host path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Secret:
    name: str  # one of tradelab.lab.SECRET_NAMES
    source: Path  # the lab's file
    target: str  # where the service reads it


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]  # a command run inside the container (docker runtime, compose)
    port: str | None = None  # for a probe from outside (local runtime): the port's name ...
    path: str | None = None  # ... and an HTTP path, or None for a TCP connect
    interval_s: float = 5
    timeout_s: float = 3
    retries: int = 30
    start_period_s: float = 5


@dataclass(frozen=True)
class Dependency:
    service: str
    condition: Literal["service_started", "service_healthy", "service_completed_successfully"]


@dataclass(frozen=True)
class Metrics:
    port: str  # a Port.name
    path: str = "/metrics"


@dataclass(frozen=True)
class Service:
    name: str
    image: str
    command: tuple[str, ...]  # arguments after the entrypoint
    entrypoint: tuple[str, ...] | None = None  # None: the image's own
    environment: dict[str, str] = field(default_factory=dict)
    ports: tuple[Port, ...] = ()
    mounts: tuple[Mount, ...] = ()
    secrets: tuple[Secret, ...] = ()
    healthcheck: Healthcheck | None = None
    depends_on: tuple[Dependency, ...] = ()
    metrics: Metrics | None = None
    log_labels: dict[str, str] = field(default_factory=dict)  # what Loki may index
    memory: str = "256m"
    user: str | None = None  # None: the image's own
    restart: Literal["no", "unless-stopped", "on-failure"] = "unless-stopped"
    one_shot: bool = False  # runs to completion (migrate); success is exit code 0
    web_path: str | None = None  # has a page a person opens: stack.url(name)
    replicas: int = 1
    app: bool = False  # runs the tradelab app image (built, not pulled)
    # Least privilege in a container (docker runtime; compose the same): every Linux
    # capability dropped but `cap_add`, no-new-privileges (a setuid binary gains
    # nothing), and with `read_only` a read-only root file system (only mounts written;
    # not with `secrets`, which the Docker runtime copies into the root file system).
    cap_drop: tuple[str, ...] = ("ALL",)
    cap_add: tuple[str, ...] = ()
    no_new_privileges: bool = True
    read_only: bool = False
    # The signal on which the process rereads its rendered config (Prometheus and
    # Alertmanager: HUP): `up` reloads it so, instead of restarting or recreating it.
    reload_signal: str | None = None

    @property
    def argv(self) -> tuple[str, ...]:
        """The full command line (local runtime; docker when the entrypoint is set)."""
        return (self.entrypoint or ()) + self.command

    @property
    def secret_owner(self) -> str | None:
        """"uid:gid" its secrets are given to (0400), or None for an image's own user,
        whose uid is not known here (then 0444, readable inside the container only)."""
        return self.user if self.user and self.user.replace(":", "").isdigit() else None

    def port(self, name: str) -> Port:
        for port in self.ports:
            if port.name == name:
                return port
        raise KeyError(f"service {self.name} has no port {name!r}")

    def spec(self) -> dict:
        """The service as JSON-able data (paths as strings)."""
        return json.loads(json.dumps(asdict(self), default=str))

    @property
    def privileges(self) -> dict[str, Any]:
        """Capabilities, no-new-privileges and a read-only root, under the names both the
        compose file and docker-py's containers.create use."""
        out: dict[str, Any] = {"cap_drop": list(self.cap_drop)}
        if self.cap_add:
            out["cap_add"] = list(self.cap_add)
        if self.no_new_privileges:
            out["security_opt"] = ["no-new-privileges:true"]
        if self.read_only:
            out["read_only"] = True
        return out

    @property
    def ready_condition(self) -> str:
        """What `up` waits for on it, in compose's depends_on terms: a one-shot done,
        a service with a health check healthy, any other running."""
        if self.one_shot:
            return "service_completed_successfully"
        return "service_healthy" if self.healthcheck else "service_started"

    def spec_hash(self, extra: str = "") -> str:
        """A stable hash of the spec; `extra` adds e.g. a digest of mounted config files."""
        text = json.dumps(self.spec(), sort_keys=True, separators=(",", ":")) + extra
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Stack:
    project: str
    runtime: Runtime
    services: dict[str, Service]  # in start order
    volumes: tuple[str, ...]  # keys; Docker names are volume_name(key)
    rendered_dir: Path  # config mounts' sources are relative to it
    data_dir: Path  # local runtime: data volumes are folders here
    base_image: str = "python:3.12-slim-bookworm"  # the app image is built on it

    def config_path(self, service: str, folder: str) -> str:
        """Where `service` sees the rendered `folder` (for paths inside config files)."""
        for m in self.services[service].mounts:
            if m.kind == "config" and m.source == folder:
                return m.target
        raise KeyError(f"service {service} does not mount the rendered folder {folder!r}")

    def data_path(self, service: str, key: str) -> str:
        """Where `service` keeps the data volume `key` (a named volume, or <lab>/data/key)."""
        if self.runtime == "local":
            return str(self.data_dir / key)
        for m in self.services[service].mounts:
            if m.kind == "volume" and m.source == key:
                return m.target
        raise KeyError(f"service {service} has no data volume {key!r}")

    @property
    def network(self) -> str:
        """The Docker network (compose's default network name for the project)."""
        return f"{self.project}_default"

    def volume_name(self, key: str) -> str:
        return f"{self.project}_{key}"

    def container_name(self, service: str, number: int = 1) -> str:
        return f"{self.project}-{service}-{number}"

    def labels(self, service: str, number: int = 1) -> dict[str, str]:
        """Labels of a container: compose's own (so `docker compose ps` sees it) + ours."""
        return {
            LABEL_PROJECT: self.project,
            LABEL_SERVICE: service,
            LABEL_CONTAINER_NUMBER: str(number),
            LABEL_ONEOFF: "False",
            LABEL_CONFIG_HASH: self.services[service].spec_hash(),
            LABEL_COMPOSE_CONFIG_HASH: self.services[service].spec_hash(),
            LABEL_VERSION: __version__,
        }

    def start_order(self, names: list[str] | None = None) -> list[str]:
        """`names` (default: all) so that every service comes after what it depends on."""
        wanted = list(self.services) if names is None else names
        order: list[str] = []

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in order or name not in wanted:
                return
            if name in path:
                raise TradelabError(f"dependency cycle: {' -> '.join(path + (name,))}")
            for dep in self.services[name].depends_on:
                visit(dep.service, path + (name,))
            order.append(name)

        for name in wanted:
            visit(name, ())
        return order

    def select(self, only: list[str] | None = None, without: list[str] | None = None) -> list[str]:
        """The services to run for --only/--without, in start order.

        --only pulls in what the named services depend on; --without may not remove
        something a selected service needs (the error names both).
        """
        for name in (only or []) + (without or []):
            self._check_name(name)
        chosen: list[str] = []
        if only:
            def pull(name: str) -> None:
                if name not in chosen:
                    chosen.append(name)
                    for dep in self.services[name].depends_on:
                        pull(dep.service)
            for name in only:
                pull(name)
        else:
            chosen = list(self.services)
        dropped = set(without or [])
        kept = [n for n in chosen if n not in dropped]
        for name in sorted(dropped):
            users = [n for n in kept if name in self._needs(n)]
            if users:
                fix = ",".join(sorted(dropped | set(users)))
                raise TradelabError(f"{name} is needed by {', '.join(users)}: keep {name}, "
                                    f"or leave those out too (--without {fix})")
        return self.start_order([n for n in chosen if n not in dropped])

    def _needs(self, name: str) -> set[str]:
        """Everything `name` depends on, directly or not."""
        needs: set[str] = set()
        todo = [d.service for d in self.services[name].depends_on]
        while todo:
            dep = todo.pop()
            if dep not in needs:
                needs.add(dep)
                todo.extend(d.service for d in self.services[dep].depends_on)
        return needs

    def subset(self, names: list[str]) -> Stack:
        """The same stack with only `names` (e.g. from select()): what up renders and runs."""
        services = {n: svc for n, svc in self.services.items() if n in names}
        volumes = tuple(v for v in self.volumes if any(
            m.kind == "volume" and m.source == v for svc in services.values() for m in svc.mounts))
        return replace(self, services=services, volumes=volumes)

    def _check_name(self, name: str) -> None:
        if name in self.services:
            return
        if name in ALL_SERVICES:
            raise TradelabError(f"{name} is not part of this stack (see the setting log_agent)")
        raise TradelabError(
            f"unknown service {name!r}: choose from {', '.join(self.services)}"
        )

    def address(self, service: str, port: str) -> str:
        """host:port where other services reach `service` (a scrape target, a URL's netloc)."""
        p = self.services[service].port(port)
        if self.runtime == "docker":
            return f"{service}:{p.container}"
        return f"127.0.0.1:{p.container}"

    def url(self, service: str) -> str | None:
        """The web address a person opens on this machine, or None."""
        svc = self.services[service]
        if svc.web_path is None:
            return None
        p = svc.ports[0]
        host = p.host if self.runtime == "docker" else p.container
        if host is None:
            return None
        ip = p.host_ip if p.host_ip not in ("0.0.0.0", "::", "") else "127.0.0.1"
        ip = f"[{ip}]" if ":" in ip else ip
        return f"http://{ip}:{host}{svc.web_path.rstrip('/') or ''}"

    def shared_host_ports(self, names: list[str] | None = None) -> dict[int, list[str]]:
        """Host ports that two or more of `names` (default: all) publish: port -> services.

        Two settings with one value (ports.api == ports.prometheus) would otherwise fail
        half-way through `up` with "port in use", the user being the one who uses it.
        """
        users: dict[int, list[str]] = {}
        for name in names if names is not None else list(self.services):
            for p in self.services[name].ports:
                if p.host is not None and name not in users.setdefault(p.host, []):
                    users[p.host].append(name)
        return {port: svcs for port, svcs in users.items() if len(svcs) > 1}

    def prepare_host_folders(self, names: list[str] | None = None,
                             writable_only: bool = False) -> None:
        """Make the host folders that `names`' bind mounts need (compose's
        create_host_path), and make those a container writes as its image's own user
        (the official Locust image: uid 1000, unknown here) writable by any user, sticky
        like /tmp. `up` makes them all; `render` only the writable ones, which compose
        would create owned by root and unwritable for that user."""
        for name in names if names is not None else list(self.services):
            svc = self.services[name]
            for m in svc.mounts:
                writable = not m.read_only and svc.user is None
                if m.kind != "bind" or (writable_only and not writable):
                    continue
                folder = Path(m.source)
                if not folder.exists():
                    folder.mkdir(parents=True, exist_ok=True)
                if writable:
                    _writable_by_any_user(folder)

    def scrape_targets(self) -> list[tuple[str, str, str]]:
        """(job, address, metrics path) of every service with a metrics endpoint."""
        return [
            (name, self.address(name, svc.metrics.port), svc.metrics.path)
            for name, svc in self.services.items() if svc.metrics is not None
        ]


def _writable_by_any_user(folder: Path) -> None:
    try:
        if folder.stat().st_mode & 0o1777 != 0o1777:
            folder.chmod(0o1777)
    except OSError:
        pass  # not ours to change: the container reports what it cannot write


def rendered_dir(lab, runtime: Runtime) -> Path:
    """Where the configs of a runtime are rendered: <lab>/rendered for Docker (beside the
    compose file), <lab>/rendered/local for local processes, so `tradelab render` for one
    never rewrites what a running lab of the other reloads."""
    return lab.rendered_dir if runtime == "docker" else lab.rendered_dir / "local"


def build_stack(settings, lab, runtime: Runtime = "docker") -> Stack:
    """The Stack for `settings` in `lab`, with ports, paths and commands for `runtime`."""
    if runtime not in ("docker", "local"):
        raise TradelabError(f"unknown runtime {runtime!r}: use docker or local")
    return _Builder(settings, lab, runtime).build()


class _Builder:
    """One method per service; each says everything about its service in one place."""

    def __init__(self, settings, lab, runtime: Runtime) -> None:
        self.s = settings
        self.lab = lab
        self.runtime = runtime
        self.docker = runtime == "docker"

    def build(self) -> Stack:
        makers = [self.postgres, self.migrate, self.api, self.engine, self.prometheus,
                  self.alertmanager, self.grafana, self.loki,
                  self.promtail if self.s.log_agent == "promtail" else self.alloy,
                  self.locust_master, self.locust_worker]
        services = {svc.name: svc for svc in (make() for make in makers)}
        volumes = tuple(sorted({m.source for svc in services.values()
                                for m in svc.mounts if m.kind == "volume"}))
        return Stack(project=self.s.project, runtime=self.runtime, services=services,
                     volumes=volumes, rendered_dir=rendered_dir(self.lab, self.runtime),
                     data_dir=self.lab.data_dir, base_image=self.s.build.base_image)

    # -- shared pieces ---------------------------------------------------------------

    def _port(self, name: str, container: int, host: int | None) -> Port:
        """In local mode the process listens on the host port itself."""
        if self.docker:
            return Port(name, container, host, self.s.bind_address)
        return Port(name, host if host is not None else container, host, self.s.bind_address)

    def _listen(self, port: Port) -> str:
        return f"0.0.0.0:{port.container}" if self.docker else f"{port.host_ip}:{port.container}"

    def _secret(self, name: str) -> Secret:
        target = f"{SECRETS_DIR_IN_CONTAINER}/{name}" if self.docker else str(
            self.lab.secret_path(name))
        return Secret(name, self.lab.secret_path(name), target)

    def _config(self, folder: str, target: str) -> tuple[Mount, str]:
        """Mount a rendered folder; return it and the folder's path as the service sees it."""
        if self.docker:
            return Mount("config", folder, target, read_only=True), target
        path = str(rendered_dir(self.lab, self.runtime) / folder)
        return Mount("config", folder, path, True), path

    def _data(self, key: str, target: str) -> tuple[Mount, str]:
        """A named volume (docker) or a folder under <lab>/data (local)."""
        if self.docker:
            return Mount("volume", key, target), target
        path = str(self.lab.data_dir / key)
        return Mount("bind", path, path), path

    def _http_check(self, port: Port, path: str, tool: str = "wget") -> Healthcheck:
        url = f"http://127.0.0.1:{port.container}{path}"
        test: tuple[str, ...]
        if tool == "python":
            test = ("CMD", "python3", "-c",
                    f"import urllib.request; urllib.request.urlopen({url!r}, timeout=3)")
        else:
            test = ("CMD", "wget", "-q", "-O", "/dev/null", url)
        return Healthcheck(test, port=port.name, path=path)

    def _common(self, name: str) -> dict:
        return {
            "memory": self.s.memory.get(name, "256m"),
            "log_labels": {"project": self.s.project, "service": name},
        }

    def _settings_env(self, *prefixes: str) -> dict[str, str]:
        """Settings a process reads, as TRADELAB_* variables (so a change recreates it)."""
        env = {}
        for key, value in self.s.flat().items():
            # None is every such setting's default; as text it would read back as "null"
            if key.split(".")[0] in prefixes and value is not None:
                text = yaml.safe_dump(value, default_flow_style=True).strip()
                env["TRADELAB_" + key.upper().replace(".", "__")] = text.removesuffix("\n...")
        return env

    def _database_env(self, role: str, secret: str,
                      port: Port) -> tuple[dict[str, str], Secret | None]:
        from tradelab.db.connect import ADMIN_USER, APP_ROLE
        from tradelab.db_url import split_password
        from tradelab.settings import PASSWORD_FILE_ENV

        user = {"admin": ADMIN_USER, "app": APP_ROLE}[role]
        host = "postgres" if self.docker else "127.0.0.1"
        sec = self._secret(secret)
        env = {
            "TRADELAB_DATABASE_URL": f"postgresql://{user}@{host}:{port.container}/{DB_NAME}",
            PASSWORD_FILE_ENV: sec.target,
        }
        if self.s.database_url and role == "app":  # the user's own database
            # Its password, like the lab's, is a file (`render` writes it), never an env var.
            url, password = split_password(self.s.database_url)
            if password is None:
                return {"TRADELAB_DATABASE_URL": url}, None
            sec = self._secret(USER_DB_SECRET)
            return {"TRADELAB_DATABASE_URL": url, PASSWORD_FILE_ENV: sec.target}, sec
        return env, sec

    def _app(self, name: str, command: tuple[str, ...], **kw) -> Service:
        state = (Mount("bind", str(self.lab.state_dir), STATE_DIR_IN_CONTAINER, read_only=True),)
        chaos = (f"{STATE_DIR_IN_CONTAINER}/chaos.json" if self.docker
                 else str(self.lab.chaos_file))
        env = {"TRADELAB_CHAOS_FILE": chaos, **kw.pop("environment")}
        return Service(
            name=name, image=APP_IMAGE, entrypoint=("tradelab",), command=command,
            environment=dict(sorted(env.items())),
            mounts=state if self.docker else (), user=APP_USER if self.docker else None,
            app=True, **self._common(name), **kw,
        )

    # -- the services ----------------------------------------------------------------

    def postgres(self) -> Service:
        port = self._port("postgres", 5432, self.s.ports.postgres)
        data, _ = self._data("pgdata", "/var/lib/postgresql/data")
        sec = self._secret("postgres_password")
        return Service(
            name="postgres", image=self.s.images["postgres"],
            # local: an embedded cluster (tradelab.db.cluster) started by the runtime itself
            command=() if not self.docker else ("postgres",),
            environment={"POSTGRES_DB": DB_NAME, "POSTGRES_USER": "postgres",
                         "POSTGRES_PASSWORD_FILE": sec.target},
            ports=(port,), mounts=(data,), secrets=(sec,), cap_add=POSTGRES_ENTRYPOINT_CAPS,
            healthcheck=Healthcheck(("CMD", "pg_isready", "-q", "-h", "127.0.0.1", "-U",
                                     "postgres", "-d", DB_NAME), port="postgres"),
            **self._common("postgres"),
        )

    def migrate(self) -> Service:
        pg = self._pg_port()
        env, sec = self._database_env("admin", "postgres_password", pg)
        extra = tuple(self._secret(n) for n in ("app_db_password", "operator_db_password"))
        for s in extra:
            env[f"TRADELAB_{s.name.upper()}_FILE"] = s.target
        return self._app(
            "migrate", ("db", "migrate", "--wait", "60"), environment=env,
            secrets=(sec, *extra), restart="no", one_shot=True,
            depends_on=(Dependency("postgres", "service_healthy"),),
        )

    def _pg_port(self) -> Port:
        return self._port("postgres", 5432, self.s.ports.postgres)

    def api(self) -> Service:
        port = self._port("http", 8000, self.s.ports.api)
        env, sec = self._database_env("app", "app_db_password", self._pg_port())
        # prometheus too: slo.window_scale is only valid against the scrape interval, and
        # a container reads its settings from this environment alone.
        env.update(self._settings_env("api", "symbols", "chaos", "slo", "prometheus",
                                      "trading"))
        return self._app(
            "api", ("serve", "api", "--bind", self._listen(port)), environment=env,
            secrets=(sec,) if sec else (), ports=(port,),
            healthcheck=self._http_check(port, "/readyz", tool="python"),
            depends_on=(Dependency("migrate", "service_completed_successfully"),),
            metrics=Metrics("http"), web_path="/",
        )

    def engine(self) -> Service:
        port = self._port("metrics", 9101, self.s.ports.engine)
        env, sec = self._database_env("app", "app_db_password", self._pg_port())
        env.update(self._settings_env("engine", "symbols", "chaos", "trading"))
        return self._app(
            "engine", ("serve", "engine", "--metrics-bind", self._listen(port)), environment=env,
            secrets=(sec,) if sec else (), ports=(port,),
            healthcheck=self._http_check(port, "/metrics", tool="python"),
            depends_on=(Dependency("migrate", "service_completed_successfully"),),
            metrics=Metrics("metrics"),
        )

    def prometheus(self) -> Service:
        port = self._port("http", 9090, self.s.ports.prometheus)
        conf, conf_dir = self._config("prometheus", "/etc/prometheus")
        data, data_dir = self._data("prometheus-data", "/prometheus")
        return Service(
            name="prometheus", image=self.s.images["prometheus"],
            entrypoint=None if self.docker else ("prometheus",),
            command=(f"--config.file={conf_dir}/prometheus.yml",
                     f"--storage.tsdb.path={data_dir}", "--storage.tsdb.retention.time=7d",
                     f"--web.listen-address={self._listen(port)}"),
            # No --web.enable-lifecycle: with it, any local user or any web page (a
            # cross-site POST to 127.0.0.1) could stop Prometheus through /-/quit.
            ports=(port,), mounts=(conf, data), reload_signal="HUP", read_only=True,
            healthcheck=self._http_check(port, "/-/ready"),
            metrics=Metrics("http"), web_path="/", **self._common("prometheus"),
        )

    def alertmanager(self) -> Service:
        port = self._port("http", 9093, self.s.ports.alertmanager)
        conf, conf_dir = self._config("alertmanager", "/etc/alertmanager")
        data, data_dir = self._data("alertmanager-data", "/alertmanager")
        command = [f"--config.file={conf_dir}/alertmanager.yml", f"--storage.path={data_dir}",
                   f"--web.listen-address={self._listen(port)}"]
        if not self.docker:  # no peers; and the default cluster port may be taken
            command.append("--cluster.listen-address=")
        # A Slack webhook URL is a credential: Alertmanager reads it from a lab secret
        # (api_url_file), so the rendered config never holds it. `render` writes the file.
        # So is a webhook URL (it may carry a token) where the Alertmanager reads url_file
        # (0.26+: the pinned image); Debian's 0.25 (local runtime) cannot, and `render`
        # makes the config holding it 0600 instead.
        secrets = tuple(self._secret(name) for name, value in (
            (SLACK_SECRET, self.s.alerting.slack_webhook_url),
            (WEBHOOK_SECRET, self.s.alerting.webhook_url if self.docker else None)) if value)
        return Service(
            name="alertmanager", image=self.s.images["alertmanager"],
            entrypoint=None if self.docker else ("alertmanager",), command=tuple(command),
            ports=(port,), mounts=(conf, data), secrets=secrets, reload_signal="HUP",
            healthcheck=self._http_check(port, "/-/ready"),
            metrics=Metrics("http"), web_path="/", **self._common("alertmanager"),
        )

    def grafana(self) -> Service:
        port = self._port("http", 3000, self.s.ports.grafana)
        prov, prov_dir = self._config("grafana/provisioning", "/etc/grafana/provisioning")
        dash, _ = self._config("grafana/dashboards", "/var/lib/grafana-dashboards")
        data, data_dir = self._data("grafana-data", "/var/lib/grafana")
        sec = self._secret("grafana_admin_password")
        env = {
            "GF_SECURITY_ADMIN_USER": "admin",
            "GF_SECURITY_ADMIN_PASSWORD__FILE": sec.target,
            "GF_PATHS_PROVISIONING": prov_dir,
            "GF_PATHS_DATA": data_dir,
            "GF_SERVER_HTTP_PORT": str(port.container),
            "GF_AUTH_ANONYMOUS_ENABLED": "false",
            "GF_ANALYTICS_REPORTING_ENABLED": "false",
            "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
            "GF_USERS_ALLOW_SIGN_UP": "false",
        }
        if not self.docker:
            env["GF_SERVER_HTTP_ADDR"] = port.host_ip
        return Service(
            name="grafana", image=self.s.images["grafana"],
            entrypoint=None if self.docker else ("grafana", "server"), command=(),
            environment=dict(sorted(env.items())), ports=(port,), mounts=(prov, dash, data),
            secrets=(sec,), healthcheck=self._http_check(port, "/api/health"),
            depends_on=(Dependency("prometheus", "service_started"),),
            metrics=Metrics("http"), web_path="/", **self._common("grafana"),
        )

    def loki(self) -> Service:
        port = self._port("http", 3100, self.s.ports.loki)
        conf, conf_dir = self._config("loki", "/etc/loki")
        data, _ = self._data("loki-data", "/loki")
        return Service(
            name="loki", image=self.s.images["loki"],
            entrypoint=None if self.docker else ("loki",),
            command=(f"-config.file={conf_dir}/loki.yml",),
            ports=(port,), mounts=(conf, data),
            healthcheck=None,  # the image may hold no shell or HTTP client: running = up
            metrics=Metrics("http"), **self._common("loki"),
        )

    def promtail(self) -> Service:
        port = self._port("http", 9080, None)
        conf, conf_dir = self._config("promtail", "/etc/promtail")
        data, _ = self._data("promtail-positions", "/var/lib/promtail")
        return Service(
            name="promtail", image=self.s.images["promtail"],
            entrypoint=None if self.docker else ("promtail",),
            command=(f"-config.file={conf_dir}/promtail.yml",),
            ports=(port,), mounts=(conf, data, *self._docker_logs()),
            healthcheck=None,  # Debian slim image: no wget or curl
            depends_on=(Dependency("loki", "service_started"),),
            metrics=Metrics("http"), read_only=True, **self._common("promtail"),
        )

    def _docker_logs(self) -> tuple[Mount, ...]:
        """What a log agent tails: Docker's json-file logs (not the Docker socket; see
        compose `logging`), read-only. It runs as the image's root, with no capability
        at all: the files are root's own (0640 in 0710 folders), which root reads as
        their owner. A non-root user could not, whatever it is granted: Docker gives an
        added capability to uid 0 only. docs/security.md has what it can still read."""
        return (Mount("bind", DOCKER_LOG_DIR, DOCKER_LOG_DIR, read_only=True),) \
            if self.docker else ()

    def alloy(self) -> Service:
        port = self._port("http", 12345, None)
        conf, conf_dir = self._config("alloy", "/etc/alloy")
        data, data_dir = self._data("alloy-data", "/var/lib/alloy/data")
        return Service(
            name="alloy", image=self.s.images["alloy"],
            entrypoint=None if self.docker else ("alloy",),
            command=("run", f"{conf_dir}/config.alloy",
                     f"--server.http.listen-addr={self._listen(port)}",
                     f"--storage.path={data_dir}"),
            ports=(port,), mounts=(conf, data, *self._docker_logs()),
            healthcheck=None,  # no wget or curl in the image
            depends_on=(Dependency("loki", "service_started"),),
            metrics=Metrics("http"), read_only=True, **self._common("alloy"),
        )

    def _locustfiles(self) -> tuple[tuple[Mount, ...], str, dict[str, str]]:
        """Mounts, locustfile folder and environment of a Locust process.

        The whole folder is loaded (every user class and shape), so `tradelab load` picks
        the user type and profile per run through the master's class picker. Order
        ledgers go to <lab>/state/load (read by `tradelab load` and game days); in docker
        that folder must be writable by the image's user (the runtime sees to it).
        """
        ledgers = str(self.lab.state_dir / "load")
        env = self._settings_env("symbols")
        if self.docker:
            mount, folder = self._config("locust", LOCUST_DIR_IN_CONTAINER)
            vendor, vendor_dir = self._config("locust-vendor", LOCUST_VENDOR_DIR_IN_CONTAINER)
            env["PYTHONPATH"] = vendor_dir
            env["TRADELAB_LOAD_LEDGER_DIR"] = LOAD_DIR_IN_CONTAINER
            return (mount, vendor, Mount("bind", ledgers, LOAD_DIR_IN_CONTAINER)), folder, env
        from importlib import resources

        # Local processes run next to this tradelab: its own prometheus_client is there,
        # and its chaos state, for the clients' own fault (retry-storm).
        env["TRADELAB_LOAD_LEDGER_DIR"] = ledgers
        env["TRADELAB_CHAOS_FILE"] = str(self.lab.chaos_file)
        return (), str(resources.files("tradelab") / "loadtest"), env

    def locust_master(self) -> Service:
        web = self._port("web", 8089, self.s.ports.locust)
        # Workers connect here; published nowhere. Local labs need distinct ports.
        master = self._port("master", 5557 if self.docker else self.s.ports.locust_master, None)
        mounts, locustfiles, env = self._locustfiles()
        api = f"http://{'api' if self.docker else '127.0.0.1'}:{self._port_of_api()}"
        return Service(
            name="locust-master", image=self.s.images["locust"],
            entrypoint=None if self.docker else ("locust",),
            # --class-picker: without it every user class of the folder runs at once;
            # with it each run (web UI or `tradelab load`) names its user and shape.
            # --stop-timeout: at the end users finish the order in flight (the ledgers).
            command=("-f", locustfiles, "--master", "--class-picker", "--host", api,
                     "--web-host", "0.0.0.0" if self.docker else web.host_ip,
                     "--web-port", str(web.container),
                     "--master-bind-port", str(master.container), "--stop-timeout", "10"),
            environment=env, ports=(web, master), mounts=mounts,
            healthcheck=self._http_check(web, "/", tool="python"),
            metrics=Metrics("web"), web_path="/", **self._common("locust-master"),
        )

    def _port_of_api(self) -> int:
        return 8000 if self.docker else self.s.ports.api

    def locust_worker(self) -> Service:
        mounts, locustfiles, env = self._locustfiles()
        return Service(
            name="locust-worker", image=self.s.images["locust"],
            entrypoint=None if self.docker else ("locust",),
            command=("-f", locustfiles, "--worker",
                     "--master-host", "locust-master" if self.docker else "127.0.0.1",
                     "--master-port", str(5557 if self.docker else self.s.ports.locust_master)),
            environment=env, mounts=mounts, replicas=self.s.load_workers,
            depends_on=(Dependency("locust-master", "service_started"),),
            **self._common("locust-worker"),
        )


def mounted_config_digest(service: Service, rendered_dir: Path) -> str:
    """A digest of the rendered files `service` mounts: feed it to spec_hash(extra=...)."""
    digest = hashlib.sha256()
    for mount in service.mounts:
        if mount.kind != "config":
            continue
        folder = Path(rendered_dir) / mount.source
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(rendered_dir)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:32]
