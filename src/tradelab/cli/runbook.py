"""`tradelab runbook ALERT`: the runbook section of an alert, in the terminal.

    tradelab runbook TradeProcessingBurnRateHigh
    tradelab runbook                       # the alerts that have a runbook, and the file
"""

from __future__ import annotations

from typing import Annotated

import typer

from tradelab.cli.common import settings_from


def runbook_cli(
    ctx: typer.Context,
    alert: Annotated[str | None, typer.Argument(
        help="Alert name, as `tradelab alerts` shows it (any case).", show_default=False)] = None,
) -> None:
    """Print the runbook section of an alert (offline: the runbooks come with tradelab)."""
    from tradelab import runbooks

    if alert:
        typer.echo(runbooks.section(alert), nl=False)
        return
    typer.echo(f"runbooks: {runbooks.runbooks_file()}")
    typer.echo(f"alert links point at: {runbooks.base_url(settings_from(ctx))}")
    for name in runbooks.sections():
        typer.echo(f"  {name}")


def register(app: typer.Typer) -> None:
    app.command("runbook")(runbook_cli)
