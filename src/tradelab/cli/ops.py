"""`tradelab find-trade`, `investigate-failures` and `positions`: the operator's read-only view.

    tradelab find-trade --id 10
    tradelab find-trade --client-order-id web-42 --json
    tradelab investigate-failures --since 30m --symbol AAPL

The database is --database-url, else TRADELAB_DATABASE_URL's database, else the lab's
own database; without --database-url always as the read-only operator role. The
queries live in tradelab.ops.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from tradelab.cli.common import lab_from, print_json, print_table, settings_from
from tradelab.errors import TradelabError

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="Database URL. Default: TRADELAB_DATABASE_URL, "
                 "else the lab's database as the read-only operator role.",
                 show_default=False),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def operator_url(ctx: typer.Context, explicit: str | None) -> str:
    """--database-url, else the operator role on TRADELAB_DATABASE_URL's database, else
    the lab's database as the operator role (tradelab.db.connect.resolve_url)."""
    from tradelab.db.connect import resolve_url

    return resolve_url(explicit, settings_from(ctx), lab_from(ctx), "operator")


def find_trade_cli(
    ctx: typer.Context,
    trade_id: Annotated[int | None, typer.Option("--id", help="The trade's id.",
                                                 show_default=False)] = None,
    client_order_id: Annotated[str | None, typer.Option(
        "--client-order-id", help="The client's idempotency key.", show_default=False)] = None,
    database_url: DatabaseUrl = None,
    as_json: Json = False,
) -> None:
    """One trade and its event timeline."""
    if (trade_id is None) == (client_order_id is None):
        raise TradelabError("give exactly one of --id N or --client-order-id KEY")
    from tradelab.ops import find_trade

    trade = find_trade(operator_url(ctx, database_url), trade_id=trade_id,
                       client_order_id=client_order_id)
    if as_json:
        print_json(trade)
        return
    from tabulate import tabulate

    fields = [(k, "" if v is None else v) for k, v in trade.items() if k != "events"]
    typer.echo(tabulate(fields, tablefmt="plain"))
    typer.echo("")
    if not trade["events"]:
        typer.echo("no events recorded for this trade")
        return
    print_table([{**e, "detail": _detail(e["detail"])} for e in trade["events"]],
                headers=["time", "event", "status", "detail"])


def investigate_failures_cli(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most N failures.")] = 20,
    since: Annotated[str, typer.Option("--since", help="Window, e.g. 30m, 1h, 2d.")] = "1h",
    symbol: Annotated[str | None, typer.Option("--symbol", help="Only this symbol.",
                                               show_default=False)] = None,
    database_url: DatabaseUrl = None,
    as_json: Json = False,
) -> None:
    """FAILED trades, newest first, with a summary by reason and by symbol."""
    from tradelab.durations import parse_duration
    from tradelab.ops import investigate_failures

    since_s = parse_duration(since, what="--since")
    report = investigate_failures(operator_url(ctx, database_url), limit=limit,
                                  since_s=since_s, symbol=symbol.upper() if symbol else None)
    if as_json:
        print_json(report.as_dict())
        return
    summary = report.summary
    scope = f" for {summary.symbol}" if summary.symbol else ""
    if not summary.total:
        typer.echo(f"no failed trades{scope} in the last {summary.window.label} "
                   f"({summary.trades_in_window} trades in the window)")
        return
    print_table(report.as_dict()["failures"],
                headers=["id", "client_order_id", "symbol", "side", "quantity", "venue",
                         "failure_reason", "created_at"])
    typer.echo("")
    typer.echo(
        f"{summary.total} failed of {summary.trades_in_window} trades{scope} in the last "
        f"{summary.window.label} ({summary.failure_ratio or 0:.2%}); "
        f"showing the newest {summary.shown}"
    )
    typer.echo(f"first failure {summary.first_failure_at}, "
               f"last failure {summary.last_failure_at}")
    typer.echo("")
    print_table([{"reason": k, "failed": v} for k, v in summary.by_reason.items()])
    typer.echo("")
    print_table([{"symbol": k, "failed": v} for k, v in summary.by_symbol.items()])
    typer.echo("")
    print_table([{"venue": k, "failed": v} for k, v in summary.by_venue.items()])


def positions_cli(
    ctx: typer.Context,
    symbol: Annotated[str | None, typer.Option("--symbol", help="Only this symbol.",
                                               show_default=False)] = None,
    database_url: DatabaseUrl = None,
    as_json: Json = False,
) -> None:
    """Net position and notional per symbol and venue, from the fills."""
    from tradelab.positions import positions

    report = positions(operator_url(ctx, database_url), symbol.upper() if symbol else None)
    if as_json:
        print_json(report)
        return
    if not report["positions"]:
        typer.echo("no fills yet: every position is flat")
        return
    print_table(report["positions"], headers=["symbol", "venue", "net_quantity",
                                              "net_notional", "average_price", "fills"])
    typer.echo("")
    print_table([{"symbol": s, **t} for s, t in report["by_symbol"].items()])


def _detail(detail: Any) -> str:
    if not detail:
        return ""
    if isinstance(detail, dict):
        return " ".join(f"{k}={v}" for k, v in detail.items() if v is not None)
    return json.dumps(detail)


def register(app: typer.Typer) -> None:
    app.command("find-trade")(find_trade_cli)
    app.command("investigate-failures")(investigate_failures_cli)
    app.command("positions")(positions_cli)
