"""`tradelab alerts`: what is firing now, with the runbook section for each alert.

    tradelab alerts            # a table: severity, alert, since, when it clears, runbook
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
    from tradelab.alerts import add_clearing_times, firing_alerts

    settings = settings_from(ctx)
    alerts = add_clearing_times(settings, firing_alerts(settings, include_muted=include_muted))
    if as_json:
        print_json(alerts)
        return
    if not alerts:
        typer.echo("no alerts firing")
        return
    rows = [{**a, "alert": _name(a), "since": a["since"][:19].replace("T", " "),
             "clears": _clears(a.get("clears"))} for a in alerts]
    print_table(rows, ["severity", "alert", "since", "clears", "runbook_url"])
    for alert in alerts:
        if alert.get("clears"):
            typer.echo(f"{alert['alertname']}: fires on {alert['clears']['rule']}; it waits on "
                       f"the {alert['clears']['waits_on']} window to forget the bad events")
    if any(a.get("clears") for a in alerts):
        typer.echo("clears: at the latest, counted as if the fault ended now (sooner when it "
                   "ended earlier), plus about a minute for Prometheus and Alertmanager")


def _clears(clears: dict | None) -> str:
    if not clears:
        return "when its cause is gone"
    from tradelab.durations import format_duration

    return (f"<= {format_duration(clears['after_fault_s'])} from now once the fault is gone "
            f"({clears['waits_on']} window)")


def _name(alert: dict) -> str:
    extra = {k: v for k, v in alert["labels"].items()
             if k in ("slo", "job") and v}
    return alert["alertname"] + "".join(f" {k}={v}" for k, v in sorted(extra.items()))


def register(app: typer.Typer) -> None:
    app.command("alerts")(alerts_cli)
