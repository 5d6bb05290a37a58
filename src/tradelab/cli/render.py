"""`tradelab render [--out DIR] [--runtime docker|local] [--only S,… | --without S,…]`:
write the lab's config files.

The command only parses options; tradelab.render.render is the Python API.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tradelab.cli.common import OnlyOpt, WithoutOpt


class RenderRuntime(StrEnum):
    docker = "docker"
    local = "local"


def render_cli(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Folder to write to. Default: <lab>/rendered.", show_default=False,
    )] = None,
    runtime: Annotated[RenderRuntime, typer.Option(
        "--runtime", help="Addresses and paths for this runtime (local: no compose file).",
    )] = RenderRuntime.docker,
    only: OnlyOpt = None,
    without: WithoutOpt = None,
) -> None:
    """Render docker-compose.yml and the Prometheus, Alertmanager, Grafana, Loki and
    log agent configs from the lab's settings (for --only/--without: as `up` would)."""
    from tradelab.cli.common import lab_from, service_names, settings_from
    from tradelab.render import render
    from tradelab.stack import build_stack, rendered_dir

    lab = lab_from(ctx)
    settings = settings_from(ctx)
    stack = build_stack(settings, lab, runtime.value)
    stack = stack.subset(stack.select(service_names(only), service_names(without)))
    if runtime is RenderRuntime.docker:  # the compose file names the lab's secret files
        lab.ensure()
        lab.ensure_secrets()
    written = render(settings, lab, out=out, stack=stack)
    folder = out if out is not None else rendered_dir(lab, runtime.value)
    typer.echo(f"rendered {len(written)} files into {folder}")


def register(app: typer.Typer) -> None:
    app.command("render")(render_cli)
