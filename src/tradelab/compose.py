"""The Stack as a compose-spec document: what `tradelab up` creates, for `docker compose`.

    data = compose_document(build_stack(settings, lab, "docker"))
    yaml.safe_dump(data)        # the rendered docker-compose.yml (see templates/)

Same project name, service names, network, volume names (compose prefixes them with
the project, as the Docker runtime does), ports, labels and log options. Config
mounts are relative to the compose file's folder. Two things compose cannot do the
runtime's way, and the document does them its own:

- The app image: `tradelab up` builds it from the installed package. The compose
  file gives the app services a `build:` of the same context, rendered into
  app-image/ (tradelab.app_image.build_context_files) and labelled with
  the same context hash, so either tool's image satisfies the other.
- Secrets: `tradelab up` copies each lab secret into the containers that read it,
  owned by the user the container runs as. Compose bind-mounts file secrets with the
  host file's owner and mode (0600 here) and ignores uid/mode outside swarm, so a
  non-root app could not read them. A one-shot `secrets-init` service (the app image,
  as root, no network) copies them instead into one volume per reading service,
  mounted read-only at /run/secrets, with the same owners and modes as `tradelab up`.
"""

from __future__ import annotations

import shlex
from typing import Any

from tradelab.const import LABEL_CONTEXT_HASH, LABEL_VERSION
from tradelab.errors import TradelabError
from tradelab.stack import (
    APP_IMAGE,
    BUILD_CONTEXT,
    LOG_DRIVER,
    LOG_OPTIONS,
    SECRETS_DIR_IN_CONTAINER,
    Service,
    Stack,
)

SECRETS_INIT = "secrets-init"
_LAB_SECRETS = "/lab-secrets"  # where secrets-init sees the lab's secrets folder
_COPIES = "/copies"  # where secrets-init sees each reader's volume, /copies/<service>


def compose_document(stack: Stack, context_label: str | None = None) -> dict[str, Any]:
    """The compose document; `context_label` is the app image's context-hash label."""
    if stack.runtime != "docker":
        raise TradelabError("a compose file describes the docker runtime: render with "
                            "--runtime docker")
    build = _build(stack, context_label)
    services = {name: _service(svc, build) for name, svc in stack.services.items()}
    volumes: dict[str, dict[str, Any]] = {key: {} for key in stack.volumes}
    readers = [svc for svc in stack.services.values() if svc.secrets]
    if readers:
        services[SECRETS_INIT] = _secrets_init(readers, build)
        for svc in readers:
            key = _secrets_volume(svc)
            volumes[key] = {}
            out = services[svc.name]
            out.setdefault("volumes", []).append(
                {"type": "volume", "source": key, "target": SECRETS_DIR_IN_CONTAINER,
                 "read_only": True})
            out["depends_on"] = {SECRETS_INIT: {"condition": "service_completed_successfully"},
                                 **out.get("depends_on", {})}
    doc: dict[str, Any] = {"name": stack.project, "services": dict(sorted(services.items()))}
    if volumes:
        doc["volumes"] = dict(sorted(volumes.items()))
    return doc


def _duration(seconds: float) -> str:
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{int(seconds * 1000)}ms"


def _build(stack: Stack, context_label: str | None) -> dict[str, Any]:
    build: dict[str, Any] = {"context": f"./{BUILD_CONTEXT}",
                             "args": {"BASE_IMAGE": stack.base_image}}
    if context_label:
        build["labels"] = {LABEL_CONTEXT_HASH: context_label}
    return build


