"""`tradelab verify` on a real PostgreSQL: a clean run is ok; every planted defect is named.

A run here is what a load test leaves: orders placed through the API's own insert
(tradelab.app.trades.create_or_replay, as the app role), written to a real ledger, then
executed by the real engine. Defects are then planted as the database superuser (or in
the ledger) and `verify` (as the read-only operator role) must find each, by its order.
"""

from __future__ import annotations

import json
import random
import uuid
from types import SimpleNamespace

import psycopg
import pytest
from typer.testing import CliRunner

from tradelab.app.engine import Engine
from tradelab.app.trades import create_or_replay
from tradelab.cli.main import app
from tradelab.lab import Lab
from tradelab.loadtest._ledger import Ledger
from tradelab.settings import load_settings
from tradelab.verify import COUNT_KEYS, verify

SYMBOLS = ("AAPL", "MSFT")


class Run:
    """One load run: a ledger under the lab and the orders it placed in the database."""

    def __init__(self, db, lab: Lab, run_id: str = "20260101T000000Z-0001") -> None:
        self.db, self.lab, self.run_id = db, lab, run_id
        self.ledger = Ledger(lab.state_dir / "load", run_id)
        self.settings = load_settings(lab, env={}, flags={"engine.order_rate": 0})
        self.keys: list[str] = []
        self.ids: dict[str, int] = {}

    def order(self, **body) -> dict:
        order = {"client_order_id": f"load-{uuid.uuid4().hex}",
                 "symbol": random.choice(SYMBOLS), "side": random.choice(("BUY", "SELL")),
                 "quantity": random.randint(1, 500), "limit_price": None, **body}
        self.keys.append(order["client_order_id"])
        return order

    def place(self, n: int = 1, acknowledge: bool = True, **body) -> list[str]:
        """n orders attempted, inserted as the API does, acknowledged in the ledger."""
        placed = []
        with psycopg.connect(self.db.app_url, autocommit=True) as conn:
            for _ in range(n):
                order = self.order(**body)
                self.ledger.attempted(order)
                trade, _created = create_or_replay(conn, SimpleNamespace(**order), "h")
                self.ids[order["client_order_id"]] = trade["id"]
                if acknowledge:
                    self.ledger.acknowledged(order["client_order_id"], trade["id"], 201)
                placed.append(order["client_order_id"])
        return placed

    def execute(self) -> None:
        engine = Engine(self.settings, self.db.app_url, order_rate=0,
                        rng=random.Random(7))
        while engine.process_batch():
            pass
        engine.close()

    def admin(self, sql: str, params=()) -> None:
        with psycopg.connect(self.db.admin_url, autocommit=True) as conn:
            conn.execute(sql, params)

    def verify(self, **kwargs):
        self.ledger.close()
        return verify(self.settings, self.lab, database_url=self.db.operator_url, **kwargs)


@pytest.fixture
def run(db, tmp_path):
    run = Run(db, Lab(tmp_path / "lab"))
    run.place(30)
    run.place(10, limit_price=150.0)
    run.execute()
    return run


def kinds(report) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for v in report.violations:
        found.setdefault(v.kind, set()).add(v.client_order_id)
    return found


def test_a_clean_run_is_ok(run):
    # Never answered: one order the API never saw, one it committed.
    absent = run.order()
    run.ledger.attempted(absent)
    run.ledger.unanswered(absent["client_order_id"], 0, "ReadTimeout")
    run.place(1, acknowledge=False)
    report = run.verify()
    assert report.ok, report.violations
    assert set(report.counts) == set(COUNT_KEYS)
    assert report.counts["ok"] == 40
    assert report.counts["indeterminate_present"] == report.counts["indeterminate_absent"] == 1
    assert report.run_id == run.run_id
    assert report.checked["trades"] == 41
    assert json.loads(json.dumps(report.as_dict()))["ok"] is True


def test_a_lost_order_is_named(run):
    lost = run.keys[3]
    trade_id = run.ids[lost]
    run.admin("DELETE FROM trade_events WHERE trade_id = %s", (trade_id,))
    run.admin("DELETE FROM trades WHERE id = %s", (trade_id,))
    report = run.verify()
    assert not report.ok
    assert kinds(report) == {"lost": {lost}}
    assert report.counts["lost"] == 1 and report.counts["ok"] == 39
    assert report.violations[0].trade_id == trade_id


