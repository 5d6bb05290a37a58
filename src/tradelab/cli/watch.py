"""`tradelab watch`: the golden signals and the SLO burn, live from the lab's Prometheus.

    tradelab watch                 # refreshed every 5 s; Ctrl-C stops it
    tradelab watch --once          # one frame, for scripts and tests
    tradelab watch --once --json   # the frame tradelab.watch.read_signals returns

The local runtime has no Grafana: this is where a person sees the error ratio climb
after `tradelab chaos on`, and the burn rate that pages.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from tradelab.cli.common import lab_from, print_json, restore_overdue_faults, settings_from


def watch_cli(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    interval: Annotated[float, typer.Option(
        "--interval", "-n", min=1, help="Seconds between refreshes.")] = 5.0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print frames as JSON (one per line without --once).")] = False,
) -> None:
    """Golden signals and SLO burn rates, live from Prometheus (Ctrl-C stops)."""
    import json

    from tradelab.watch import read_signals

    settings, lab = settings_from(ctx), lab_from(ctx)

    def next_frame() -> dict:  # each frame first restores a fault past its end
        restore_overdue_faults(settings, lab)
        return read_signals(settings)

    if once:
        frame = next_frame()
        if as_json:
            print_json(frame)
        else:
            from rich.console import Console

            Console().print(render_frame(frame))
        return
    try:
        if as_json:
            while True:
                typer.echo(json.dumps(next_frame(), default=str))
                time.sleep(interval)
        from rich.live import Live

        with Live(render_frame(next_frame()), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render_frame(next_frame()), refresh=True)
    except KeyboardInterrupt:
        return  # Ctrl-C is how a watch ends: exit 0


def render_frame(frame: dict):
    """The frame as rich tables: signals, burn rates per SLO and window, firing alerts."""
    from rich.console import Group
    from rich.table import Table

    stamp = time.strftime("%H:%M:%S", time.localtime(frame["time"]))
    signals = Table(title=f"golden signals ({frame['prometheus']}, {stamp}, last minute)",
                    title_justify="left")
    signals.add_column("signal")
    signals.add_column("now", justify="right")
    for row in frame["signals"].values():
        signals.add_row(row["label"], _value(row["value"], row["unit"]))

    windows = sorted({w for per in frame["burn"].values() for w in per},
                     key=lambda w: _seconds(w))
    burn = Table(title="SLO burn rate (x error budget; the alert fires at the number in "
                       "brackets)", title_justify="left")
    burn.add_column("slo")
    for window in windows:
        burn.add_column(window, justify="right")
    for slo, per in frame["burn"].items():
        cells = []
        for window in windows:
            cell = per.get(window)
            if cell is None:
                cells.append("")
                continue
            text = "-" if cell["burn"] is None else f"{cell['burn']:g}"
            hot = cell["burn"] is not None and cell["burn"] > cell["fires_at"]
            cells.append(f"{'[bold red]' if hot else ''}{text} ({cell['fires_at']:g})"
                         f"{'[/]' if hot else ''}")
        burn.add_row(slo, *cells)

    alerts = Table(title="firing alerts", title_justify="left")
    for column in ("severity", "alert", "slo"):
        alerts.add_column(column)
    for alert in frame["alerts"]:
        alerts.add_row(alert["severity"], alert["alertname"], alert["slo"] or "")
    if not frame["alerts"]:
        alerts.add_row("-", "none", "")
    return Group(signals, burn, alerts)


def _seconds(window: str) -> float:
    from tradelab.durations import parse_duration

    return parse_duration(window)


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "- (no traffic)"
    if unit == "%":
        return f"{value:.2%}"
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "/s":
        return f"{value:.1f}/s"
    if unit == "s":
        return f"{value:.1f} s"
    return f"{value:g}"


def register(app: typer.Typer) -> None:
    app.command("watch")(watch_cli)
