"""`tradelab chaos on|off|status|list`: break the lab on purpose, and mend it.

    tradelab chaos on                                  # exchange-errors at rate 0.6
    tradelab chaos on exchange-latency --latency-ms 1500 --for 5m
    tradelab chaos on db-outage --for 2m               # through the running lab's runtime
    tradelab chaos status --json
    tradelab chaos off                                 # every fault

The commands only parse flags; tradelab.chaos.chaos_on / chaos_off do the work.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from tradelab.cli.common import (
    command_group,
    lab_from,
    print_json,
    print_table,
    restore_overdue_faults,
    settings_from,
)
from tradelab.faults import FAULTS, check_fault

chaos_app = command_group(
    help="Turn faults on and off: exchange errors, latency, engine stall, outages.",
    no_args_is_help=True,
)


@chaos_app.command("on")
def on_cli(
    ctx: typer.Context,
    fault: Annotated[str | None, typer.Argument(
        help="Fault to turn on (see `tradelab chaos list`). Default: exchange-errors.",
        show_default=False)] = None,
    rate: Annotated[float | None, typer.Option(
        "--rate", help="Share of requests/orders to fail, 0..1 (error faults).",
        show_default=False)] = None,
    latency_ms: Annotated[int | None, typer.Option(
        "--latency-ms", help="Added latency in ms (latency faults).", show_default=False)] = None,
    duration: Annotated[str | None, typer.Option(
        "--for", help="End the fault by itself after e.g. 90s, 5m, 1h.",
        show_default=False)] = None,
    venue: Annotated[str | None, typer.Option(
        "--venue", help="Only this venue (exchange and market-data faults).",
        show_default=False)] = None,
    persists: Annotated[bool, typer.Option(
        "--persist", help="Its effect outlives `chaos off` until a lever ends it "
                          "(retry-storm); a wedged-process fault: --for ends its trigger "
                          "only, the processes it hit stay wedged until `tradelab ops "
                          "restart`.")] = False,
) -> None:
    """Turn a fault on; running services pick it up within about 2 s."""
    from tradelab.chaos import chaos_on
    from tradelab.durations import format_duration, parse_duration

    seconds = parse_duration(duration, what="duration for --for") if duration else None
    settings = settings_from(ctx)
    name = fault or settings.chaos.default_fault
    entry = chaos_on(settings, lab_from(ctx), name, rate=rate, latency_ms=latency_ms,
                     duration_s=seconds, venue=venue, persists=persists,
                     notice=lambda line: typer.echo(f"warning: {line}", err=True))
    until = " until `tradelab chaos off`"
    if seconds:
        until = f" for {format_duration(seconds)}" + (
            ", then the processes it hit stay wedged until restarted"
            if persists and check_fault(name).cleared_by_restart else "")
    typer.echo(f"chaos on: {name}{_params({**entry, 'fault': name})}{until}")


@chaos_app.command("off")
def off_cli(
    ctx: typer.Context,
    fault: Annotated[str | None, typer.Argument(
        help="Fault to turn off. Default: every fault.", show_default=False)] = None,
    after: Annotated[float | None, typer.Option("--after", hidden=True)] = None,
    if_since: Annotated[str | None, typer.Option("--if-since", hidden=True)] = None,
) -> None:
    """Turn a fault off (no FAULT: all of them); runtime faults are undone."""
    from tradelab.chaos import chaos_off

    if after is not None:  # the detached process `chaos on --for` leaves for runtime faults
        from tradelab.durations import parse_duration

        time.sleep(parse_duration(after, what="--after"))
    names = chaos_off(settings_from(ctx), lab_from(ctx), fault, if_since=if_since,
                      echo=typer.echo)
    if names:
        typer.echo(f"chaos off: {', '.join(names)}")
    elif fault and if_since is None:
        typer.echo(f"chaos: {fault} was not on")
    elif if_since is None:
        typer.echo("chaos: nothing was on")


@chaos_app.command("status")
def status_cli(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The faults on now, with their parameters, since when and time left."""
    from tradelab.chaos_state import parse_entry, reported_faults, store_for
    from tradelab.durations import format_duration

    settings, lab = settings_from(ctx), lab_from(ctx)
    restore_overdue_faults(settings, lab)

    store = store_for(settings, lab)
    overdue = [f for n, e in store.overdue().items() if (f := parse_entry(n, e))]
    faults = list(reported_faults({**store.active(), **{f.name: f for f in overdue}}).values())
    if as_json:
        print_json({"faults": faults})
        return
    if not faults:
        typer.echo("chaos: no fault is on")
        return
    print_table([{
        "fault": f["fault"], "kind": f["kind"], "params": _params(f).strip(" ()") or "-",
        "since": f.get("since", "-"), "set by": _set_by(f),
        "remaining": "until the drill ends" if f["kind"] == "hidden"
        else "until off" if f["remaining_s"] is None
        else "trigger over: wedged until `tradelab ops restart`" if f.get("persists")
        and f["remaining_s"] == 0 and check_fault(f["fault"]).cleared_by_restart
        else "past its end: `tradelab chaos off` restores it" if f["remaining_s"] == 0
        else format_duration(max(1, f["remaining_s"])),
    } for f in faults])


@chaos_app.command("list")
def list_cli(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every fault: what it breaks, the signal it leaves, the alert and the runtimes."""
    from tradelab.chaos_state import flag_file, store_for
    from tradelab.faults import DEFAULT_FAULT

    faults = [f.as_dict() for f in FAULTS.values()]
    flag = flag_file(store_for(settings_from(ctx), lab_from(ctx)).path)
    if as_json:
        print_json({"faults": faults, "flag_file": {"path": str(flag), "fault": DEFAULT_FAULT}})
        return
    print_table([{"fault": f["fault"], "kind": f["kind"], "options": f["options"],
                  "breaks": f["breaks"], "alert": f["alert"],
                  "runtimes": ",".join(f["runtimes"]),
                  "mitigated by": ", ".join(f["mitigated_by"]) or "-"} for f in faults])
    typer.echo(f"An empty file {flag} also turns {DEFAULT_FAULT} on (the original project's "
               "switch); `tradelab chaos off` removes it.")


def _set_by(entry: dict) -> str:
    from tradelab.chaos_state import FLAG_FILE

    return {"flag": FLAG_FILE, "file": "chaos on"}.get(entry.get("source", ""), "-")


def _params(entry: dict) -> str:
    parts = []
    if entry.get("rate") is not None:
        parts.append(f"rate {entry['rate']:g}")
    if entry.get("latency_ms") is not None:
        parts.append(f"latency {entry['latency_ms']} ms")
    if entry.get("venue") is not None:
        parts.append(f"venue {entry['venue']}")
    if entry.get("persists"):
        wedges = entry.get("fault") in FAULTS and FAULTS[entry["fault"]].cleared_by_restart
        parts.append("wedged after its trigger" if wedges else "persists after off")
    return f" ({', '.join(parts)})" if parts else ""


def register(app: typer.Typer) -> None:
    app.add_typer(chaos_app, name="chaos")
