"""`tradelab up | down | status | logs | doctor`: the lab's lifecycle, on either runtime.

    tradelab up                                   # Docker when it answers, else local processes
    tradelab up --runtime docker --without grafana,loki,promtail --timeout 10m
    tradelab status --json
    tradelab logs api --tail 50 --follow
    tradelab down --volumes                       # also delete the data

The commands only parse flags and print; tradelab.orchestrator (up, down, status,
doctor) is the Python API, and the runtime drivers (tradelab.runtimes) do the work.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tradelab.cli.common import (
    OnlyOpt,
    WithoutOpt,
    lab_from,
    print_json,
    print_table,
    restore_overdue_faults,
    service_names,
    settings_from,
)

RuntimeOpt = Annotated[str | None, typer.Option(
    "--runtime", help="auto (Docker when it answers, else local), docker or local.",
    show_default=False)]


# -- the commands -------------------------------------------------------------------------


def up_cli(
    ctx: typer.Context,
    runtime: RuntimeOpt = None,
    only: OnlyOpt = None,
    without: WithoutOpt = None,
    build: Annotated[bool, typer.Option(
        "--build/--no-build", help="Rebuild the app image from the installed package "
        "(cached: quick when nothing changed). --no-build uses the image as it is.")] = True,
    timeout: Annotated[str, typer.Option(
        "--timeout", help="How long to wait for every service to be healthy.")] = "5m",
) -> None:
    """Start the lab (or bring it up to date); wait until every service is healthy."""
    from tradelab.durations import parse_duration
    from tradelab.orchestrator import up

    seconds = parse_duration(timeout, what="--timeout")
    lab = lab_from(ctx)
    settings = settings_from(ctx)

    report = up(settings, lab, runtime, service_names(only), service_names(without),
                build, seconds)
    rt, statuses = report.driver, report.services
    typer.echo(f"lab {settings.project} is up ({rt.name} runtime, lab directory {lab.root})")
    print_services([s.as_dict() for s in statuses])
    if any(s.name == "grafana" and s.state == "running" for s in statuses):
        grafana = lab.secret_path("grafana_admin_password")
        typer.echo(f"Grafana login: admin, password in {grafana}")


def down_cli(
    ctx: typer.Context,
    volumes: Annotated[bool, typer.Option(
        "--volumes", help="Also delete the data (database, metrics, logs).")] = False,
    runtime: RuntimeOpt = None,
) -> None:
    """Stop and remove the lab; its data stays unless --volumes."""
    from tradelab.orchestrator import down

    report = down(settings_from(ctx), lab_from(ctx), runtime, volumes)
    typer.echo("no lab is running" if report.runtime == "none"
               else f"lab is down ({report.runtime} runtime)")
    if not volumes:
        typer.echo("data kept (delete it with --volumes)")
    elif report.removed:
        typer.echo("removed the lab's data:")
        for gone in report.removed:
            typer.echo(f"  {gone}")
    else:
        typer.echo("there was no data to remove")


def status_cli(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every service of the lab: state, health, URL; and the active chaos faults."""
    from tradelab.orchestrator import status

    settings, lab = settings_from(ctx), lab_from(ctx)
    restore_overdue_faults(settings, lab)
    report = status(settings, lab).as_dict()
    if as_json:
        print_json(report)
        return
    chaos = report["chaos"]
    if not report["up"]:
        last = report["runtime"]
        typer.echo("lab is down" + (f" (it last ran on the {last} runtime)" if last else "")
                   + ": start it with `tradelab up`")
        if chaos:
            typer.echo(f"chaos: {fault_names(chaos)} (nothing sees it until `tradelab up`)")
        return
    typer.echo(f"runtime: {report['runtime']}")
    print_services(report["services"])
    typer.echo("chaos: " + (fault_names(chaos) if chaos else "off"))
    alerts = report["alerts"]
    if alerts is None:
        typer.echo("alerts: unknown (Alertmanager is not running)")
    else:
        typer.echo("alerts: " + (", ".join(f"{a['alertname']} ({a['severity']})" for a in alerts)
                                 if alerts else "none firing") + ("; see `tradelab alerts`"
                                                                  if alerts else ""))


def fault_names(chaos: dict[str, dict]) -> str:
    """"exchange-errors (set by chaos.flag), engine-stall": every way a fault is on shows."""
    return ", ".join(name + (" (set by chaos.flag)" if chaos[name].get("source") == "flag"
                             else "") for name in sorted(chaos))


def print_services(services: list[dict]) -> None:
    """The one service table of `up` and `status`: what does not run says why (detail)."""
    print_table([{k: s.get(k) or "" for k in ("name", "state", "health", "url", "detail")}
                 for s in services])


def logs_cli(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="Service, e.g. api, engine, postgres.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")]
    = False,
    tail: Annotated[int | None, typer.Option(
        "--tail", help="Lines from the end (default 100; 0 for none, all with --tail -1).")]
    = 100,
) -> None:
    """Print a service's logs."""
    from tradelab.orchestrator import running_driver

    driver = running_driver(settings_from(ctx), lab_from(ctx))
    driver.logs(service, follow=follow, tail=None if tail is not None and tail < 0 else tail)


def doctor_cli(
    ctx: typer.Context,
    runtime: RuntimeOpt = None,
    only: OnlyOpt = None,
    without: WithoutOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check that the lab can run here: runtime reachable, ports free, memory, images."""
    from tradelab.orchestrator import doctor

    report = doctor(settings_from(ctx), lab_from(ctx), runtime, service_names(only),
                    service_names(without))
    if as_json:
        print_json({"runtime": report.runtime, "ok": report.ok,
                    "checks": [c.as_dict() for c in report.checks]})
    else:
        typer.echo(f"runtime: {report.runtime}")
        mark = {True: "ok", False: "FAIL", None: "note"}
        print_table([{"": mark[c.ok], "check": c.check, "detail": c.detail}
                     for c in report.checks])
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("up")(up_cli)
    app.command("down")(down_cli)
    app.command("status")(status_cli)
    app.command("logs")(logs_cli)
    app.command("doctor")(doctor_cli)
