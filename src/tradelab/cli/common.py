"""What every command shares: the lab, the settings, JSON and table output, help groups.

    config_app = command_group(help="Show and change the lab's settings.",
                               no_args_is_help=True)
    app.add_typer(config_app, name="config")
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from tradelab.lab import Lab

if TYPE_CHECKING:  # pydantic is imported only when a command reads the settings
    from tradelab.settings import Settings


class PlainHelpGroup(TyperGroup):
    """A command group whose --help is click's plain text, each command's summary in full.

    Typer's rich help imports rich and markdown-it and builds panels: most of the wall
    time of `tradelab --help` (see docs/benchmarks.md). Plain click help prints the same
    texts; only click's habit of cutting summaries to one line ("...") is undone here.
    """

    def format_commands(self, ctx, formatter) -> None:  # noqa: D102
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def command_group(**kwargs: Any) -> typer.Typer:
    """A `tradelab X` command group (typer.Typer's arguments) with plain, fast help."""
    return typer.Typer(cls=PlainHelpGroup, rich_markup_mode=None, **kwargs)


def lab_from(ctx: typer.Context) -> Lab:
    """The lab chosen by --lab-dir / TRADELAB_HOME / the default."""
    root = ctx.find_root()
    lab_dir = (root.obj or {}).get("lab_dir") if root.obj else None
    return Lab.from_flag(lab_dir)


def settings_from(ctx: typer.Context, flags: Mapping[str, Any] | None = None) -> Settings:
    """Effective settings for the lab, with this command's flags on top."""
    from tradelab.settings import load_settings

    return load_settings(lab_from(ctx), flags=flags)


def restore_overdue_faults(settings: Settings, lab: Lab) -> None:
    """Restore every runtime fault past its end (tradelab.chaos.end_overdue), saying so on
    stderr: a command that reports on the lab never shows a broken service as merely
    stopped, nor the fault that broke it as off."""
    from tradelab.chaos import end_overdue

    for name in end_overdue(settings, lab):
        typer.echo(f"chaos: {name} was past its end; its service is restored", err=True)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def print_table(rows: Sequence[Mapping[str, Any]], headers: list[str] | None = None) -> None:
    from tabulate import tabulate

    if not rows:
        return
    headers = headers or list(rows[0].keys())
    typer.echo(tabulate([[r.get(h, "") for h in headers] for r in rows], headers=headers))


OnlyOpt = Annotated[str | None, typer.Option(
    "--only", help="Only these services (comma-separated) and what they need.",
    show_default=False)]
WithoutOpt = Annotated[str | None, typer.Option(
    "--without", help="Leave these services out (comma-separated), e.g. grafana,loki.",
    show_default=False)]


def service_names(text: str | None) -> list[str] | None:
    """--only/--without's comma-separated list, or None when not given."""
    return [n.strip() for n in text.split(",") if n.strip()] if text else None
