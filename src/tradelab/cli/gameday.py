"""`tradelab gameday list | run SCENARIO | report DIR`: scripted, measured incidents.

    tradelab gameday list
    tradelab gameday run db-outage --warmup 30s --fault-for 1m
    tradelab gameday run ./my-experiment.json --json
    tradelab gameday report ~/.local/share/tradelab/state/gamedays/20260101T120000Z-db-outage

The commands only parse options; tradelab.gameday.runner and .report do the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tradelab.cli.common import command_group, lab_from, print_json, print_table, settings_from

gameday_app = command_group(
    help="Game days: inject a fault under load, measure detection and recovery, reconcile.",
    no_args_is_help=True,
)


def _duration(text: str | None, what: str) -> float | None:
    from tradelab.durations import parse_duration

    return None if text is None else parse_duration(text, what=what)


@gameday_app.command("list")
def list_cli(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The bundled scenarios: one per catalogued fault, with the alert that must fire."""
    from tradelab.gameday.scenarios import list_scenarios

    rows = list_scenarios()
    if as_json:
        print_json({"scenarios": rows})
    else:
        print_table(rows, ["scenario", "fault", "expected_alert", "title"])


@gameday_app.command("run")
def run_cli(
    ctx: typer.Context,
    scenario: Annotated[str, typer.Argument(
        help="A bundled scenario (`tradelab gameday list`) or an experiment file.")],
    warmup: Annotated[str | None, typer.Option(
        "--warmup", help="Load before the steady-state check (default 30s).",
        show_default=False)] = None,
    fault_for: Annotated[str | None, typer.Option(
        "--fault-for", help="Keep the fault on at least this long (default 60s).",
        show_default=False)] = None,
    detect_timeout: Annotated[str | None, typer.Option(
        "--detect-timeout", help="Give up waiting for the alert after this (default 10m).",
        show_default=False)] = None,
    recover_timeout: Annotated[str | None, typer.Option(
        "--recover-timeout", help="Give up waiting for recovery after this (default 15m).",
        show_default=False)] = None,
    users: Annotated[int | None, typer.Option(
        "--users", min=1, help="Simulated users of the load (default 10).",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run a game day; exit 0 when the hypothesis held and nothing was lost, else 1."""
    from tradelab.gameday.runner import GameDayOptions, run_gameday

    options = GameDayOptions(
        warmup_s=_duration(warmup, "--warmup"),
        fault_for_s=_duration(fault_for, "--fault-for"),
        detect_timeout_s=_duration(detect_timeout, "--detect-timeout"),
        recover_timeout_s=_duration(recover_timeout, "--recover-timeout"),
        users=users)
    settings = settings_from(ctx)
    result = run_gameday(settings, lab_from(ctx), scenario, options,
                         echo=lambda line: typer.echo(line, err=True))
    if as_json:
        print_json(result.as_dict())
    else:
        _print_result(result.as_dict())
    if not result.ok:
        raise typer.Exit(1)


@gameday_app.command("report")
def report_cli(
    directory: Annotated[Path, typer.Argument(
        help="A game day's directory (holding journal.json).")],
) -> None:
    """Draw a game day's report (report.md, report.html, charts) again from its journal."""
    from tradelab.gameday.report import write_report

    for path in write_report(directory):
        typer.echo(f"wrote {path}")


def _print_result(r: dict) -> None:
    def seconds(v):
        return "not measured" if v is None else f"{v:g}s"

    typer.echo(f"game day {r['scenario']}: {'PASSED' if r['ok'] else 'FAILED'}")
    typer.echo(f"  expected alert   {r['expected_alert']}")
    typer.echo(f"  time to detect   {seconds(r['time_to_detect_s'])}")
    typer.echo(f"  time to recover  {seconds(r['time_to_recover_s'])}")
    seen = ", ".join(f"{a['alertname']} ({a['severity']})" for a in r["alerts_seen"] or [])
    typer.echo(f"  alerts seen      {seen or 'none'}")
    typer.echo(f"  reconciliation   {r['reconciliation']['summary']}")
    for failure in r["failures"]:
        typer.echo(f"  failed: {failure}")
    typer.echo(f"  report           {r['report']}")


def register(app: typer.Typer) -> None:
    app.add_typer(gameday_app, name="gameday")
