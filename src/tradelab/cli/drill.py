"""`tradelab drill start|status|ack|diagnose|end|history`: practise on a hidden incident.

    tradelab drill start --level 2               # the lab picks, hides and injects a fault
    tradelab drill ack                           # you were paged
    tradelab drill diagnose db-outage            # tries are counted; the answer is not told
    tradelab drill status --json                 # elapsed, firing alerts, never the answer
    tradelab drill end                           # early stop: restores, scorecard, postmortem
    tradelab drill history

Exit codes: 0 done; 1 a lab error (no drill running, no lab...); 2 a usage mistake;
`drill end` and `drill scorecard` exit 3 when the drill did not pass.
The commands only parse flags; tradelab.drill.play does the work.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tradelab.cli.common import command_group, lab_from, print_json, print_table, settings_from

drill_app = command_group(
    help="Drills: the lab hides an incident, you respond, it scores you and drafts a "
         "postmortem.",
    no_args_is_help=True,
)
NOT_PASSED = 3
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@drill_app.command("start")
def start_cli(
    ctx: typer.Context,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Same seed, same drill. Default: a random one (printed).",
        show_default=False)] = None,
    level: Annotated[int, typer.Option(
        "--level", help="1 one fault; 2 plus a red herring; 3 two faults at once.")] = 1,
    scenario: Annotated[str | None, typer.Option(
        "--scenario", help="Play this fault instead of a random one.",
        show_default=False)] = None,
    window: Annotated[str, typer.Option(
        "--window", help="The fault goes on after a random delay in MIN-MAX.")] = "30s-3m",
    sustain: Annotated[str, typer.Option(
        "--sustain", help="How long the lab must stay healthy, no page firing, "
                          "before the drill counts as mitigated.")] = "2m",
    load: Annotated[bool, typer.Option(
        "--load/--no-load", help="Start a small load run if none runs.")] = True,
    poll: Annotated[float, typer.Option("--poll", hidden=True)] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Start a drill on the running lab; the incident is injected within the window."""
    from tradelab.drill.play import start
    from tradelab.durations import parse_duration

    info = start(settings_from(ctx), lab_from(ctx), seed=seed, level=level, scenario=scenario,
                 window=_window(window), load=load, poll_s=poll,
                 sustain_s=parse_duration(sustain, what="duration for --sustain"))
    if as_json:
        print_json(info)
        return
    low, high = info["window_s"]
    typer.echo(f"drill {info['drill']} started (seed {info['seed']}, level {info['level']}): "
               f"an incident begins {low:g}-{high:g}s from now. Watch `tradelab alerts`; "
               "`tradelab drill ack` when paged.")


