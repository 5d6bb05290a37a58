"""The lab orchestrator: what `up`, `down`, `status`, `doctor`, faults and levers do, once.

    driver = running_driver(settings, lab)     # the driver of the lab that runs now
    act(driver, "stop", "postgres")            # one primitive on one service
    restore(driver, "postgres", "start")       # undo, unless the service is already back
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tradelab.faults import Action

if TYPE_CHECKING:
    from tradelab.lab import Lab
    from tradelab.runtimes.base import Runtime
    from tradelab.settings import Settings


def running_driver(settings: Settings, lab: Lab) -> Runtime:
    """The driver of the lab that is up now, or a TradelabError saying to run `tradelab up`."""
    from tradelab.runtimes import running_runtime

    return running_runtime(settings, lab)


def act(driver: Runtime, action: Action, service: str) -> None:
    """Carry out one primitive on `service` (a fault going on, an operator lever)."""
    match action:
        case "stop":
            driver.stop(service)
        case "start":
            driver.start(service)
        case "kill":
            driver.kill(service)
        case _:
            from tradelab.errors import TradelabError

            raise TradelabError(f"the {driver.name} runtime cannot {action} {service}")


def restore(driver: Runtime, service: str, action: Action) -> None:
    """Undo a runtime fault, unless the service is already back (a supervisor restarts a
    killed process by itself, and starting a running one is an error there)."""
    states = {st.name: st.state for st in driver.status()}
    if states.get(service) != "running":
        act(driver, action, service)
