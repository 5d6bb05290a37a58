"""`tradelab render [--out DIR] [--runtime docker|local]`: write the lab's config files.

The command only parses options; tradelab.render.render is the Python API.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


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
) -> None:
    """Render docker-compose.yml and the Prometheus, Alertmanager, Grafana, Loki and
    log agent configs from the lab's settings."""
    from tradelab.cli.common import lab_from, settings_from
    from tradelab.render import render
    from tradelab.stack import rendered_dir

    lab = lab_from(ctx)
    settings = settings_from(ctx)
    if runtime is RenderRuntime.docker:  # the compose file names the lab's secret files
        lab.ensure()
        lab.ensure_secrets()
    written = render(settings, lab, out=out, runtime=runtime.value)
    folder = out if out is not None else rendered_dir(lab, runtime.value)
    typer.echo(f"rendered {len(written)} files into {folder}")


def register(app: typer.Typer) -> None:
    app.command("render")(render_cli)
