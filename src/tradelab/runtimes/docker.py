"""The lab as Docker containers, driven through the Docker SDK from the Stack model.

    driver = DockerRuntime(settings, lab)     # usually through tradelab.orchestrator
    driver.prepare(names, build=True); driver.action_for("api"); driver.create("api")
    driver.status(); driver.logs("api", tail=50); driver.down(volumes=True)
    driver.pause("postgres"); driver.unpause("postgres"); driver.restart("api")
    driver.scale("locust-worker", 3)   # until the next `up` (tradelab load --workers 3)

Every object carries the labels docker-compose uses (project, service, container
number) plus a config hash, and every lookup filters by them: the truth about what
runs lives in Docker, not in a file. `up` (tradelab.orchestrator.converge) is
idempotent: a container is created when missing and recreated only when its hash
changes; the hash covers the service's spec, the image id, the secrets it gets and
the content of the rendered configs it mounts (but for a service with a reload
signal, which the orchestrator reloads).

A failed `up` removes what that `up` created (containers, the network, volumes it
made; `finish(failed=True)`) and keeps what was there before, data volumes included:
the lab is never left half made.
"""

from __future__ import annotations

import functools
import hashlib
import io
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tradelab.const import (
    LABEL_COMPOSE_CONFIG_HASH,
    LABEL_CONFIG_HASH,
    LABEL_CONTAINER_NUMBER,
    LABEL_NETWORK,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_VOLUME,
)
from tradelab.errors import TradelabError
from tradelab.runtimes import docker_health as health
from tradelab.runtimes import docker_image
from tradelab.runtimes.base import (
    Action,
    Check,
    ExecResult,
    Health,
    RuntimeKind,
    ServiceState,
    ServiceStatus,
)
from tradelab.settings import memory_bytes
from tradelab.stack import (
    BUILD_CONTEXT,
    LOG_DRIVER,
    LOG_OPTIONS,
    Service,
    build_stack,
    mounted_config_digest,
)

if TYPE_CHECKING:
    from tradelab.lab import Lab
    from tradelab.settings import Settings

NOT_REACHABLE = "Docker is not reachable: start Docker or use --runtime local"
STOP_TIMEOUT_S = 10


def connect(timeout: int = 60):
    """A Docker client that answered a ping, or the one-line "not reachable" error."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException:
        raise TradelabError(NOT_REACHABLE) from None
    return client


def _translated(method):
    """SDK errors nobody translated closer to the call become one line (no traceback)."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        import requests
        from docker.errors import DockerException

        try:
            return method(self, *args, **kwargs)
        except requests.ConnectionError:
            raise TradelabError(NOT_REACHABLE) from None
        except DockerException as exc:
            raise TradelabError(f"Docker refused {method.__name__.replace('_', ' ')}: "
                                f"{_explain(exc)}") from None

    return wrapper


@dataclass
class ContainerSpec:
    """One container of a service: create() arguments, files copied in, identifying hash."""

    service: Service
    number: int
    create: dict[str, Any]
    files: list[tuple[str, bytes, str | None]]  # (path in container, content, owner uid:gid)
    config_hash: str


@dataclass
class _Created:
    """What one `up` created, so that a failure takes back exactly that."""

    containers: list = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    network: str | None = None


