"""Operator queries (tradelab.ops) against a real PostgreSQL, with trades written by hand.

The trades and events are inserted with the admin URL, in the shapes the engine
writes, so these tests do not depend on the engine running.
"""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from conftest import free_port
from psycopg.types.json import Jsonb

from tradelab.const import TradeStatus
from tradelab.errors import TradelabError
from tradelab.ops import (
    FIND_TRADE_SQL,
    TRADE_EVENTS_SQL,
    failure_queries,
    find_trade,
    investigate_failures,
    open_read_only,
)

CHAOS = "EXCHANGE_CONNECTION_FAILED: CHAOS: Forced connection failure to exchange"
TIMEOUT = "EXCHANGE_TIMEOUT: exchange did not answer within 2000 ms"


def add_trade(conn, *, symbol="AAPL", status="FILLED", reason=None, age_s=0.0,
              side="BUY", quantity=10, limit_price=None, fill_price=None, events=True,
              client_order_id=None, venue=None) -> int:
    """One trade created `age_s` ago, with the events the engine would write."""
    cid = client_order_id or f"t-{uuid.uuid4().hex[:10]}"
    trade_id = conn.execute(
        "INSERT INTO trades (client_order_id, symbol, side, quantity, limit_price, status,"
        " fill_price, failure_reason, venue, request_hash, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'h',"
        "  now() - make_interval(secs => %s), now() - make_interval(secs => %s) + '20 ms')"
        " RETURNING id",
        (cid, symbol, side, quantity, limit_price, status, fill_price, reason, venue, age_s,
         age_s),
    ).fetchone()[0]
    if events:
        conn.execute(
            "INSERT INTO trade_events (trade_id, event, status, detail, created_at)"
            " VALUES (%s, 'accepted', 'NEW', %s, now() - make_interval(secs => %s))",
            (trade_id, Jsonb({"source": "api"}), age_s))
        if status != "NEW":
            detail = {"reason": reason} if reason else {"fill_price": str(fill_price)}
            conn.execute(
                "INSERT INTO trade_events (trade_id, event, status, detail, created_at)"
                " VALUES (%s, 'executed', %s, %s,"
                "  now() - make_interval(secs => %s) + '20 ms')",
                (trade_id, status, Jsonb(detail), age_s))
    return trade_id


@pytest.fixture
def admin(db):
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        yield conn


# -- find_trade ---------------------------------------------------------------------

def test_find_trade_by_id_returns_trade_and_timeline_as_json(db, admin):
    trade_id = add_trade(admin, status="FILLED", limit_price="101.2500", fill_price="100.5",
                         client_order_id="web-42", quantity=7, side="SELL")
    trade = find_trade(db.operator_url, trade_id=trade_id)

    assert trade["id"] == trade_id
    assert trade["client_order_id"] == "web-42"
    assert (trade["side"], trade["quantity"], trade["status"]) == ("SELL", 7, "FILLED")
    assert trade["limit_price"] == 101.25 and trade["fill_price"] == 100.5
    assert trade["created_at"].endswith("Z") and "T" in trade["created_at"]
    assert [(e["event"], e["status"]) for e in trade["events"]] == [
        ("accepted", "NEW"), ("executed", "FILLED")]
    assert trade["events"][1]["detail"] == {"fill_price": "100.5"}
    assert trade["events"][0]["time"] <= trade["events"][1]["time"]
    json.dumps(trade)  # JSON-ready without a default= hook


def test_find_trade_by_client_order_id_and_with_an_open_connection(db, admin):
    trade_id = add_trade(admin, status="FAILED", reason=CHAOS, client_order_id="k-1")
    assert find_trade(db.operator_url, client_order_id="k-1")["id"] == trade_id
    with open_read_only(db.operator_url) as conn:
        trade = find_trade(conn, trade_id=trade_id)
    assert trade["failure_reason"] == CHAOS
    assert trade["events"][-1]["detail"] == {"reason": CHAOS}


def test_find_trade_unknown_is_a_one_line_error(db):
    with pytest.raises(TradelabError, match=r"^trade 999 not found$"):
        find_trade(db.operator_url, trade_id=999)
    with pytest.raises(TradelabError, match="client order id nope not found"):
        find_trade(db.operator_url, client_order_id="nope")


def test_find_trade_needs_exactly_one_key(db):
    with pytest.raises(TradelabError, match="exactly one"):
        find_trade(db.operator_url)
    with pytest.raises(TradelabError, match="exactly one"):
        find_trade(db.operator_url, trade_id=1, client_order_id="x")


