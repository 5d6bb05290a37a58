"""Migrations and roles against a real PostgreSQL."""

import threading

import psycopg
import pytest

from tradelab.db.migrate import available, current_version, latest_version, migrate


def test_migrate_is_idempotent_and_recorded(db):
    assert migrate(db.admin_url, db.app_password, db.operator_password) == []
    with psycopg.connect(db.admin_url) as conn:
        assert current_version(conn) == latest_version()
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"trades", "trade_events", "schema_migrations"} <= tables


def test_two_concurrent_migrations_are_safe(pg):
    import uuid

    name = f"tl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.url("postgres", pg.password), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg.url("postgres", pg.password, name)
    results, errors = [], []

    def run():
        try:
            results.append(migrate(url))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(len(r) for r in results) == [0, len(available())]


def test_operator_role_cannot_write(db):
    with psycopg.connect(db.operator_url) as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == 0
        with pytest.raises(psycopg.Error) as info:
            conn.execute(
                "INSERT INTO trades (client_order_id, symbol, side, quantity, request_hash)"
                " VALUES ('x', 'AAPL', 'BUY', 1, 'h')")
    assert info.value.sqlstate in ("42501", "25006")


def test_operator_role_cannot_write_even_outside_read_only_mode(db):
    with psycopg.connect(db.operator_url) as conn:
        conn.execute("SET default_transaction_read_only = off")
        conn.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            conn.execute("UPDATE trades SET status = 'FILLED'")
    assert info.value.sqlstate == "42501"


def test_app_role_can_write(db):
    with psycopg.connect(db.app_url) as conn:
        conn.execute(
            "INSERT INTO trades (client_order_id, symbol, side, quantity, request_hash)"
            " VALUES ('x', 'AAPL', 'BUY', 1, 'h')")


def test_initdb_reads_the_superuser_password_from_a_private_file():
    """The password file initdb reads is 0600 in a 0700 folder, owned by the server user,
    for the whole initdb (observed by a wrapper around the real initdb), and gone after."""
    import os
    import pwd
    import shutil
    import tempfile
    from pathlib import Path

    from tradelab.db.cluster import PostgresCluster, find_bindir

    real = find_bindir()
    bindir = Path(tempfile.mkdtemp(prefix="tradelab-bin-"))
    report = Path(tempfile.mkdtemp(prefix="tradelab-report-"))
    for d in (bindir, report):
        os.chmod(d, 0o777 if d == report else 0o755)
    for tool in real.iterdir():
        if tool.name != "initdb":
            (bindir / tool.name).symlink_to(tool)
    (bindir / "initdb").write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in --pwfile=*) f="${a#--pwfile=}";; esac; done\n'
        f'stat -c "%a %U %n" "$f" "$(dirname "$f")" > {report}/seen\n'
        f'exec {real}/initdb "$@"\n')
    os.chmod(bindir / "initdb", 0o755)

    root = Path(tempfile.mkdtemp(prefix="tradelab-pg-"))  # the server user walks into it
    os.chmod(root, 0o755)
    cluster = PostgresCluster(root / "data", port=1, bindir=bindir)
    try:
        cluster.init("s3cret-password")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    seen = (report / "seen").read_text().split("\n")
    file_mode, file_owner, file_name = seen[0].split(" ", 2)
    dir_mode, dir_owner, _ = seen[1].split(" ", 2)
    owner = cluster.user or pwd.getpwuid(os.geteuid()).pw_name
    assert (file_mode, file_owner) == ("600", owner)
    assert (dir_mode, dir_owner) == ("700", owner)
    assert not Path(file_name).exists() and not Path(file_name).parent.exists()
    shutil.rmtree(bindir)
    shutil.rmtree(report)


# -- least privilege (migrations/0002_least_privilege.sql) ---------------------------------

def _denied(url, statement, setup=()):
    """The SQLSTATE `statement` fails with as the role of `url` (None if it succeeds)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")  # privileges, not the mode
        for s in setup:
            conn.execute(s)
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            return exc.sqlstate
    return None


def _one_trade(db) -> int:
    with psycopg.connect(db.app_url, autocommit=True) as conn:
        trade = conn.execute(
            "INSERT INTO trades (client_order_id, symbol, side, quantity, request_hash)"
            " VALUES ('x', 'AAPL', 'BUY', 1, 'h') RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO trade_events (trade_id, event, status)"
                     " VALUES (%s, 'received', 'NEW')", (trade,))
        conn.execute("UPDATE trades SET status = 'FILLED' WHERE id = %s", (trade,))
    return trade


def test_the_audit_trail_is_append_only_for_the_app_role(db):
    _one_trade(db)
    assert _denied(db.app_url, "UPDATE trade_events SET detail = '{}'") == "42501"
    assert _denied(db.app_url, "DELETE FROM trade_events") == "42501"
    assert _denied(db.app_url, "TRUNCATE trade_events") == "42501"
    assert _denied(db.app_url, "DELETE FROM trades") == "42501"
    # ...and stays so when migrate runs again (it used to re-grant on every run).
    migrate(db.admin_url, db.app_password, db.operator_password)
    assert _denied(db.app_url, "UPDATE trade_events SET detail = '{}'") == "42501"


def test_the_app_role_reads_the_schema_version_but_never_changes_it(db):
    assert _denied(db.app_url, "SELECT max(version) FROM schema_migrations") is None
    assert _denied(db.app_url, "INSERT INTO schema_migrations VALUES ('9999_x')") == "42501"
    assert _denied(db.app_url, "UPDATE schema_migrations SET version = version") == "42501"
    assert _denied(db.app_url, "DELETE FROM schema_migrations") == "42501"


def test_the_operator_role_only_reads(db):
    trade = _one_trade(db)
    for table in ("trades", "trade_events", "schema_migrations"):
        assert _denied(db.operator_url, f"SELECT count(*) FROM {table}") is None
        assert _denied(db.operator_url, f"DELETE FROM {table}") == "42501"
    assert _denied(db.operator_url, "UPDATE trades SET status = 'NEW'") == "42501"
    assert _denied(db.operator_url, "INSERT INTO trade_events (trade_id, event, status)"
                                    f" VALUES ({trade}, 'x', 'NEW')") == "42501"
    assert _denied(db.operator_url, "SELECT nextval('trades_id_seq')") == "42501"


def test_no_lab_role_creates_objects_or_temporary_tables(pg):
    """Also on a database whose schema public lets everyone create (before PostgreSQL 15,
    or a template that still does): migrate takes it back."""
    import uuid

    name = f"tl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.url("postgres", pg.password), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(pg.url("postgres", pg.password, name), autocommit=True) as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")  # the pre-15 default
    from conftest import _APP_PW, _OP_PW

    migrate(pg.url("postgres", pg.password, name), _APP_PW, _OP_PW)
    for role, password in (("tradelab_app", _APP_PW), ("tradelab_operator", _OP_PW)):
        url = pg.url(role, password, name)
        assert _denied(url, "CREATE TABLE public.planted (x int)") == "42501", role
        assert _denied(url, "CREATE TEMPORARY TABLE scratch (x int)") == "42501", role
        assert _denied(url, "CREATE FUNCTION public.f() RETURNS int"
                            " LANGUAGE sql AS 'SELECT 1'") == "42501", role