@pytest.mark.parametrize("column,value", [("symbol", "TSLA"), ("quantity", 999_999),
                                          ("side", None), ("limit_price", 151.5)])
def test_an_altered_order_is_named(run, column, value):
    altered = run.keys[35]  # a limit order
    if column == "side":
        run.admin("UPDATE trades SET side = CASE side WHEN 'BUY' THEN 'SELL' ELSE 'BUY' END"
                  " WHERE client_order_id = %s", (altered,))
    else:
        run.admin(f"UPDATE trades SET {column} = %s WHERE client_order_id = %s",
                  (value, altered))
    report = run.verify()
    assert kinds(report).get("altered") == {altered}
    assert column in next(v.detail for v in report.violations if v.kind == "altered")
    assert report.counts["altered"] == 1


def test_an_unanswered_order_stored_with_another_body_is_altered(run):
    [key] = run.place(1, acknowledge=False)
    run.admin("UPDATE trades SET quantity = quantity + 1 WHERE client_order_id = %s", (key,))
    assert kinds(run.verify()) == {"altered": {key}}


def test_an_unexpected_load_row_is_named_and_the_engines_flow_is_not(run):
    stray = f"load-{uuid.uuid4().hex}"
    with psycopg.connect(run.db.app_url, autocommit=True) as conn:
        create_or_replay(conn, SimpleNamespace(client_order_id=stray, symbol="AAPL",
                                               side="BUY", quantity=1, limit_price=None), "h")
    engine = Engine(run.settings, run.db.app_url, order_rate=0)
    engine.submit_orders(5)  # the background flow: not load rows
    engine.close()
    report = run.verify()
    assert kinds(report) == {"unexpected": {stray}}
    assert report.counts["unexpected"] == 1


def test_a_key_acknowledged_with_two_trade_ids_is_a_duplicate(run):
    key = run.keys[0]
    run.ledger.acknowledged(key, run.ids[key] + 1000, 200)  # a replay with another id
    [other] = run.place(1, acknowledge=False)
    second = Ledger(run.lab.state_dir / "load", run.run_id)  # another worker's file
    second.acknowledged(other, run.ids[run.keys[2]], 201)  # answered with someone else's
    second.close()
    report = run.verify()
    assert kinds(report) == {"duplicate": {key, other}}
    assert report.counts["duplicate"] == 2
    assert any("stored as trade" in v.detail for v in report.violations)


def test_a_key_stored_twice_is_a_duplicate(run):
    # Only possible if the unique index went missing: plant exactly that.
    key = run.keys[5]
    run.admin("ALTER TABLE trades DROP CONSTRAINT trades_client_order_id_key")
    run.admin("INSERT INTO trades (client_order_id, symbol, side, quantity, source,"
              " request_hash) SELECT client_order_id, symbol, side, quantity, source,"
              " request_hash FROM trades WHERE client_order_id = %s", (key,))
    run.admin("INSERT INTO trade_events (trade_id, event, status) SELECT max(id),"
              " 'received', 'NEW' FROM trades")
    report = run.verify()
    assert kinds(report).get("duplicate") == {key}
    assert "stored 2 times" in next(v.detail for v in report.violations)


def test_a_trade_left_new_while_the_engine_works_is_named(db, tmp_path):
    # No load run: the invariants alone, over every trade.
    run = Run(db, Lab(tmp_path / "lab"))
    run.place(3)
    run.execute()
    [stuck] = run.place(1)
    run.place(3)
    run.admin("UPDATE trades SET created_at = created_at - interval '10 minutes'"
              " WHERE client_order_id = %s", (stuck,))
    run.admin("UPDATE trade_events SET created_at = created_at - interval '10 minutes'"
              " WHERE trade_id = %s", (run.ids[stuck],))
    # The engine skips it (as a bug would) and executes the younger ones.
    run.admin("ALTER TABLE trades DROP CONSTRAINT trades_status_check")
    run.admin("UPDATE trades SET status = 'HELD' WHERE client_order_id = %s", (stuck,))
    run.execute()
    run.admin("UPDATE trades SET status = 'NEW' WHERE client_order_id = %s", (stuck,))
    (run.lab.state_dir / "load" / run.run_id).rename(tmp_path / "elsewhere")
    report = verify(run.settings, run.lab, database_url=db.operator_url)
    assert report.run_id is None
    assert kinds(report) == {"left_new": {stuck}}
    # A backlog the engine has not reached yet (nothing younger finished) is no violation.
    run.place(2)
    assert kinds(verify(run.settings, run.lab, database_url=db.operator_url)) == {
        "left_new": {stuck}}
    # With a window longer than the engine worked past it, it is not flagged either.
    assert verify(run.settings, run.lab, healthy_for_s=3600,
                  database_url=db.operator_url).ok