def test_trade_without_events_has_an_empty_timeline(db, admin):
    trade_id = add_trade(admin, status="NEW", events=False)
    assert find_trade(db.operator_url, trade_id=trade_id)["events"] == []


# -- investigate_failures -------------------------------------------------------------

def test_failures_newest_first_with_summary_by_reason_and_symbol(db, admin):
    newest = add_trade(admin, symbol="MSFT", status="FAILED", reason=CHAOS, age_s=60,
                       venue="alpha")
    middle = add_trade(admin, symbol="AAPL", status="FAILED", reason=TIMEOUT, age_s=600,
                       venue="beta")
    oldest = add_trade(admin, symbol="AAPL", status="FAILED", reason=CHAOS, age_s=1800,
                       venue="alpha")
    add_trade(admin, symbol="AAPL", status="FAILED", reason="NO_COLON_REASON", age_s=1900)
    add_trade(admin, symbol="AAPL", status="FAILED", reason=CHAOS, age_s=7200)  # outside
    for age in (5, 50, 500):
        add_trade(admin, status="FILLED", fill_price="10", age_s=age)
    add_trade(admin, status="REJECTED", reason="LIMIT_NOT_REACHABLE: limit 1 < 100", age_s=9)

    typed = investigate_failures(db.operator_url, limit=3, since_s=3600)
    assert [f.status for f in typed.failures] == [TradeStatus.FAILED] * 3
    assert typed.summary.total == 4 and typed.summary.window.label == "1h"
    report = typed.as_dict()
    failures, summary = report["failures"], report["summary"]

    assert [f["id"] for f in failures] == [newest, middle, oldest]
    assert set(failures[0]) == {"id", "client_order_id", "symbol", "side", "quantity",
                                "status", "failure_reason", "venue", "created_at",
                                "updated_at"}
    assert [f["venue"] for f in failures] == ["alpha", "beta", "alpha"]
    assert failures[0]["failure_reason"] == CHAOS and failures[0]["status"] == "FAILED"
    assert summary["total"] == 4 and summary["shown"] == 3
    assert summary["by_reason"] == {"EXCHANGE_CONNECTION_FAILED": 2, "EXCHANGE_TIMEOUT": 1,
                                    "NO_COLON_REASON": 1}
    assert list(summary["by_reason"])[0] == "EXCHANGE_CONNECTION_FAILED"  # biggest first
    assert summary["by_symbol"] == {"AAPL": 3, "MSFT": 1}
    assert summary["by_venue"] == {"alpha": 2, "beta": 1, "unrouted": 1}  # biggest first
    assert summary["trades_in_window"] == 8
    assert summary["failure_ratio"] == 0.5
    assert summary["last_failure_at"] == failures[0]["created_at"]
    assert summary["first_failure_at"] < failures[-1]["created_at"]
    assert summary["window"]["label"] == "1h" and summary["window"]["seconds"] == 3600
    assert summary["window"]["since"] < summary["first_failure_at"] < summary["window"]["until"]
    json.dumps(report)


def test_failures_by_symbol_and_window(db, admin):
    add_trade(admin, symbol="MSFT", status="FAILED", reason=CHAOS, age_s=30)
    aapl = add_trade(admin, symbol="AAPL", status="FAILED", reason=CHAOS, age_s=30)
    add_trade(admin, symbol="AAPL", status="FILLED", fill_price="1", age_s=30)
    add_trade(admin, symbol="AAPL", status="FAILED", reason=CHAOS, age_s=400)

    report = investigate_failures(db.operator_url, since_s=300, symbol="AAPL").as_dict()
    assert [f["id"] for f in report["failures"]] == [aapl]
    assert report["summary"]["symbol"] == "AAPL"
    assert report["summary"]["by_symbol"] == {"AAPL": 1}
    assert report["summary"]["trades_in_window"] == 2
    assert report["summary"]["failure_ratio"] == 0.5


def test_no_failures_gives_an_empty_report(db, admin):
    add_trade(admin, status="FILLED", fill_price="1")
    report = investigate_failures(db.operator_url).as_dict()
    assert report["failures"] == []
    summary = report["summary"]
    assert (summary["total"], summary["trades_in_window"], summary["failure_ratio"]) == (0, 1, 0)
    assert summary["first_failure_at"] is None and summary["by_reason"] == {}


def test_bad_arguments_are_user_errors(db):
    with pytest.raises(TradelabError, match="limit"):
        investigate_failures(db.operator_url, limit=0)
    with pytest.raises(TradelabError, match="window"):
        investigate_failures(db.operator_url, since_s=0)
    with pytest.raises(TradelabError, match="at most 100 years"):
        investigate_failures(db.operator_url, since_s=1e15)
    window = investigate_failures(db.operator_url, since_s=0.5).as_dict()["summary"]["window"]
    assert window["label"] == "0.5s"


