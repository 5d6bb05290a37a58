"""Migrations and roles against a real PostgreSQL."""

import threading

import psycopg
import pytest

from tradelab.db.migrate import current_version, latest_version, migrate


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
    assert sorted(len(r) for r in results) == [0, 1]


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