def _service(svc: Service, build: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"image": svc.image}
    if svc.app:
        out["build"] = build  # from the rendered context when the image is missing
    if svc.entrypoint is not None:
        out["entrypoint"] = list(svc.entrypoint)
    if svc.command:
        out["command"] = list(svc.command)
    if svc.user:
        out["user"] = svc.user
    out.update(_privileges(svc))
    if svc.environment:
        out["environment"] = dict(svc.environment)
    published = [p for p in svc.ports if p.host is not None]
    if published:
        out["ports"] = [{"target": p.container, "published": str(p.host), "host_ip": p.host_ip,
                         "protocol": "tcp"} for p in published]
    unpublished = [str(p.container) for p in svc.ports if p.host is None]
    if unpublished:
        out["expose"] = unpublished
    if svc.mounts:
        out["volumes"] = [_mount(m) for m in svc.mounts]
    if svc.healthcheck:
        hc = svc.healthcheck
        out["healthcheck"] = {"test": list(hc.test), "interval": _duration(hc.interval_s),
                              "timeout": _duration(hc.timeout_s), "retries": hc.retries,
                              "start_period": _duration(hc.start_period_s)}
    if svc.depends_on:
        out["depends_on"] = {d.service: {"condition": d.condition} for d in svc.depends_on}
    out["mem_limit"] = svc.memory
    out["restart"] = svc.restart
    if svc.replicas != 1:
        out["scale"] = svc.replicas
    out.update(_common())
    return out


def _privileges(svc: Service) -> dict[str, Any]:
    """Capabilities, no-new-privileges and a read-only root, as the Docker runtime's."""
    return svc.privileges


def _common() -> dict[str, Any]:
    return {"init": True,  # as the Docker runtime: reaps zombies, forwards signals
            "labels": {LABEL_VERSION: _version()},
            "logging": {"driver": LOG_DRIVER, "options": dict(LOG_OPTIONS)}}


def _secrets_volume(svc: Service) -> str:
    return f"{svc.name}-secrets"


def _secrets_init(readers: list[Service], build: dict[str, Any]) -> dict[str, Any]:
    """The one-shot service that copies each reader's secrets into its volume: owned by
    the reader's numeric user with mode 0400, else 0444 (the image's own user, whose uid
    is not known here), like the Docker runtime's copy (runtimes.docker._tar)."""
    folders = {s.source.parent for svc in readers for s in svc.secrets}
    if len(folders) != 1:
        raise TradelabError("secrets come from more than one folder: "
                            + ", ".join(sorted(map(str, folders))))
    steps = ["set -eu"]
    for svc in readers:
        dest = f"{_COPIES}/{svc.name}"
        steps.append(f"rm -rf {dest}/*")
        owner = svc.secret_owner
        uid, _, gid = (owner or "0:0").partition(":")
        for sec in svc.secrets:
            if not sec.target.startswith(SECRETS_DIR_IN_CONTAINER + "/"):
                raise TradelabError(f"secret {sec.name} of {svc.name} is not under "
                                    f"{SECRETS_DIR_IN_CONTAINER}")
            name = sec.target[len(SECRETS_DIR_IN_CONTAINER) + 1:]
            steps.append(f"install -o {uid} -g {gid or uid} -m {'0400' if owner else '0444'} "
                         f"{_LAB_SECRETS}/{shlex.quote(sec.source.name)} "
                         f"{dest}/{shlex.quote(name)}")
    mounts = [{"type": "bind", "source": str(folders.pop()), "target": _LAB_SECRETS,
               "read_only": True}]
    mounts += [{"type": "volume", "source": _secrets_volume(svc),
                "target": f"{_COPIES}/{svc.name}"} for svc in readers]
    return {"image": APP_IMAGE, "build": build, "user": "0:0", "entrypoint": ["sh", "-c"],
            "command": ["\n".join(steps) + "\n"], "network_mode": "none",
            "volumes": mounts, "mem_limit": "64m", "restart": "no", **_common()}


def _mount(m) -> dict[str, Any]:
    if m.kind == "volume":
        out = {"type": "volume", "source": m.source, "target": m.target}
    elif m.kind == "config":
        out = {"type": "bind", "source": f"./{m.source}", "target": m.target}
    else:
        out = {"type": "bind", "source": m.source, "target": m.target,
               "bind": {"create_host_path": True}}
    if m.read_only:
        out["read_only"] = True
    return out


def _version() -> str:
    from tradelab import __version__

    return __version__
