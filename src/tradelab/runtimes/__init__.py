"""The runtime drivers: Docker containers or local processes, behind one Protocol.

    from tradelab.orchestrator import select_driver
    driver = select_driver(settings, lab, "auto")   # DockerRuntime or LocalRuntime
    docker_available()                              # does a Docker engine answer?

Drivers carry out primitives (tradelab.runtimes.base.Driver); the orchestrator
decides what to do with them. Drivers never import render, compose or the CLI.
"""

from __future__ import annotations


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
