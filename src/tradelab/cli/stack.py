"""`tradelab up | down | status | logs | doctor`: the lab's lifecycle, on either runtime.

    tradelab up                                   # Docker when it answers, else local processes
    tradelab up --runtime docker --without grafana,loki,promtail --timeout 10m
    tradelab status --json
    tradelab logs api --tail 50 --follow
    tradelab down --volumes                       # also delete the data

The commands only parse flags; the functions below them (up, down, status_report,
doctor) are the Python API, and the runtimes (tradelab.runtimes) do the work.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tradelab.cli.common import (
    OnlyOpt,
    WithoutOpt,
    lab_from,
    print_json,
    print_table,
    service_names,
    settings_from,
)

RuntimeOpt = Annotated[str | None, typer.Option(
    "--runtime", help="auto (Docker when it answers, else local), docker or local.",
    show_default=False)]


# -- the Python API -----------------------------------------------------------------------


def up(settings, lab, runtime: str | None = None, only: list[str] | None = None,
       without: list[str] | None = None, build: bool = True, timeout: float = 300,
       on_runtime=None):
    """Bring the lab up on `runtime`; return (runtime, statuses of the services it runs).

    `on_runtime(rt)` is called once the runtime is chosen, before anything starts.
    """
    from tradelab.runtimes import select_runtime

    rt = select_runtime(settings, lab, runtime)
    if on_runtime:
        on_runtime(rt)
    return rt, rt.up(only=only, without=without, build=build, timeout=timeout)


def down(settings, lab, runtime: str | None = None, volumes: bool = False) -> str:
    """Take the lab down; a lab that is not running is not an error (nothing to do)."""
    from tradelab.errors import TradelabError
    from tradelab.runtimes import docker_available, running_runtime, select_runtime

    if runtime:
        rt = select_runtime(settings, lab, runtime)
    else:
        try:
            rt = running_runtime(settings, lab)
        except TradelabError:  # nothing runs; `--volumes` may still have data to delete
            if not volumes:
                # A killed supervisord leaves its programs behind: they still go.
                select_runtime(settings, lab, "local").down()
                return "none"
            # the data may be of either runtime: delete both kinds
            kinds = ["local"] + (["docker"] if docker_available() else [])
            for kind in kinds:
                select_runtime(settings, lab, kind).down(volumes=True)
            return " and ".join(kinds)
    rt.down(volumes=volumes)
    return rt.name


def status_report(settings, lab) -> dict[str, Any]:
    """{"runtime", "services": [{"name", "state", "health", "url"}, ...], "chaos", "alerts"}.

    "alerts" lists the alerts firing in Alertmanager, or is None when it cannot be asked.
    """
    from tradelab.errors import TradelabError
    from tradelab.runtimes import running_runtime, select_runtime

    try:
        rt = running_runtime(settings, lab)
    except TradelabError:  # no lab: list what `up` would start, all missing
        rt = select_runtime(settings, lab, None)
    services = rt.status()
    return {
        "runtime": rt.name,
        "services": [s.as_dict() for s in services],
        "chaos": _active_chaos(settings, lab),
        "alerts": _firing_alerts(settings, services),
    }


def doctor(settings, lab, runtime: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(runtime name, checks); each check is {"check", "ok" (True/False/None), "detail"}."""
    from tradelab.runtimes import select_runtime

    rt = select_runtime(settings, lab, runtime)
    checks = rt.doctor() if hasattr(rt, "doctor") else []
    return rt.name, checks


def _firing_alerts(settings, services) -> list[dict[str, Any]] | None:
    from tradelab.alerts import AlertmanagerUnavailable, firing_alerts

    if not any(s.name == "alertmanager" and s.state == "running" for s in services):
        return None
    try:
        return firing_alerts(settings, timeout_s=2.0)
    except AlertmanagerUnavailable:
        return None


def _active_chaos(settings, lab) -> dict[str, Any]:
    try:
        from tradelab.chaos import store_for
    except ImportError:
        return {}
    return {name: fault.as_dict() for name, fault in store_for(settings, lab).active().items()}


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

    seconds = parse_duration(timeout, what="--timeout")
    lab = lab_from(ctx)
    settings = settings_from(ctx)

    def chosen(rt) -> None:
        if (runtime or settings.runtime) == "auto" and rt.name == "local":
            typer.echo("no Docker engine answers: using the local runtime "
                       "(--runtime docker to insist)")

    rt, statuses = up(settings, lab, runtime, service_names(only), service_names(without),
                      build, seconds, on_runtime=chosen)
    typer.echo(f"lab {settings.project} is up ({rt.name} runtime, lab directory {lab.root})")
    print_table([{"service": s.name, "state": s.state, "health": s.health, "url": s.url or ""}
                 for s in statuses])
    grafana = lab.secret_path("grafana_admin_password")
    typer.echo(f"Grafana login: admin, password in {grafana}"
               + ("" if any(s.name == "grafana" and s.state == "running" for s in statuses)
                  else " (grafana not started)"))


def down_cli(
    ctx: typer.Context,
    volumes: Annotated[bool, typer.Option(
        "--volumes", help="Also delete the data (database, metrics, logs).")] = False,
    runtime: RuntimeOpt = None,
) -> None:
    """Stop and remove the lab; its data stays unless --volumes."""
    name = down(settings_from(ctx), lab_from(ctx), runtime, volumes)
    if name == "none":
        typer.echo("no lab is running; nothing to do (data kept; delete it with --volumes)")
        return
    typer.echo(f"lab is down ({name} runtime)" + ("; data deleted" if volumes else
                                                   "; data kept (delete it with --volumes)"))


def status_cli(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every service of the lab: state, health, URL; and the active chaos faults."""
    report = status_report(settings_from(ctx), lab_from(ctx))
    if as_json:
        print_json(report)
        return
    typer.echo(f"runtime: {report['runtime']}")
    print_table([{k: s.get(k) or "" for k in ("name", "state", "health", "url", "detail")}
                 for s in report["services"]])
    chaos = report["chaos"]
    typer.echo("chaos: " + (", ".join(sorted(chaos)) if chaos else "off"))
    alerts = report["alerts"]
    if alerts is None:
        typer.echo("alerts: unknown (Alertmanager is not running)")
    else:
        typer.echo("alerts: " + (", ".join(f"{a['alertname']} ({a['severity']})" for a in alerts)
                                 if alerts else "none firing") + ("; see `tradelab alerts`"
                                                                  if alerts else ""))


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
    from tradelab.runtimes import running_runtime

    rt = running_runtime(settings_from(ctx), lab_from(ctx))
    rt.logs(service, follow=follow, tail=None if tail is not None and tail < 0 else tail)


def doctor_cli(ctx: typer.Context, runtime: RuntimeOpt = None) -> None:
    """Check that the lab can run here: runtime reachable, ports free, memory, images."""
    name, checks = doctor(settings_from(ctx), lab_from(ctx), runtime)
    typer.echo(f"runtime: {name}")
    mark = {True: "ok", False: "FAIL", None: "note"}
    print_table([{"": mark[c["ok"]], "check": c["check"], "detail": c["detail"]}
                 for c in checks])
    if any(c["ok"] is False for c in checks):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("up")(up_cli)
    app.command("down")(down_cli)
    app.command("status")(status_cli)
    app.command("logs")(logs_cli)
    app.command("doctor")(doctor_cli)