class DockerRuntime:
    """The Docker driver: every primitive through the Docker SDK, on labelled containers."""

    kind = RuntimeKind.DOCKER
    name = "docker"

    def __init__(self, settings: Settings, lab: Lab, echo: Callable[[str], None] | None = None):
        self.settings = settings
        self.lab = lab
        self.stack = build_stack(settings, lab, runtime="docker")
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self._client = None
        self._up: _Created | None = None  # what the `up` under way created
        self._images: dict[str, str] = {}  # image reference -> id, once prepared
        self._build = False

    @property
    def client(self):
        if self._client is None:
            self._client = connect()
        return self._client

    # -- lookups (always by label) ---------------------------------------------------------

    def _filters(self, service: str | None = None) -> dict[str, list[str]]:
        labels = [f"{LABEL_PROJECT}={self.stack.project}"]
        if service:
            labels.append(f"{LABEL_SERVICE}={service}")
        return {"label": labels}

    def containers(self, service: str | None = None) -> list:
        """This lab's containers (of one service), by container number."""
        found = self.client.containers.list(all=True, filters=self._filters(service))
        return sorted(found, key=lambda c: (c.labels.get(LABEL_SERVICE, ""),
                                            int(c.labels.get(LABEL_CONTAINER_NUMBER, "1"))))

    def _service(self, name: str) -> Service:
        if name not in self.stack.services:
            raise TradelabError(
                f"unknown service {name!r}: choose from {', '.join(self.stack.services)}")
        return self.stack.services[name]

    # -- up --------------------------------------------------------------------------------

    def selectable(self, only: list[str] | None, without: list[str] | None) -> list[str]:
        return self.stack.select(only, without)

    def recover(self) -> None:
        """Nothing to recover: Docker keeps what runs, whatever happened to tradelab."""

    def host_ports(self, service: str) -> list[tuple[str, int]]:
        return [(p.host_ip, p.host) for p in self._service(service).ports if p.host is not None]

    @_translated
    def prepare(self, names: list[str], build: bool) -> None:
        """Images (pulled or built), the network and the volumes `names` use."""
        self._up, self._build = _Created(), build
        self._images = self.ensure_images(names, build)
        self.ensure_network(self._up)
        self.ensure_volumes(names, self._up)

    @_translated
    def action_for(self, service: str) -> Action:
        """From each replica's container and config hash; the most any of them needs."""
        svc = self._service(service)
        existing = {int(c.labels.get(LABEL_CONTAINER_NUMBER, "1")): c
                    for c in self.containers(service)}
        actions = {Action.RECREATE} if set(existing) - set(range(1, svc.replicas + 1)) else set()
        for number in range(1, svc.replicas + 1):
            container = existing.get(number)
            spec = self.container_spec(svc, number, self._image_id(svc))
            if container is None:
                actions.add(Action.CREATE)
            elif container.labels.get(LABEL_CONFIG_HASH) != spec.config_hash:
                actions.add(Action.RECREATE)
            elif not _settled(container, svc):
                actions.add(Action.START)
        for action in (Action.RECREATE, Action.CREATE, Action.START):
            if action in actions:
                return action
        return Action.NOTHING

    def finish(self, failed: bool) -> None:
        created, self._up = self._up, None
        if failed and created is not None:
            self._undo(created)
        elif not failed and self._build:  # the containers of a replaced app image are gone
            docker_image.remove_replaced_app_images(self.client)

    def _image_id(self, svc: Service) -> str:
        if svc.image not in self._images:
            self._images.update(self.ensure_images([svc.name], build=False))
        return self._images[svc.image]

    def ensure_images(self, names: list[str], build: bool) -> dict[str, str]:
        """Image reference -> id for the services; pull or build what is missing."""
        ids: dict[str, str] = {}
        for name in names:
            svc = self.stack.services[name]
            if svc.image in ids:
                continue
            if svc.app:
                # From the context render_configs() just wrote: the compose file's too.
                ids[svc.image] = docker_image.ensure_app_image(
                    self.client, svc.image, self.stack.base_image, build, self.echo,
                    context=self.stack.rendered_dir / BUILD_CONTEXT)
            else:
                ids[svc.image] = docker_image.ensure_image(
                    self.client, svc.image, self.image_key(svc), self.echo)
        return ids

    def image_key(self, svc: Service) -> str:
        """The `images.KEY` setting a service's image comes from."""
        keys = [k for k, v in self.settings.images.items() if v == svc.image]
        return keys[0] if keys else svc.name.split("-")[0]

    def ensure_network(self, created: _Created) -> None:
        from docker.errors import APIError, NotFound

        try:
            self.client.networks.get(self.stack.network)
        except NotFound:
            try:
                self.client.networks.create(
                    self.stack.network, driver="bridge",
                    labels={LABEL_PROJECT: self.stack.project, LABEL_NETWORK: "default"})
            except APIError as exc:
                raise TradelabError(f"cannot create network {self.stack.network}: "
                                    f"{_explain(exc)}") from None
            created.network = self.stack.network

    def ensure_volumes(self, names: list[str], created: _Created) -> None:
        from docker.errors import APIError, NotFound

        self.stack.prepare_host_folders(names)
        keys = {m.source for n in names for m in self.stack.services[n].mounts
                if m.kind == "volume"}
        for key in sorted(keys):
            name = self.stack.volume_name(key)
            try:
                self.client.volumes.get(name)
            except NotFound:
                try:
                    self.client.volumes.create(
                        name, labels={LABEL_PROJECT: self.stack.project, LABEL_VOLUME: key})
                except APIError as exc:
                    raise TradelabError(f"cannot create volume {name}: {_explain(exc)}") from None
                created.volumes.append(name)

    def ensure_service(self, svc: Service, images: dict[str, str], created: _Created) -> None:
        """Each replica up to date and started; surplus replicas removed."""
        existing = {int(c.labels.get(LABEL_CONTAINER_NUMBER, "1")): c
                    for c in self.containers(svc.name)}
        for number in range(1, svc.replicas + 1):
            spec = self.container_spec(svc, number, images[svc.image])
            self._ensure_container(spec, existing.pop(number, None), created)
        for container in existing.values():
            self.echo(f"removing {container.name} (fewer replicas)")
            _remove(container)

    def container_spec(self, svc: Service, number: int, image_id: str) -> ContainerSpec:
        """The container a service needs, and a hash over everything that defines it."""
        from docker.types import LogConfig, Mount

        # Rendered configs are part of the spec: a changed config recreates the container,
        # unless the service rereads it on a signal (Prometheus: `up` reloads it so).
        configs = "" if svc.reload_signal else mounted_config_digest(svc, self.stack.rendered_dir)
        digest = hashlib.sha256((image_id + configs).encode())
        mounts = []
        for m in svc.mounts:
            if m.kind == "volume":
                mounts.append(Mount(m.target, self.stack.volume_name(m.source), type="volume",
                                    read_only=m.read_only))
                continue
            source = (self.stack.rendered_dir / m.source) if m.kind == "config" else Path(
                m.source)
            mounts.append(Mount(m.target, str(source.resolve()), type="bind",
                                read_only=m.read_only))
        files = [(s.target, s.source.read_bytes(), svc.secret_owner) for s in svc.secrets]
        for target, data, _ in files:
            digest.update(target.encode() + hashlib.sha256(data).digest())
        # The number of replicas is no part of a replica's identity: scaling adds or
        # removes containers and leaves the others running, as compose does.
        config_hash = replace(svc, replicas=1).spec_hash(extra=digest.hexdigest())
        labels = {**self.stack.labels(svc.name, number), LABEL_CONFIG_HASH: config_hash,
                  LABEL_COMPOSE_CONFIG_HASH: config_hash}
        create: dict[str, Any] = {
            "image": image_id,
            "name": self.stack.container_name(svc.name, number),
            "hostname": svc.name if number == 1 else f"{svc.name}-{number}",
            "command": list(svc.command) or None,
            "environment": dict(svc.environment),
            "ports": {f"{p.container}/tcp": (p.host_ip, p.host)
                      for p in svc.ports if p.host is not None},
            "mounts": mounts,
            "mem_limit": svc.memory,
            "restart_policy": {"Name": svc.restart},
            "init": True,  # reaps zombies and forwards signals for every image alike
            "labels": labels,
            "log_config": LogConfig(type=LOG_DRIVER, config=dict(LOG_OPTIONS)),
        }
        if svc.entrypoint is not None:
            create["entrypoint"] = list(svc.entrypoint)
        if svc.user:
            create["user"] = svc.user
        create.update(svc.privileges)
        if svc.healthcheck:
            hc, ns = svc.healthcheck, 1_000_000_000
            create["healthcheck"] = {
                "test": list(hc.test), "interval": int(hc.interval_s * ns),
                "timeout": int(hc.timeout_s * ns), "retries": hc.retries,
                "start_period": int(hc.start_period_s * ns)}
        return ContainerSpec(svc, number, create, files, config_hash)

    def _ensure_container(self, spec: ContainerSpec, existing, created: _Created) -> None:
        svc = spec.service
        if existing is not None and existing.labels.get(LABEL_CONFIG_HASH) == spec.config_hash:
            state = existing.attrs["State"]
            if svc.one_shot and state["Status"] == "exited" and state.get("ExitCode") == 0:
                return  # done, and nothing about it changed
            if state["Status"] != "running":
                self._start(existing, svc)
            return
        if existing is not None:
            _remove(existing)
        container = self._create(spec)
        created.containers.append(container)
        self._start(container, svc)

    def _create(self, spec: ContainerSpec):
        from docker.errors import APIError

        network = self.stack.network
        try:
            # The service name as alias: peers find it by name, as under compose.
            endpoint = self.client.api.create_endpoint_config(aliases=[spec.service.name])
            container = self.client.containers.create(
                network=network, networking_config={network: endpoint}, **spec.create)
            if spec.files:  # copied, not bind-mounted: readable by the service's own user
                container.put_archive("/", _tar(spec.files))
        except APIError as exc:
            raise TradelabError(f"cannot create container for service {spec.service.name}: "
                                f"{_explain(exc)}") from None
        return container

    def _start(self, container, svc: Service) -> None:
        from docker.errors import APIError

        try:
            container.start()
        except APIError as exc:
            text = _explain(exc)
            if "port is already allocated" in text or "address already in use" in text:
                ports = [p.host for p in svc.ports if p.host is not None]
                port = next((p for p in ports if str(p) in text), ports[0] if ports else 0)
                key = (self.settings.port_keys(port) or ["ports"])[0]
                raise TradelabError(f"port {port} ({key}) is in use: stop what uses it, "
                                    f"or set {key} to a free port in tradelab.yaml") from None
            raise TradelabError(f"cannot start service {svc.name}: {text}") from None
        container.reload()

    def _undo(self, created: _Created) -> None:
        if not (created.containers or created.network or created.volumes):
            return
        self.echo("up failed: removing what it created (existing data volumes are kept)")
        for container in reversed(created.containers):
            _quietly(functools.partial(_remove, container))
        for name in created.volumes:
            _quietly(functools.partial(self._remove_volume, name))
        if created.network:
            _quietly(lambda: self.client.networks.get(created.network).remove())

    # -- down, status, logs, runtime faults ------------------------------------------------

    @_translated
    def down(self, volumes: bool = False) -> list[str]:
        """Remove every container and the network; the data volumes too with `volumes`
        (returned: "volume NAME" for each one deleted)."""
        for container in self.containers():
            self.echo(f"removing {container.name}")
            _remove(container)
        from docker.errors import APIError

        for net in self.client.networks.list(filters=self._filters()):
            try:
                net.remove()
            except APIError as exc:
                raise TradelabError(
                    f"cannot remove network {net.name}: {_explain(exc)} (a container outside "
                    f"the lab is attached: `docker network inspect {net.name}`)") from None
        removed = []
        if volumes:
            for vol in self.client.volumes.list(filters=self._filters()):
                self.echo(f"removing volume {vol.name}")
                vol.remove(force=True)
                removed.append(f"volume {vol.name}")
        return removed

    @_translated
    def status(self) -> list[ServiceStatus]:
        found: dict[str, list] = {}
        for c in self.containers():
            found.setdefault(c.labels.get(LABEL_SERVICE, ""), []).append(c)
        return [self._status_of(name, found.get(name, [])) for name in self.stack.services]

    def _remove_volume(self, name: str) -> None:
        self.client.volumes.get(name).remove(force=True)

    def _status_of(self, name: str, containers: list) -> ServiceStatus:
        url = self.stack.url(name)
        if not containers:
            return ServiceStatus(name, ServiceState.MISSING, Health.NOT_APPLICABLE, url)
        states = [health.state(c) for c in containers]
        state = states[0]
        # A stopped container keeps its last health status: not meaningful any more.
        checked = Health((state.get("Health") or {}).get("Status") or "none"
                         if state["Status"] == "running" else "n/a")
        exited = state["Status"] in ("exited", "dead")
        detail = f"exit {state.get('ExitCode')}" if state["Status"] == "exited" else ""
        if len(containers) > 1:
            running = sum(s["Status"] == "running" for s in states)
            detail = f"{running}/{len(containers)} running"
        started = [t for s in states if (t := health.started_at(s)) is not None]
        return ServiceStatus(name, _STATES.get(state["Status"], ServiceState.DEAD), checked,
                             url, detail, started_at=min(started, default=None),
                             exit_code=state.get("ExitCode") if exited else None)

    @_translated
    def is_up(self) -> bool:
        return bool(self.containers())

    # -- primitives ----------------------------------------------------------------------

    @_translated
    def inspect(self, service: str) -> ServiceStatus:
        self._service(service)
        return self._status_of(service, self.containers(service))

    @_translated
    def create(self, service: str) -> None:
        """Create what is missing or changed of one service, and start it. Outside an `up`
        (no prepare) with the image as it is, and what it made is removed if it fails."""
        svc = self._service(service)
        if self._up is not None:
            self.ensure_service(svc, self._images, self._up)
            return
        created = _Created()
        try:
            self.ensure_service(svc, {svc.image: self._image_id(svc)}, created)
        except BaseException:
            self._undo(created)
            raise

    @_translated
    def logs(self, service: str, follow: bool = False, tail: int | None = 100,
             out: TextIO | None = None) -> None:
        out = out or sys.stdout
        container = self._require(service)
        kwargs: dict[str, Any] = {"tail": tail if tail is not None else "all"}
        if follow:
            for chunk in container.logs(stream=True, follow=True, **kwargs):
                out.write(chunk.decode(errors="replace"))
                out.flush()
        else:
            out.write(container.logs(**kwargs).decode(errors="replace"))
            out.flush()

    @_translated
    def stop(self, service: str) -> None:
        for container in self._all(service):
            container.stop(timeout=STOP_TIMEOUT_S)

    @_translated
    def start(self, service: str) -> None:
        svc = self._service(service)
        for container in self._all(service):
            if container.status != "running":
                self._start(container, svc)

    @_translated
    def kill(self, service: str) -> None:
        """SIGKILL, as a crash: Docker does not restart a killed container by itself."""
        self._each(service, "kill", lambda c: c.kill("SIGKILL"))

    @_translated
    def pause(self, service: str) -> None:
        """Freeze every container of the service (cgroup freezer): alive, answering nothing."""
        self._each(service, "pause", lambda c: c.pause())

    @_translated
    def unpause(self, service: str) -> None:
        self._each(service, "unpause",
                   lambda c: c.unpause() if health.state(c)["Status"] == "paused" else None)

    @_translated
    def signal(self, service: str, signame: str) -> None:
        """`docker kill --signal`: the container's init forwards it to the process."""
        self._each(service, f"signal {signame}", lambda c: c.kill(signal=f"SIG{signame}"))

    @_translated
    def restart(self, service: str) -> None:
        """Each container stopped and started, back on the lab's network if it was cut
        (as an orchestrator reschedules a pod away from a partitioned node)."""
        self.connect(service)
        self._each(service, "restart", lambda c: c.restart(timeout=STOP_TIMEOUT_S))

    @_translated
    def disconnect(self, service: str) -> None:
        """Cut every container of the service off the lab's network (`docker network
        disconnect`): it runs on, and reaches no other service, nor they it."""
        network = self.client.networks.get(self.stack.network)
        self._each(service, "disconnect", lambda c: network.disconnect(c)
                   if self.stack.network in _networks(c) else None)

    @_translated
    def connect(self, service: str) -> None:
        """Put the service's containers back on the lab's network, under its name."""
        network = self.client.networks.get(self.stack.network)
        self._each(service, "connect", lambda c: None if self.stack.network in _networks(c)
                   else network.connect(c, aliases=[service]))

    @_translated
    def exec(self, service: str, argv: list[str]) -> ExecResult:
        """Run `argv` in the service's (first) container, as the service's user."""
        svc = self._service(service)
        from docker.errors import APIError

        try:
            result = self._require(service).exec_run(argv, user=svc.user or "")
        except APIError as exc:
            raise TradelabError(f"cannot run {argv[0]} in {service}: {_explain(exc)}") from None
        return ExecResult(result.exit_code, result.output.decode(errors="replace"))

    @_translated
    def health(self, service: str) -> Health:
        """Docker's record, or the image's check run now while Docker has not run it yet
        (its first check comes one interval after the start)."""
        svc = self._service(service)
        status = self.inspect(service)
        if (status.state is ServiceState.RUNNING and status.health is Health.STARTING
                and all(health.probe_now(c, svc) for c in self.containers(service))):
            return Health.HEALTHY
        return status.health

    @_translated
    def scale(self, service: str, replicas: int, timeout: float = 120) -> None:
        """Run `replicas` containers of `service` (Locust workers) until the next `up`,
        which goes back to the settings (load_workers)."""
        if service != "locust-worker":
            raise TradelabError(f"only locust-worker can be scaled, not {service}")
        svc = replace(self._service(service), replicas=max(1, replicas))
        if not any(c.status == "running" for c in self.containers("locust-master")):
            raise TradelabError("the lab's Locust master is not running: start it with "
                                "`tradelab up`")
        images = {svc.image: docker_image.ensure_image(self.client, svc.image,
                                                       self.image_key(svc), self.echo)}
        self.echo(f"running {svc.replicas} {service} container(s)")
        created = _Created()
        try:
            self.ensure_service(svc, images, created)
            health.wait_for(self.containers, svc, svc.ready_condition,
                            time.monotonic() + timeout, timeout, self.echo)
        except BaseException:
            self._undo(created)
            raise

    def _require(self, service: str):
        return self._all(service)[0]

    def _all(self, service: str) -> list:
        """Every container of `service`, or a TradelabError saying to run `tradelab up`."""
        self._service(service)
        found = self.containers(service)
        if not found:
            raise TradelabError(f"{service} has no container in lab {self.stack.project}: "
                                "start it with `tradelab up`")
        return found

    def _each(self, service: str, verb: str, action: Callable[[Any], Any]) -> None:
        from docker.errors import APIError

        for container in self._all(service):
            try:
                action(container)
            except APIError as exc:
                raise TradelabError(f"cannot {verb} {service}: {_explain(exc)}") from None

    # -- doctor ------------------------------------------------------------------------------

    def probes(self, names: list[str]) -> list[Check]:
        """Engine reachable (first), memory for the lab's limits, and every image `up` of
        `names` needs: present, pullable (ok None: `up` pulls it, which takes time) or
        neither (fails, as `up` would, before creating anything)."""
        try:
            client = self.client
        except TradelabError as exc:
            return [Check("docker", False, str(exc))]
        version = client.version()
        checks = [Check("docker", True, f"engine {version.get('Version')} "
                                        f"(API {version.get('ApiVersion')})")]
        total = client.info().get("MemTotal", 0)
        limits = sum(memory_bytes(self.stack.services[n].memory)
                     * self.stack.services[n].replicas for n in names)
        checks.append(Check("memory", total >= limits,
                            f"engine has {total / 2**30:.1f} GiB; the lab's memory limits "
                            f"add up to {limits / 2**30:.1f} GiB (set memory.SERVICE)"))
        app = next((self.stack.services[n] for n in names if self.stack.services[n].app), None)
        if app is not None:
            present = docker_image.image_present(client, app.image)
            checks.append(Check(f"image {app.image}", True if present else None,
                                "the app image: " + ("present" if present else
                                                     f"built by `tradelab up` on "
                                                     f"{self.stack.base_image}")))
        missing = []
        for need in self.image_needs(names, build=True):
            why = docker_image.why_not_here(client, need.ref)
            if why:
                missing.append((need, why))
            here = why is None and docker_image.image_present(client, need.ref)
            checks.append(Check(
                f"image {need.ref}", False if why else True if here else None,
                f"{need.used_by} ({need.setting}): " + (
                    why or ("present" if here else "missing: `tradelab up` pulls it"))))
        if missing:
            checks.append(Check("images", False, docker_image.unobtainable_error(missing)))
        return checks

    def preflight(self, names: list[str], build: bool) -> None:
        """Every image `up` of `names` needs is here or pullable, or one error naming all
        that are not (asked once each, before anything is pulled or created)."""
        missing = docker_image.unobtainable(self.client, self.image_needs(names, build))
        if missing:
            raise TradelabError(docker_image.unobtainable_error(missing))

    def image_needs(self, names: list[str], build: bool) -> list[docker_image.Need]:
        """The images `up` of `names` pulls or builds on: each service's own, and the app
        image's base where the app image has to be built."""
        users: dict[tuple[str, str], list[str]] = {}
        for name in names:
            svc = self.stack.services[name]
            if not svc.app:
                users.setdefault((svc.image, f"images.{self.image_key(svc)}"), []).append(name)
            elif not any(setting == "build.base_image" for _, setting in users) \
                    and docker_image.app_image_needs_base(
                        self.client, svc.image, self.stack.base_image, build,
                        self.stack.rendered_dir / BUILD_CONTEXT):
                users[(self.stack.base_image, "build.base_image")] = ["the app image's base"]
        return [docker_image.Need(ref, setting, " and ".join(who))
                for (ref, setting), who in users.items()]


