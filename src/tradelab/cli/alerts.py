"""`tradelab alerts`: what is firing now, with the runbook section for each alert.

    tradelab alerts            # a table: severity, alert, since, summary, runbook
    tradelab alerts --json     # the list tradelab.alerts.firing_alerts returns
    tradelab alerts --all      # also silenced and inhibited alerts
"""

from __future__ import annotations

from typing import Annotated

import typer

from tradelab.cli.common import print_json, print_table, settings_from


def alerts_cli(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    include_muted: Annotated[bool, typer.Option(
        "--all", help="Also silenced and inhibited alerts.")] = False,
) -> None:
    """Alerts firing now (from Alertmanager), with their runbook links."""
    from tradelab.alerts import firing_alerts

    alerts = firing_alerts(settings_from(ctx), include_muted=include_muted)
    if as_json:
        print_json(alerts)
        return
    if not alerts:
        typer.echo("no alerts firing")
        return
    rows = [{**a, "alert": _name(a), "since": a["since"][:19].replace("T", " ")} for a in alerts]
    print_table(rows, ["severity", "alert", "since", "summary", "runbook_url"])


def _name(alert: dict) -> str:
    extra = {k: v for k, v in alert["labels"].items()
             if k in ("slo", "job") and v}
    return alert["alertname"] + "".join(f" {k}={v}" for k, v in sorted(extra.items()))


def register(app: typer.Typer) -> None:
    app.command("alerts")(alerts_cli)