@drill_app.command("ack")
def ack_cli(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Acknowledge the page."""
    from tradelab.drill.play import ack

    info = ack(lab_from(ctx))
    if as_json:
        print_json(info)
    else:
        typer.echo(f"drill {info['drill']}: acknowledged at {info['acknowledged_at']}"
                   + (" (already)" if info["again"] else ""))


@drill_app.command("diagnose")
def diagnose_cli(
    ctx: typer.Context,
    fault: Annotated[str, typer.Argument(help="The fault you think it is (`tradelab chaos "
                                              "list`).")],
    venue: Annotated[str | None, typer.Option(
        "--venue", help="The venue it hits, for a venue's fault.", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Record your diagnosis (more tries are allowed and counted; not told right or wrong)."""
    from tradelab.drill.play import diagnose

    info = diagnose(lab_from(ctx), fault, venue)
    if as_json:
        print_json(info)
    else:
        typer.echo(f"drill {info['drill']}: diagnosis {fault} recorded (try {info['tries']}); "
                   "mitigate it, the drill ends once the lab is healthy")


@drill_app.command("status")
def status_cli(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The drill's elapsed time and the firing alerts (never the answer)."""
    from tradelab.drill.play import status

    info = status(settings_from(ctx), lab_from(ctx))
    if as_json:
        print_json(info)
        return
    typer.echo(f"drill {info['drill']}: {info['state']}, level {info['level']}, "
               f"{info['elapsed_s']}s elapsed, "
               f"{'acknowledged' if info['acknowledged'] else 'not acknowledged'}, "
               f"{info['diagnosis_tries']} diagnosis tries")
    alerts = info["firing_alerts"]
    if alerts is None:
        typer.echo("alerts: unknown (Alertmanager does not answer)")
    elif not alerts:
        typer.echo("alerts: none firing")
    else:
        print_table(alerts)
    if info["scorecard"]:
        typer.echo(f"scorecard: {info['scorecard']}")


@drill_app.command("end")
def end_cli(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Stop the drill (if it still runs), restore the lab, print the scorecard."""
    from tradelab.drill.play import end

    _print_card(end(settings_from(ctx), lab_from(ctx)), as_json)


@drill_app.command("scorecard")
def scorecard_cli(
    ctx: typer.Context,
    drill: Annotated[str | None, typer.Argument(help="Drill id (default: the last one).",
                                                show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """A finished drill's scorecard again."""
    from tradelab.drill.play import scorecard_of

    _print_card(scorecard_of(lab_from(ctx), drill), as_json)


@drill_app.command("history")
def history_cli(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Past drills with their scores."""
    from tradelab.drill.play import history

    info = history(lab_from(ctx))
    if as_json:
        print_json(info)
    elif not info["drills"]:
        typer.echo("no drill has been run here")
    else:
        print_table([{**r, "faults": ", ".join(r["faults"] or []) or "-"}
                     for r in info["drills"]])


@drill_app.command("watch", hidden=True)
def watch_cli(
    ctx: typer.Context,
    drill: Annotated[str, typer.Argument()],
    poll: Annotated[float, typer.Option("--poll")] = 1.0,
    sustain: Annotated[float, typer.Option("--sustain")] = 120.0,
) -> None:
    """The detached watcher `drill start` leaves behind."""
    from tradelab.drill.session import all_sessions
    from tradelab.drill.watch import watch

    lab = lab_from(ctx)
    session = next(s for s in all_sessions(lab) if s.id == drill)
    typer.echo(f"drill {drill}: {watch(settings_from(ctx), lab, session, poll, sustain)}")


def _print_card(card: dict, as_json: bool) -> None:
    if as_json:
        print_json(card)
    else:
        times = card["times"]
        print_table([
            {"item": "outcome", "value": card["outcome"]},
            {"item": "passed", "value": card["passed"]},
            {"item": "fault(s)", "value": ", ".join(card["faults"] or [])},
            {"item": "ack from page (s)", "value": _n(times["ack_from_page_s"])},
            {"item": "diagnose from injection (s)",
             "value": _n(times["diagnose_from_injection_s"])},
            {"item": "mitigate from injection (s)",
             "value": _n(times["mitigate_from_injection_s"])},
            {"item": "mitigate from page (s)", "value": _n(times["mitigate_from_page_s"])},
            {"item": "diagnosis", "value": f"{'right' if card['diagnosis']['correct'] else 'wrong'}"
                                           f" after {card['diagnosis']['tries']} tries"},
            {"item": "error budget spent (% of 30d)", "value": ", ".join(
                f"{k} {_n(v)}" for k, v in card["error_budget_spent_pct"].items()) or "-"},
            {"item": "orders affected", "value": _n(card["orders_affected"])},
            {"item": "trades lost", "value": _n(card["trades_lost"])},
            {"item": "harmful actions", "value": card["harmful_actions"]["count"]},
        ])
        typer.echo(f"postmortem draft: {card['files']['postmortem']}")
    if not card["passed"]:
        raise typer.Exit(NOT_PASSED)


def _window(text: str) -> tuple[float, float]:
    from tradelab.durations import parse_duration
    from tradelab.errors import TradelabError

    low, sep, high = text.partition("-")
    if not sep:
        raise TradelabError(f"invalid --window {text!r}: use MIN-MAX, e.g. 30s-3m")
    return (parse_duration(low, what="--window start"), parse_duration(high, what="--window end"))


def _n(value) -> str:
    return "-" if value is None else str(value)


def register(app: typer.Typer) -> None:
    app.add_typer(drill_app, name="drill")
