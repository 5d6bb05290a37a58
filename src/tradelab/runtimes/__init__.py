"""Where the lab runs: Docker containers or local processes, behind one interface.

    runtime = select_runtime(settings, lab, "auto")
    runtime.up(); runtime.status(); runtime.down()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tradelab.errors import TradelabError

if TYPE_CHECKING:
    from tradelab.lab import Lab
    from tradelab.runtimes.base import Runtime
    from tradelab.settings import Settings


def docker_available() -> bool:
    """True when a Docker engine answers (quickly: no long hang without one)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        client.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine here"
        return False


def select_runtime(settings: Settings, lab: Lab, kind: str | None = None) -> Runtime:
    """The runtime for `kind` (auto | docker | local); auto prefers Docker when it answers."""
    kind = kind or settings.runtime
    if kind == "auto":
        kind = "docker" if docker_available() else "local"
    if kind == "docker":
        from tradelab.runtimes.docker import DockerRuntime

        return DockerRuntime(settings, lab)
    if kind == "local":
        from tradelab.runtimes.local import LocalRuntime

        return LocalRuntime(settings, lab)
    raise TradelabError(f"unknown runtime {kind!r}: use auto, docker or local")


def running_runtime(settings: Settings, lab: Lab) -> Runtime:
    """The runtime of the lab that is up now, or a TradelabError saying to run `tradelab up`."""
    candidates = ["local"]
    if settings.runtime != "local" and docker_available():
        candidates.insert(0, "docker")
    for kind in candidates:
        runtime = select_runtime(settings, lab, kind)
        if runtime.is_up():
            return runtime
    raise TradelabError("no lab is running: start one with `tradelab up`")
