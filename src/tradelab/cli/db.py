"""`tradelab db migrate` and `tradelab db status`: the schema and the two roles.

    tradelab db migrate --database-url postgresql://postgres:PW@127.0.0.1:15432/tradelab
    tradelab db migrate --wait 60        # in a container next to a booting database
    tradelab db status

migrate connects as an owner/superuser (--database-url, else TRADELAB_DATABASE_URL,
else the lab's `postgres` password) and gives the application and operator roles
their passwords: TRADELAB_APP_DB_PASSWORD / TRADELAB_OPERATOR_DB_PASSWORD, else the
lab's generated secrets, so that the operator commands then work with no flags.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from tradelab.cli.common import command_group, lab_from, settings_from

if TYPE_CHECKING:
    from tradelab.db.connect import Role

db_app = command_group(help="Database schema and roles.", no_args_is_help=True)


def _url(ctx: typer.Context, explicit: str | None, role: Role) -> str:
    from tradelab.db.connect import resolve_url

    return resolve_url(explicit, settings_from(ctx), lab_from(ctx), role)


@db_app.command("migrate")
def migrate_cli(
    ctx: typer.Context,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", show_default=False,
        help="Owner/superuser URL. Default: TRADELAB_DATABASE_URL, else the lab's database "
             "as `postgres`.")] = None,
    wait: Annotated[float, typer.Option(
        "--wait", min=0, metavar="SECONDS",
        help="Keep retrying the connection this long before giving up.")] = 0,
) -> None:
    """Apply pending migrations and create or update the app and operator roles."""
    from tradelab.db.connect import wait_until_reachable
    from tradelab.db.migrate import latest_version, migrate

    url = _url(ctx, database_url, "admin")
    lab = lab_from(ctx)
    app_pw = os.environ.get("TRADELAB_APP_DB_PASSWORD") or lab.secret("app_db_password")
    op_pw = (os.environ.get("TRADELAB_OPERATOR_DB_PASSWORD")
             or lab.secret("operator_db_password"))
    if wait:
        wait_until_reachable(url, wait)
    applied = migrate(url, app_password=app_pw, operator_password=op_pw)
    for version in applied:
        typer.echo(f"applied {version}")
    if not applied:
        typer.echo(f"database is up to date ({latest_version()})")


@db_app.command("status")
def status_cli(
    ctx: typer.Context,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", show_default=False,
        help="Database URL. Default: TRADELAB_DATABASE_URL, else the lab's database "
             "as the operator role.")] = None,
) -> None:
    """Show the database's schema version against the newest this tradelab knows."""
    from tradelab.db.connect import connect, redact
    from tradelab.db.migrate import available, current_version

    url = _url(ctx, database_url, "operator")
    with connect(url) as conn:
        conn.read_only = True
        current = current_version(conn)
    versions = [v for v, _ in available()]
    typer.echo(f"database: {redact(url)}")
    typer.echo(f"current:  {current or 'none (empty database)'}")
    typer.echo(f"latest:   {versions[-1]}")
    pending = [v for v in versions if current is None or v > current]
    if pending:
        typer.echo(f"pending:  {', '.join(pending)} (run `tradelab db migrate`)")
    else:
        typer.echo("up to date")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
