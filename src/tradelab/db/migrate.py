"""Versioned, idempotent migrations recorded in the database, and the two roles.

    applied = migrate(admin_url, app_password="…", operator_password="…")

Migrations are the files db/migrations/NNNN_name.sql, applied in order, each in
its own transaction and recorded in `schema_migrations`. A session-level advisory
lock serialises concurrent runs, so two `tradelab db migrate` at once are safe:
the second waits, then finds nothing left to do.
"""

from __future__ import annotations

from importlib import resources

from tradelab.db.connect import APP_ROLE, OPERATOR_ROLE, connect
from tradelab.errors import TradelabError

_LOCK_ID = 0x7472_6164_656C  # "tradel"


def available() -> list[tuple[str, str]]:
    """(version, sql) of every bundled migration, in order."""
    folder = resources.files("tradelab.db") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")),
                   key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


def latest_version() -> str:
    return available()[-1][0]


def current_version(conn) -> str | None:
    """The newest applied migration, or None on an empty database."""
    row = conn.execute(
        "SELECT to_regclass('public.schema_migrations') IS NOT NULL"
    ).fetchone()
    if not row[0]:
        return None
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return row[0]


def migrate(url: str, app_password: str | None = None,
            operator_password: str | None = None) -> list[str]:
    """Bring the database at `url` to the latest schema; return the versions applied."""
    import psycopg

    with connect(url, autocommit=True) as conn:
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                # Before the migrations: 0002_least_privilege grants to these roles.
                _ensure_roles(conn, app_password, operator_password)
                done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
                applied = []
                for version, sql in available():
                    if version in done:
                        continue
                    with conn.transaction():
                        conn.execute(sql)
                        conn.execute(
                            "INSERT INTO schema_migrations (version) VALUES (%s)", (version,)
                        )
                    applied.append(version)
                return applied
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise TradelabError(
                f"migration needs an owner or superuser connection: {exc}".splitlines()[0]
            ) from None


def _ensure_roles(conn, app_password: str | None, operator_password: str | None) -> None:
    import psycopg
    from psycopg import sql

    db = conn.execute("SELECT current_database()").fetchone()[0]
    for role, password in ((APP_ROLE, app_password), (OPERATOR_ROLE, operator_password)):
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if not exists:
            try:  # roles are cluster-wide: another database's migration may win the race
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
                pass
        if password is not None:
            conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            sql.Identifier(db), sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))

    # What each role may do with the tables is in migrations/0002_least_privilege.sql.
    # The operator role is read-only even if someone grants it more by mistake.
    conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(
        sql.Identifier(OPERATOR_ROLE)))
