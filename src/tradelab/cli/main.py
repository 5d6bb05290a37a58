"""The root `tradelab` command: global options and the command groups.

Each module in tradelab.cli declares its commands with `register(app)`. Command
modules import only typer and light tradelab modules at import time; Docker,
Flask, psycopg and Locust are imported inside the commands that need them. Help is
plain click text (cli.common.PlainHelpGroup), so --help never imports rich either.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

try:  # typer >= 0.29 ships its own copy of click; older releases use click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors  # type: ignore[no-redef]

from tradelab import __version__
from tradelab import audit as _audit
from tradelab.cli.common import PlainHelpGroup
from tradelab.errors import TradelabError
from tradelab.lab import Lab


class _Group(PlainHelpGroup):
    """Turns a TradelabError anywhere below into one line on stderr and exit 1,
    and a usage mistake (bad flag or value) into one line and exit 2."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):  # noqa: D102
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[misc]
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[misc]
        except click_errors.NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help())
            sys.exit(0)
        except click_errors.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            typer.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            typer.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):  # noqa: D102
        command, arguments = self._command_path(ctx)
        audit = command is not None and _audit.is_audited(command, arguments)
        try:
            rv = super().invoke(ctx)
        except TradelabError as exc:
            if audit:
                self._audit(ctx, command, arguments, "error", 1, str(exc))
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            if audit:
                self._audit(ctx, command, arguments, "interrupted", 130)
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except typer.Exit as exc:
            if audit:
                code = exc.exit_code
                self._audit(ctx, command, arguments, "ok" if code == 0 else "error", code)
            raise
        except click_errors.UsageError:
            raise  # refused before acting: nothing changed
        except Exception as exc:
            if audit:
                self._audit(ctx, command, arguments, "error", 1, type(exc).__name__)
            raise
        if audit:
            self._audit(ctx, command, arguments, "ok", rv if isinstance(rv, int) else 0)
        return rv

    def _command_path(self, ctx) -> tuple[str | None, list[str]]:
        """("ops halt", [its arguments]) from the words left after the global options."""
        args = [*(getattr(ctx, "_protected_args", None) or ctx.protected_args), *ctx.args]
        names: list[str] = []
        group: Any = self  # typer's own click or click itself: a group has get_command
        while hasattr(group, "get_command") and args:
            sub = group.get_command(ctx, args[0])
            if sub is None:
                break
            names.append(args.pop(0))
            group = sub
        return (" ".join(names) or None), args

    @staticmethod
    def _audit(ctx, command, arguments, outcome, code, error=None) -> None:
        lab_dir = (ctx.obj or {}).get("lab_dir")
        try:
            lab = Lab.from_flag(lab_dir)
        except TradelabError:
            return
        _audit.record(lab, command, arguments, outcome, exit_code=code, error=error)


app = typer.Typer(
    cls=_Group,
    rich_markup_mode=None,  # plain click help: rich's costs most of --help's start time
    name="tradelab",
    help="An SRE practice lab: a trading system, its observability stack, load and chaos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tradelab {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    lab_dir: Annotated[
        Path | None,
        typer.Option(
            "--lab-dir",
            envvar="TRADELAB_HOME",
            help="Lab directory (settings, secrets, state). Default: the user data dir.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """An SRE practice lab: a trading system, its observability stack, load and chaos."""
    ctx.obj = {"lab_dir": lab_dir}


def _register_all() -> None:
    from tradelab.cli import (
        alerts,
        chaos,
        config,
        db,
        drill,
        gameday,
        levers,
        load,
        ops,
        render,
        runbook,
        serve,
        stack,
        verify,
        watch,
    )

    for module in (stack, render, chaos, gameday, alerts, watch, runbook, ops, levers, load,
                   verify, drill, db, serve, config):
        module.register(app)


_register_all()


def run() -> None:
    """Console-script entry point."""
    try:
        app()
    except TradelabError as exc:  # raised outside a command, e.g. while parsing
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
