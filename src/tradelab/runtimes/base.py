"""The interface both runtimes (docker, local) implement, and the status they report.

Commands (`up`, `down`, `status`, `logs`, runtime chaos faults, operator commands)
talk to a Runtime only through these methods, so they work the same on both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol


@dataclass
class ServiceStatus:
    name: str
    state: str  # running | exited | created | stopped | missing | unavailable
    health: str  # healthy | unhealthy | starting | none | n/a
    url: str | None = None
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class Runtime(Protocol):
    name: str  # "docker" | "local"

    def up(self, only: list[str] | None = None, without: list[str] | None = None,
           build: bool = True, timeout: float = 300) -> list[ServiceStatus]:
        """Create and start what is missing or changed; wait until healthy."""

    def down(self, volumes: bool = False) -> None:
        """Stop and remove everything; keep data unless `volumes`."""

    def status(self) -> list[ServiceStatus]:
        """Every service of the stack, running or not."""

    def is_up(self) -> bool:
        """True when a lab of this runtime exists (any service created)."""

    def logs(self, service: str, follow: bool = False, tail: int | None = 100) -> None:
        """Print a service's logs to stdout."""

    def stop(self, service: str) -> None: ...

    def start(self, service: str) -> None: ...

    def kill(self, service: str) -> None:
        """SIGKILL the service's main process (a crash, as chaos sees it)."""
