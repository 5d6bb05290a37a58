"""`tradelab load`: trading load from Locust, with live progress and a summary.

    tradelab load --users 50 --duration 1m               # the lab's Locust master, or locally
    tradelab load --users 50 --detach                    # in the background; returns at once
    tradelab load --profile market-open --duration 10m --workers 2
    tradelab load --host http://127.0.0.1:8000 --json    # locally, against that api
    tradelab load status [--json] | tradelab load stop   # the running (or detached) test

The commands only read options; tradelab.load does the work. Locust is never imported
in this process (see tradelab.load).
"""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from tradelab.cli.common import command_group, lab_from, print_json, print_table, settings_from

load_app = command_group(
    name="load",
    help="Put trading load on the lab with Locust (status, stop: the running test).",
)


@load_app.callback(invoke_without_command=True)
def load_cli(
    ctx: typer.Context,
    users: Annotated[int, typer.Option("--users", "-u", min=1,
                                       help="Peak number of simulated users.")] = 20,
    spawn_rate: Annotated[float | None, typer.Option(
        "--spawn-rate", "-r", min=0.01, show_default=False,
        help="Users started per second (default: a tenth of --users, at least 1).")] = None,
    duration: Annotated[str, typer.Option(
        "--duration", "-t", help="How long the run lasts (30s, 5m, 1h); profiles scale to it.",
    )] = "5m",
    profile: Annotated[str, typer.Option(
        "--profile", help="steady | spike | market-open.")] = "steady",
    user_type: Annotated[str, typer.Option(
        "--user-type",
        help="trader (writes and reads) | reader (read-heavy) | index (GET / flat out).",
    )] = "trader",
    workers: Annotated[int | None, typer.Option(
        "--workers", min=0, show_default=False,
        help="Worker processes (locally) or worker containers (on the lab).")] = None,
    host: Annotated[str | None, typer.Option(
        "--host", show_default=False,
        help="Target api URL; runs Locust locally. Default: the lab's api.")] = None,
    headless: Annotated[bool, typer.Option(
        "--headless", help="Run Locust here even when the lab has a Locust master.")] = False,
    fail_ratio: Annotated[float, typer.Option(
        "--fail-ratio", min=0, max=1,
        help="Exit 1 when more than this share of requests failed.")] = 0.01,
    detach: Annotated[bool, typer.Option(
        "--detach", "-d", help="Start the run in the background and return at once; "
        "follow it with `tradelab load status`, end it early with `tradelab load stop`.",
    )] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run a load test to its end (live progress on stderr, then a summary), or start it
    in the background with --detach."""
    if ctx.invoked_subcommand is not None:
        return
    from tradelab.durations import parse_duration
    from tradelab.load import LoadOptions, run_load, start_load

    options = LoadOptions(users=users, spawn_rate=spawn_rate,
                          duration=parse_duration(duration, what="--duration"),
                          profile=profile, user_type=user_type, workers=workers, host=host,
                          headless=headless, fail_ratio=fail_ratio)
    lab = lab_from(ctx).ensure()
    if detach:
        started = start_load(settings_from(ctx), lab, options,
                             notice=lambda message: typer.echo(message, err=True))
        if as_json:
            print_json(started)
        else:
            _print_started(started, options)
        return
    line = _ProgressLine()
    try:
        result = run_load(settings_from(ctx), lab, options, on_progress=line.show,
                          notice=line.notice)
    finally:
        line.end()
    if as_json:
        print_json(result.as_dict())
    else:
        _print_summary(result)
    if result.interrupted:
        raise typer.Exit(130)
    if result.failure_ratio > fail_ratio:
        typer.echo(f"error: {result.failure_ratio:.2%} of requests failed, more than "
                   f"--fail-ratio {fail_ratio:.2%}", err=True)
        raise typer.Exit(1)


@load_app.command("status")
def status_cli(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The running (or last) load test on the master that answers."""
    from tradelab.load import load_status

    status = load_status(settings_from(ctx), lab_from(ctx))
    if as_json:
        print_json(status)
        return
    from tradelab.durations import format_duration

    shown = dict(status)
    for key in ("elapsed_s", "remaining_s"):
        if shown.get(key) is not None:
            shown[key.removesuffix("_s")] = format_duration(shown.pop(key))
    for key, value in shown.items():
        if value is not None and key not in ("elapsed_s", "remaining_s"):
            typer.echo(f"{key + ':':<13}{value}")


@load_app.command("stop")
def stop_cli(ctx: typer.Context) -> None:
    """Stop the running load test."""
    from tradelab.load import stop_load

    stopped = stop_load(settings_from(ctx), lab_from(ctx))
    run = f" {stopped['run_id']}" if stopped["run_id"] else ""
    typer.echo(f"stopped the load test{run} on {stopped['master']} ({stopped['kind']})")
    if stopped["ledger"]:
        typer.echo(f"ledger: {stopped['ledger']}")


class _ProgressLine:
    """One live line on stderr: rewritten in place on a terminal, every 10 s otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last_print = 0.0
        self.open = False

    def show(self, p) -> None:
        from tradelab.durations import format_duration

        ratio = p.failures / p.requests if p.requests else 0.0
        p95 = "-" if p.p95_ms is None else f"{p.p95_ms:.0f} ms"
        workers = "" if p.workers is None else f" | workers {p.workers}"
        text = (f"{p.state:<8} | users {p.users:>4} | {p.rps:>7.1f} req/s | failures "
                f"{p.failures} ({ratio:.1%}) | p95 {p95} | {format_duration(p.elapsed)}"
                f"/{format_duration(p.duration)}{workers}")
        if self.tty:
            sys.stderr.write("\r\033[K" + text)
            sys.stderr.flush()
            self.open = True
        elif time.monotonic() - self.last_print >= 10:
            self.last_print = time.monotonic()
            typer.echo(text, err=True)

    def notice(self, message: str) -> None:
        self.end()
        typer.echo(message, err=True)

    def end(self) -> None:
        if self.open:
            sys.stderr.write("\n")
            self.open = False


def _print_started(started: dict, options) -> None:
    from tradelab.durations import format_duration

    where = ("the lab's Locust master" if started["kind"] == "lab"
             else "local Locust processes")
    target = f" against {started['target']}" if started.get("target") else ""
    typer.echo(f"load test {started['run_id']} runs in the background on {where} "
               f"({started['master']}): {options.users} users for "
               f"{format_duration(options.duration)}{target}")
    typer.echo(f"ledger: {started['ledger']}")
    typer.echo("follow it: tradelab load status   end it early: tradelab load stop")


def _print_summary(result) -> None:
    rows = [{"endpoint": key, **{k: v for k, v in row.items() if k not in ("method", "name")}}
            for key, row in sorted(result.by_endpoint.items())]
    total = result.as_dict()
    rows.append({"endpoint": "total", **{k: total[k] for k in
                                         ("requests", "failures", "rps", "p50_ms", "p95_ms",
                                          "p99_ms")}})
    typer.echo(f"load test {result.run_id} against {result.target} ({result.mode})")
    print_table(rows, ["endpoint", "requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms"])
    typer.echo(f"failure ratio: {result.failure_ratio:.2%}")
    for error in sorted(result.errors, key=lambda e: -e.get("occurrences", 0))[:5]:
        typer.echo(f"  {error.get('occurrences')}x {error.get('method')} {error.get('name')}: "
                   f"{error.get('error')}")
    if result.ledger is not None and result.ledger.attempted:
        typer.echo(f"orders: {len(result.ledger.attempted)} attempted, "
                   f"{len(result.ledger.acknowledged)} acknowledged "
                   f"(ledger: {result.ledger.run_dir})")


def register(app: typer.Typer) -> None:
    app.add_typer(load_app)