# Docker's container states, as tradelab names them.
_STATES = {"running": ServiceState.RUNNING, "paused": ServiceState.PAUSED,
           "restarting": ServiceState.RESTARTING, "exited": ServiceState.EXITED,
           "created": ServiceState.CREATED, "removing": ServiceState.STOPPING,
           "dead": ServiceState.DEAD}


# -- small helpers ------------------------------------------------------------------------


def _settled(container, svc: Service) -> bool:
    """Running, or (a one-shot) done: nothing to start."""
    state = container.attrs["State"]
    if svc.one_shot:
        return state["Status"] == "exited" and state.get("ExitCode") == 0
    return state["Status"] == "running"


def _tar(files: list[tuple[str, bytes, str | None]]) -> bytes:
    """A tar of `files` for put_archive: 0400 for a known numeric owner, else 0444."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        parents = sorted({p for target, _, _ in files
                          for p in Path(target.lstrip("/")).parents if str(p) != "."})
        for d in parents:
            info = tarfile.TarInfo(str(d))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for target, data, owner in files:
            info = tarfile.TarInfo(target.lstrip("/"))
            info.size, info.mode = len(data), 0o444
            if owner:
                uid, _, gid = owner.partition(":")
                info.uid, info.gid, info.mode = int(uid), int(gid or uid), 0o400
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _networks(container) -> dict:
    """The networks a container is attached to now (fresh from the engine)."""
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"] or {}


def _explain(exc: Exception) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _remove(container) -> None:
    from docker.errors import NotFound

    try:  # v: its anonymous volumes (an image's VOLUME we did not name) go with it
        container.remove(force=True, v=True)
    except NotFound:
        pass


def _quietly(action: Callable[[], Any]) -> None:
    """Cleanup that must not hide the error being reported."""
    try:
        action()
    except Exception:  # noqa: BLE001
        pass