# -- connections -------------------------------------------------------------------

def test_connection_is_read_only_even_for_a_writing_role(db):
    with open_read_only(db.admin_url) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO trades (client_order_id, symbol, side, quantity,"
                         " request_hash) VALUES ('x', 'AAPL', 'BUY', 1, 'h')")


def test_bad_password_says_so(db):
    url = db.operator_url.replace(f":{db.operator_password}@", ":wrong-password@")
    with pytest.raises(TradelabError, match="refused the password") as info:
        investigate_failures(url)
    assert "wrong-password" not in str(info.value)


def test_unreachable_database_says_so():
    url = f"postgresql://tradelab_operator:pw@127.0.0.1:{free_port()}/tradelab"
    with pytest.raises(TradelabError, match="database unreachable") as info:
        find_trade(url, trade_id=1)
    assert ":***@" in str(info.value)


@pytest.mark.parametrize("template", [
    "host=127.0.0.1 port={port} user=tradelab_operator password=hunter2 dbname=tradelab",
    "postgresql://tradelab_operator@127.0.0.1:{port}/tradelab?password=hunter2",
])
def test_password_given_as_a_parameter_is_not_printed(template):
    with pytest.raises(TradelabError, match="database unreachable") as info:
        find_trade(template.format(port=free_port()), trade_id=1)
    assert "hunter2" not in str(info.value) and "password=***" in str(info.value)


def test_database_without_schema_says_to_migrate(pg):
    name = f"tl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.url("postgres", pg.password), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg.url("postgres", pg.password, name)
    with pytest.raises(TradelabError, match="tradelab db migrate"):
        investigate_failures(url)
    with pytest.raises(TradelabError, match="tradelab db migrate"):
        find_trade(url, trade_id=1)


# -- indexes -----------------------------------------------------------------------

def _scans(plan: dict) -> list[tuple[str, str | None]]:
    found = [(plan["Node Type"], plan.get("Relation Name") or plan.get("Index Name"))]
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


def test_operator_queries_use_indexes_on_a_month_of_trades(db, admin):
    # 20k trades over 30 days, 5% FAILED, two events each: the last hour is a sliver,
    # so a sequential scan would read everything to find it.
    admin.execute("""
        INSERT INTO trades (client_order_id, symbol, side, quantity, status, failure_reason,
                            request_hash, created_at, updated_at)
        SELECT 'gen-' || g, (ARRAY['AAPL','MSFT','GOOGL','AMZN'])[1 + g % 4], 'BUY', 1,
               CASE WHEN g % 20 = 0 THEN 'FAILED' ELSE 'FILLED' END,
               CASE WHEN g % 20 = 0 THEN 'EXCHANGE_CONNECTION_FAILED: CHAOS' END, 'h',
               now() - make_interval(secs => g * 130), now() - make_interval(secs => g * 130)
        FROM generate_series(1, 20000) AS g""")
    admin.execute("""
        INSERT INTO trade_events (trade_id, event, status, created_at)
        SELECT id, e, status, created_at FROM trades, unnest(ARRAY['accepted','executed']) e""")
    admin.execute("ANALYZE trades")
    admin.execute("ANALYZE trade_events")
    since = admin.execute("SELECT now() - interval '1 hour'").fetchone()[0]
    some_id = admin.execute("SELECT id FROM trades WHERE client_order_id = 'gen-77'").fetchone()[0]

    plans = {}
    for symbol in (None, "AAPL"):
        for name, sql in failure_queries(symbol).items():
            params = {"since": since, "symbol": symbol, "limit": 20}
            plans[f"{name}[{symbol}]"] = admin.execute(
                "EXPLAIN (FORMAT JSON) " + sql, params).fetchone()[0][0]["Plan"]
    for key, sql in FIND_TRADE_SQL.items():
        value = some_id if key == "id" else "gen-77"
        plans[f"find_trade[{key}]"] = admin.execute(
            "EXPLAIN (FORMAT JSON) " + sql, (value,)).fetchone()[0][0]["Plan"]
    plans["trade_events"] = admin.execute(
        "EXPLAIN (FORMAT JSON) " + TRADE_EVENTS_SQL, (some_id,)).fetchone()[0][0]["Plan"]

    for name, plan in plans.items():
        scans = _scans(plan)
        assert not [s for s in scans if s[0] == "Seq Scan"], (name, scans)
        assert any("Index" in node for node, _ in scans), (name, scans)