@pytest.mark.parametrize("plant,words", [
    ("DELETE FROM trade_events WHERE trade_id = %(id)s AND event <> 'received'",
     "0 final events"),
    ("INSERT INTO trade_events (trade_id, event, status, created_at) SELECT %(id)s,"
     " 'filled', 'FILLED', clock_timestamp() + interval '1 second'", "2 final events"),
    ("UPDATE trade_events SET created_at = created_at - interval '1 hour'"
     " WHERE trade_id = %(id)s AND event <> 'received'", "timed before"),
    ("DELETE FROM trade_events WHERE trade_id = %(id)s AND event = 'received'",
     "not received/NEW"),
    ("UPDATE trade_events SET status = 'REJECTED' WHERE trade_id = %(id)s"
     " AND event <> 'received'", "final event says REJECTED"),
    ("INSERT INTO trade_events (trade_id, event, status, created_at) SELECT %(id)s,"
     " 'note', 'NEW', clock_timestamp() + interval '1 second'", "followed by note"),
])
def test_a_broken_event_trail_is_named(run, plant, words):
    with psycopg.connect(run.db.operator_url) as conn:
        key, trade_id = conn.execute("SELECT client_order_id, id FROM trades"
                                     " WHERE status = 'FILLED' ORDER BY id LIMIT 1").fetchone()
    run.admin(plant, {"id": trade_id})
    report = run.verify()
    assert kinds(report) == {"broken_trail": {key}}, report.violations
    assert words in report.violations[0].detail
    assert report.invariants["broken_trail"] == 1


@pytest.mark.parametrize("side,fill", [("BUY", 150.01), ("SELL", 149.99), ("BUY", None)])
def test_a_fill_outside_its_limit_is_named(run, side, fill):
    run.place(1, limit_price=150.0, side=side)
    run.execute()
    with psycopg.connect(run.db.operator_url) as conn:
        key = conn.execute("SELECT client_order_id FROM trades WHERE limit_price = 150"
                           " AND side = %s ORDER BY id DESC LIMIT 1", (side,)).fetchone()[0]
    run.admin("UPDATE trades SET status = 'FILLED', fill_price = %s"
              " WHERE client_order_id = %s", (fill, key))
    run.admin("UPDATE trade_events SET status = 'FILLED', event = 'filled'"
              " WHERE trade_id = (SELECT id FROM trades WHERE client_order_id = %s)"
              " AND event <> 'received'", (key,))
    report = run.verify()
    assert kinds(report) == {"outside_limit": {key}}, report.violations
    if fill is not None:
        assert f"filled at {fill} " in report.violations[0].detail
    # At the limit itself is a fair fill.
    if fill is not None:
        run.admin("UPDATE trades SET fill_price = 150 WHERE client_order_id = %s", (key,))
        assert run.verify().ok


def test_the_cli_prints_the_table_and_names_the_orders(run, monkeypatch):
    lost = run.keys[0]
    run.admin("DELETE FROM trade_events WHERE trade_id = %s", (run.ids[lost],))
    run.admin("DELETE FROM trades WHERE id = %s", (run.ids[lost],))
    run.ledger.close()
    monkeypatch.delenv("TRADELAB_DATABASE_URL", raising=False)
    args = ["--lab-dir", str(run.lab.root), "verify", "--database-url", run.db.operator_url]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: 1 violations: 1 lost ({lost})\n"
    assert "lost" in result.stdout and lost in result.stdout
    as_json = CliRunner().invoke(app, [*args, "--json", "--run", run.run_id])
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert data["counts"]["lost"] == 1 and data["violations"][0]["client_order_id"] == lost


def test_a_bad_run_id_is_one_line(run):
    for run_id, words in (("../etc", "invalid run id"), ("20990101T000000Z-ffff", "no load run")):
        result = CliRunner().invoke(app, ["--lab-dir", str(run.lab.root), "verify", "--run",
                                          run_id, "--database-url", run.db.operator_url])
        assert result.exit_code == 1
        assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
