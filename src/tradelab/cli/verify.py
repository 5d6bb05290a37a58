"""`tradelab verify`: reconcile a load run's ledger with the database, check the invariants.

    tradelab verify                      # the latest load run
    tradelab verify --run 20250101T120000Z-ab12 --json
    tradelab verify --healthy-for 2m

Exit 0 when nothing is violated; 1 with one line on stderr naming the orders, after
the table (or the JSON). The check itself is tradelab.verify.verify.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tradelab.cli.common import lab_from, print_json, print_table, settings_from
from tradelab.cli.ops import DatabaseUrl, Json
from tradelab.errors import TradelabError

SHOWN = 20


def verify_cli(
    ctx: typer.Context,
    run: Annotated[str | None, typer.Option(
        "--run", help="The load run to verify (its id, as `tradelab load --json` prints). "
        "Default: the latest.", show_default=False)] = None,
    healthy_for: Annotated[str, typer.Option(
        "--healthy-for", help="A NEW trade is left behind once the engine has worked past "
        "it this long.")] = "60s",
    database_url: DatabaseUrl = None,
    as_json: Json = False,
) -> None:
    """No acknowledged order lost, altered or duplicated; trades keep the invariants."""
    from tradelab.durations import parse_duration
    from tradelab.verify import verify

    healthy_for_s = parse_duration(healthy_for, what="--healthy-for")
    report = verify(settings_from(ctx), lab_from(ctx), run_id=run,
                    healthy_for_s=healthy_for_s, database_url=database_url)
    if as_json:
        print_json(report.as_dict())
    else:
        _print(report)
    if not report.ok:
        raise TradelabError(report.summary_line())


def _print(report) -> None:
    checked = report.checked
    if report.run_id:
        typer.echo(f"run {report.run_id}: {checked['attempted']} orders attempted, "
                   f"{checked['acknowledged']} acknowledged ({checked['ledger']})")
    else:
        typer.echo("no load run in this lab: only the trading invariants were checked")
    typer.echo(f"{checked['trades']} trades created since {checked['since']} checked "
               f"at {checked['at']}")
    typer.echo("")
    rows = [{"check": "orders", "label": k, "count": v} for k, v in report.counts.items()]
    rows += [{"check": "invariant", "label": k, "count": v}
             for k, v in report.invariants.items()]
    print_table(rows, headers=["check", "label", "count"])
    if report.ok:
        typer.echo("")
        typer.echo(report.summary_line())
        return
    typer.echo("")
    shown = report.violations[:SHOWN]
    print_table([{"kind": v.kind, "client_order_id": v.client_order_id or "",
                  "trade_id": "" if v.trade_id is None else v.trade_id, "detail": v.detail}
                 for v in shown], headers=["kind", "client_order_id", "trade_id", "detail"])
    if len(report.violations) > SHOWN:
        typer.echo(f"… and {len(report.violations) - SHOWN} more (see --json)")


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_cli)
