"""`tradelab ops ...`: the levers an operator pulls, each with --json.

    tradelab ops halt [--symbol S]          tradelab ops resume [--symbol S]
    tradelab ops route --venue V [--symbol S] | --reset
    tradelab ops restart SERVICE            tradelab ops requeue --stuck-for 2m
    tradelab ops db sessions [--kill PID | --kill-idle-in-transaction]
    tradelab ops status

The work is done by tradelab.levers and tradelab.db_sessions; every lever is written
to the audit log by the root command (tradelab.cli.main).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tradelab.cli.common import command_group, lab_from, print_json, print_table, settings_from
from tradelab.errors import TradelabError

ops_app = command_group(help="Levers: halt, resume, route, restart, requeue, db sessions.",
                      no_args_is_help=True)
db_app = command_group(help="Database sessions and locks.", no_args_is_help=True)
ops_app.add_typer(db_app, name="db")

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Symbol = Annotated[str | None, typer.Option("--symbol", help="Only this symbol.",
                                            show_default=False)]
DatabaseUrl = Annotated[str | None, typer.Option(
    "--database-url", help="Database URL. Default: the lab's database (see --help of the "
    "command for the role).", show_default=False)]


def _show(data: dict[str, Any], as_json: bool, line: str) -> None:
    if as_json:
        print_json(data)
    else:
        typer.echo(line)


@ops_app.command("halt")
def halt_cli(ctx: typer.Context, symbol: Symbol = None,
             reason: Annotated[str | None, typer.Option("--reason", help="Why (kept in the "
                                                        "state file).")] = None,
             as_json: Json = False) -> None:
    """Kill switch: refuse new orders, hold acknowledged ones.

    New orders get 503 trading_halted; acknowledged ones wait as NEW until resume.
    """
    from tradelab.levers import halt

    out = halt(settings_from(ctx), lab_from(ctx), symbol, reason)
    _show(out, as_json, f"halted {out['halted']}: new orders are refused (503 trading_halted),"
                        " acknowledged orders wait until `tradelab ops resume`")


@ops_app.command("resume")
def resume_cli(ctx: typer.Context, symbol: Symbol = None, as_json: Json = False) -> None:
    """Lift a halt (all halts without --symbol); waiting orders are executed."""
    from tradelab.levers import resume

    out = resume(settings_from(ctx), lab_from(ctx), symbol)
    left = ", ".join(out["halts"]) or "none"
    _show(out, as_json, f"resumed {', '.join(out['resumed']) or 'nothing (no halt)'}; "
                        f"halts left: {left}")


@ops_app.command("route")
def route_cli(ctx: typer.Context,
              venue: Annotated[str | None, typer.Option("--venue", help="Venue to send to.",
                                                        show_default=False)] = None,
              symbol: Symbol = None,
              reset: Annotated[bool, typer.Option("--reset", help="Back to the trading.routes "
                                                  "setting.")] = False,
              as_json: Json = False) -> None:
    """Fail over: route a symbol (all without --symbol) to another venue."""
    if (venue is None) == (not reset):
        raise TradelabError("give --venue V (optionally with --symbol S), or --reset")
    from tradelab.levers import route

    out = route(settings_from(ctx), lab_from(ctx), venue, symbol, reset=reset)
    if as_json:
        print_json(out)
        return
    print_table([{"symbol": s, "venue": v} for s, v in out["routes"].items()])


@ops_app.command("restart")
def restart_cli(ctx: typer.Context,
                service: Annotated[str, typer.Argument(help="e.g. engine, api, postgres.")],
                timeout: Annotated[str, typer.Option("--timeout", help="How long to wait for "
                                                     "it to be healthy again.")] = "60s",
                as_json: Json = False) -> None:
    """Restart one service of the running lab (Docker or local); wait until healthy."""
    from tradelab.durations import parse_duration
    from tradelab.levers import restart

    out = restart(settings_from(ctx), lab_from(ctx), service,
                  timeout_s=parse_duration(timeout, what="--timeout"))
    _show(out, as_json, f"restarted {service} ({out['runtime']}): {out['before']} -> "
                        f"{out['after']}, {out['health']} after {out['seconds']:g}s")


@ops_app.command("requeue")
def requeue_cli(ctx: typer.Context,
                stuck_for: Annotated[str, typer.Option("--stuck-for", help="Orders NEW for "
                                                       "longer than this, e.g. 2m.")],
                database_url: DatabaseUrl = None, as_json: Json = False) -> None:
    """Put orders stuck NEW first in line again, once.

    Writes, so it uses the app role (the operator role is read-only).
    """
    from tradelab.db.connect import resolve_url
    from tradelab.durations import parse_duration
    from tradelab.levers import requeue

    seconds = parse_duration(stuck_for, what="--stuck-for")
    url = resolve_url(database_url, settings_from(ctx), lab_from(ctx), "app")
    out = requeue(url, seconds)
    _show(out, as_json, f"requeued {out['requeued']} orders NEW for more than {stuck_for}; "
                        f"{out['held_by_other_sessions']} more are held by other sessions "
                        "(see `tradelab ops db sessions`)")


@ops_app.command("status")
def status_cli(ctx: typer.Context, as_json: Json = False) -> None:
    """Halts and the route each symbol takes now."""
    from tradelab.levers import lever_status

    out = lever_status(settings_from(ctx), lab_from(ctx))
    if as_json:
        print_json(out)
        return
    typer.echo(f"halts: {', '.join(out['halts']) or 'none'}")
    print_table([{"symbol": s, "venue": v} for s, v in out["routes"].items()])


@db_app.command("sessions")
def sessions_cli(ctx: typer.Context,
                 kill: Annotated[int | None, typer.Option("--kill", help="Terminate the "
                                                          "session with this pid.",
                                                          show_default=False)] = None,
                 kill_idle_in_transaction: Annotated[bool, typer.Option(
                     "--kill-idle-in-transaction",
                     help="Terminate every session idle inside a transaction.")] = False,
                 database_url: DatabaseUrl = None, as_json: Json = False) -> None:
    """Who holds connections and locks; --kill frees them.

    Listing reads as the operator role; killing needs the lab's admin role.
    """
    from tradelab import db_sessions
    from tradelab.db.connect import resolve_url

    if kill is not None and kill_idle_in_transaction:
        raise TradelabError("give one of --kill PID or --kill-idle-in-transaction")
    settings, lab = settings_from(ctx), lab_from(ctx)
    if kill is not None or kill_idle_in_transaction:
        url = resolve_url(database_url, settings, lab, "admin")
        out = (db_sessions.kill_session(url, kill) if kill is not None
               else db_sessions.kill_idle_in_transaction(url))
        _show(out, as_json, f"terminated {len(out['killed'])} session(s): "
                            f"{', '.join(map(str, out['killed'])) or 'none'}")
        return
    out = db_sessions.list_sessions(resolve_url(database_url, settings, lab, "operator"))
    if as_json:
        print_json(out)
        return
    if not out["sessions"]:
        typer.echo("no client sessions")
        return
    print_table([{**s, "blocked_by": ",".join(map(str, s["blocked_by"])),
                  "query": " ".join((s["query"] or "").split())[:60]} for s in out["sessions"]],
                headers=["pid", "usename", "application_name", "state", "transaction_s",
                         "in_state_s", "locks_held", "blocked_by", "query"])
    typer.echo("")
    typer.echo(", ".join(f"{k}: {v}" for k, v in out["by_state"].items())
               + f"; blocked: {out['blocked']}")


def register(app: typer.Typer) -> None:
    app.add_typer(ops_app, name="ops")
