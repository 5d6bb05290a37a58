"""The Stack as a compose-spec document: what `tradelab up` creates, for `docker compose`.

    data = compose_document(build_stack(settings, lab, "docker"))
    yaml.safe_dump(data)        # the rendered docker-compose.yml (see templates/)

Same project name, service names, network, volume names (compose prefixes them with
the project, as the Docker runtime does), ports, labels and log options. Config
mounts are relative to the compose file's folder; secrets are files of the lab.
"""

from __future__ import annotations

from typing import Any

from tradelab.errors import TradelabError
from tradelab.stack import LABEL_VERSION, LOG_DRIVER, LOG_OPTIONS, Service, Stack


def compose_document(stack: Stack) -> dict[str, Any]:
    if stack.runtime != "docker":
        raise TradelabError("a compose file describes the docker runtime: render with "
                            "--runtime docker")
    secrets: dict[str, Any] = {}
    for svc in stack.services.values():
        for sec in svc.secrets:
            secrets[sec.name] = {"file": str(sec.source)}
    doc: dict[str, Any] = {
        "name": stack.project,
        "services": {name: _service(svc) for name, svc in stack.services.items()},
    }
    if stack.volumes:
        doc["volumes"] = {key: {} for key in stack.volumes}
    if secrets:
        doc["secrets"] = dict(sorted(secrets.items()))
    return doc


def _duration(seconds: float) -> str:
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{int(seconds * 1000)}ms"


def _service(svc: Service) -> dict[str, Any]:
    out: dict[str, Any] = {"image": svc.image}
    if svc.app:
        out["pull_policy"] = "never"  # built by `tradelab up` (tradelab-app), not pulled
    if svc.entrypoint is not None:
        out["entrypoint"] = list(svc.entrypoint)
    if svc.command:
        out["command"] = list(svc.command)
    if svc.user:
        out["user"] = svc.user
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
    if svc.secrets:
        out["secrets"] = [s.name for s in svc.secrets]  # at /run/secrets/<name>
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
    out["labels"] = {LABEL_VERSION: _version()}
    out["logging"] = {"driver": LOG_DRIVER, "options": dict(LOG_OPTIONS)}
    return out


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
