"""`tradelab serve api|engine`: run one service in the foreground.

    tradelab serve api --bind 127.0.0.1:8000 --workers 2
    tradelab serve engine --metrics-bind 127.0.0.1:9101

This is what the local runtime supervises and what the containers run. The
commands only read options; tradelab.app.server and tradelab.app.engine do the work.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tradelab.cli.common import command_group, lab_from, settings_from

serve_app = command_group(
    name="serve",
    help="Run a service in the foreground (api, engine).",
    no_args_is_help=True,
)


@serve_app.command("api")
def api_cli(
    ctx: typer.Context,
    bind: Annotated[str | None, typer.Option(
        "--bind", metavar="HOST:PORT",
        help="Listen address. Default: <bind_address>:<ports.api> from the settings.",
        show_default=False)] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, max=64, help="gunicorn worker processes (default api.workers).",
        show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, max=64, help="Threads per worker (default api.threads).",
        show_default=False)] = None,
) -> None:
    """The trading API: Flask under gunicorn, metrics summed over workers."""
    from tradelab.app.server import serve_api

    settings = settings_from(ctx, {"api.workers": workers, "api.threads": threads})
    bind = bind or f"{settings.bind_address}:{settings.ports.api}"
    serve_api(settings, lab_from(ctx), bind=bind, workers=settings.api.workers,
              threads=settings.api.threads)


@serve_app.command("engine")
def engine_cli(
    ctx: typer.Context,
    metrics_bind: Annotated[str | None, typer.Option(
        "--metrics-bind", metavar="HOST:PORT",
        help="Where the engine's /metrics listens. Default: <bind_address>:<ports.engine>.",
        show_default=False)] = None,
) -> None:
    """The execution engine: fills NEW trades, plus a steady background order flow."""
    from tradelab.app.engine import main

    settings = settings_from(ctx)
    main(settings, lab_from(ctx), metrics_bind=metrics_bind)


def register(app: typer.Typer) -> None:
    app.add_typer(serve_app)
