"""Trading operations on a real PostgreSQL: venues and failover, market data, pre-trade
risk, positions, and the `tradelab ops` levers with their audit trail."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from tradelab.app.api import create_app
from tradelab.app.engine import Engine, EngineMetrics
from tradelab.audit import read_audit
from tradelab.chaos_state import ChaosReader, ChaosStore
from tradelab.lab import Lab
from tradelab.levers_state import LeverReader, LeverStore
from tradelab.positions import positions
from tradelab.settings import load_settings

runner = CliRunner()
# No baseline failures anywhere: every FAILED below is the fault's doing.
QUIET = {"engine.baseline_failure_rate": 0.0, "trading.venues.beta.baseline_failure_rate": 0.0,
         "engine.order_rate": 0}


def settings(**flags):
    return load_settings(None, flags={**QUIET, **flags}, env={})


def query(url, sql, params=()):
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def make_engine(db, state: Path, s=None, **kw):
    s = s or settings()
    chaos = ChaosReader(state / "chaos.json", flag_dir=state, check_interval_s=0)
    levers = LeverReader(state / "levers.json")
    levers._file.check_interval_s = 0
    return Engine(s, db.app_url, chaos=chaos, metrics=EngineMetrics(chaos), levers=levers,
                  rng=random.Random(7), **kw)


def submit(engine, orders):
    """Insert orders as the API would (NEW + received event); their ids."""
    ids = []
    with psycopg.connect(engine.url, autocommit=True) as conn:
        for i, (symbol, side, qty, limit) in enumerate(orders):
            ids.append(conn.execute(
                "INSERT INTO trades (client_order_id, symbol, side, quantity, limit_price,"
                " request_hash) VALUES (%s, %s, %s, %s, %s, 'h') RETURNING id",
                (f"t-{time.monotonic_ns()}-{i}", symbol, side, qty, limit)).fetchone()[0])
    return ids


def drain(engine):
    while engine.process_batch():
        pass


def outcomes(db, ids):
    return {r[0]: r[1:] for r in query(
        db.admin_url, "SELECT id, status, venue,"
        " coalesce(split_part(failure_reason, ':', 1), '')"
        " FROM trades WHERE id = ANY(%s)", (ids,))}


@pytest.fixture
def state(tmp_path):
    path = tmp_path / "state"
    path.mkdir()
    return path


def test_failover_stops_a_venues_failures(db, state):
    engine = make_engine(db, state)
    ChaosStore(state / "chaos.json").enable("exchange-errors", rate=1.0, venue="alpha")
    first = submit(engine, [("AAPL", "BUY", 10, None)] * 20)
    drain(engine)
    assert {o for o in outcomes(db, first).values()} == {
        ("FAILED", "alpha", "EXCHANGE_CONNECTION_FAILED")}

    LeverStore(state / "levers.json").route("beta", symbol=None)
    second = submit(engine, [("AAPL", "BUY", 10, None)] * 20)
    drain(engine)
    assert {o for o in outcomes(db, second).values()} == {("FILLED", "beta", "")}
    events = query(db.admin_url, "SELECT detail->>'venue' FROM trade_events"
                   " WHERE trade_id = ANY(%s) AND event = 'filled'", (second,))
    assert {e[0] for e in events} == {"beta"}
    sample = engine.metrics.venue_orders.labels(venue="alpha", status="FAILED")._value.get()
    assert sample == 20


def test_stale_market_data_is_rejected_with_its_reason_and_failover_fixes_it(db, state):
    engine = make_engine(db, state, settings(**{"trading.max_price_age_s": 0.3}))
    ChaosStore(state / "chaos.json").enable("market-data-stale", venue="alpha")
    engine.process_batch()  # a tick with the feed frozen
    time.sleep(0.5)
    stale = submit(engine, [("MSFT", "BUY", 5, None)] * 3)
    drain(engine)
    assert set(outcomes(db, stale).values()) == {("REJECTED", "alpha", "STALE_MARKET_DATA")}
    ages = engine.venues.ages()
    assert ages[("alpha", "MSFT")] > 0.3 > ages[("beta", "MSFT")]
    assert engine.metrics.risk_rejections.labels(reason="STALE_MARKET_DATA")._value.get() == 3

    LeverStore(state / "levers.json").route("beta", symbol="MSFT")
    fresh = submit(engine, [("MSFT", "BUY", 5, None)] * 3)
    drain(engine)
    assert set(outcomes(db, fresh).values()) == {("FILLED", "beta", "")}


def test_risk_limits_reject_what_they_should_and_nothing_else(db, state):
    s = settings(**{"trading.risk.max_quantity": 1000, "trading.risk.max_notional": 150_000,
                    "trading.risk.price_band": 0.05, "trading.risk.max_position": 1500})
    engine = make_engine(db, state, s)
    market = engine.venues.quote("alpha", "AAPL").price  # about 190
    cases = {
        "QUANTITY_LIMIT": ("AAPL", "BUY", 1001, None),
        "NOTIONAL_LIMIT": ("AAPL", "BUY", 900, None),  # 900 x 190 > 150k
        "PRICE_BAND": ("AAPL", "BUY", 10, round(market * 1.2, 2)),  # aggressive, 20% through
    }
    # a passive limit far from the market is not a risk breach (the venue answers it)
    passive = ("AAPL", "BUY", 10, round(market * 0.5, 2))
    ids = dict(zip(cases, submit(engine, list(cases.values())), strict=True))
    drain(engine)
    got = outcomes(db, list(ids.values()))
    for reason, trade_id in ids.items():
        assert got[trade_id] == ("REJECTED", "alpha", reason), reason

    [buy] = submit(engine, [("AAPL", "BUY", 700, None)])  # filled: position 700
    drain(engine)
    [more] = submit(engine, [("AAPL", "BUY", 700, None)])  # 1400: still inside
    drain(engine)
    [beyond] = submit(engine, [("AAPL", "BUY", 200, None)])  # 1600 > 1500
    drain(engine)
    # The limit is lowered below the position held: reducing is still allowed, adding not.
    tighter = make_engine(db, state, settings(**{"trading.risk.max_position": 1000}))
    [reduce] = submit(tighter, [("AAPL", "SELL", 200, None)])  # 1400 -> 1200, still > 1000
    drain(tighter)
    [far] = submit(engine, [passive])
    drain(engine)
    got = outcomes(db, [buy, more, beyond, reduce, far])
    assert got[buy][0] == got[more][0] == got[reduce][0] == "FILLED"
    assert got[beyond] == ("REJECTED", "alpha", "POSITION_LIMIT")
    assert got[far] == ("REJECTED", "alpha", "LIMIT_NOT_REACHABLE")
    counts = {r: engine.metrics.risk_rejections.labels(reason=r)._value.get()
              for r in ("QUANTITY_LIMIT", "NOTIONAL_LIMIT", "PRICE_BAND", "POSITION_LIMIT")}
    assert counts == {"QUANTITY_LIMIT": 1, "NOTIONAL_LIMIT": 1, "PRICE_BAND": 1,
                      "POSITION_LIMIT": 1}
    trail = query(db.admin_url, "SELECT event, detail->>'reason' FROM trade_events"
                  " WHERE trade_id = %s ORDER BY id", (beyond,))
    assert trail[-1] == ("rejected", "POSITION_LIMIT")


def test_positions_equal_the_sum_of_fills(db, state):
    engine = make_engine(db, state, order_rate=0)
    LeverStore(state / "levers.json").route("beta", symbol="MSFT")
    engine.submit_orders(300)
    drain(engine)
    report = positions(db.operator_url)
    fills = query(db.admin_url, "SELECT symbol, venue, side, quantity, fill_price FROM trades"
                  " WHERE status = 'FILLED'")
    assert fills, "the flow filled nothing"
    expected: Counter = Counter()
    notional: Counter = Counter()
    for symbol, venue, side, qty, price in fills:
        sign = 1 if side == "BUY" else -1
        expected[(symbol, venue)] += sign * qty
        notional[(symbol, venue)] += sign * qty * float(price)
    got = {(p["symbol"], p["venue"]): p for p in report["positions"]}
    assert {k: p["net_quantity"] for k, p in got.items()} == dict(expected)
    for key, value in notional.items():
        assert got[key]["net_notional"] == pytest.approx(value, abs=0.01)
    assert {k[1] for k in got if k[0] == "MSFT"} == {"beta"}
    # the engine's table, which pre-trade risk reads, agrees with the fills
    table = {(s, v): q for s, v, q in query(
        db.admin_url, "SELECT symbol, venue, net_quantity FROM positions")}
    assert table == {k: v for k, v in expected.items()}


def test_halt_refuses_new_orders_and_loses_none_acknowledged(db, lab_dir, state):
    lab = Lab.from_flag(lab_dir)
    app = create_app(load_settings(lab, env={}), lab=lab, database_url=db.app_url)
    client = app.test_client()
    order = {"client_order_id": "before-halt", "symbol": "AAPL", "side": "BUY",
             "quantity": 10}
    assert client.post("/trades", json=order).status_code == 201

    result = runner.invoke(_app(), ["ops", "halt", "--symbol", "AAPL", "--json"])
    assert result.exit_code == 0, result.output
    time.sleep(0.6)  # the api polls the lever file every half second
    refused = client.post("/trades", json={**order, "client_order_id": "during-halt"})
    assert refused.status_code == 503
    assert refused.get_json()["error"] == "trading_halted"
    assert refused.headers["Retry-After"]
    assert set(refused.get_json()) == {"error", "message", "details"}
    other = client.post("/trades", json={**order, "client_order_id": "msft",
                                         "symbol": "MSFT"})
    assert other.status_code == 201  # a symbol halt halts that symbol only

    engine = make_engine(db, lab.state_dir)
    drain(engine)
    status = dict(query(db.admin_url, "SELECT client_order_id, status FROM trades"))
    assert status == {"before-halt": "NEW", "msft": "FILLED"}

    assert runner.invoke(_app(), ["ops", "resume"]).exit_code == 0
    time.sleep(0.6)
    drain(engine)
    status = dict(query(db.admin_url, "SELECT client_order_id, status FROM trades"))
    assert status == {"before-halt": "FILLED", "msft": "FILLED"}
    assert client.post("/trades", json={**order, "client_order_id": "after"}).status_code == 201


def test_a_lab_wide_halt_stops_the_engine_sending(db, state):
    engine = make_engine(db, state)
    ids = submit(engine, [("AAPL", "BUY", 1, None), ("JPM", "SELL", 1, None)])
    LeverStore(state / "levers.json").halt(None)
    assert engine.process_batch() == 0
    assert {o[0] for o in outcomes(db, ids).values()} == {"NEW"}
    LeverStore(state / "levers.json").resume(None)
    drain(engine)
    assert {o[0] for o in outcomes(db, ids).values()} == {"FILLED"}


def test_requeue_puts_stuck_orders_first_once(db, lab_dir):
    old = query(db.admin_url, "INSERT INTO trades (client_order_id, symbol, side, quantity,"
                " request_hash, created_at) VALUES ('old', 'AAPL', 'BUY', 1, 'h',"
                " now() - interval '10 minutes') RETURNING id")[0][0]
    query(db.admin_url, "INSERT INTO trades (client_order_id, symbol, side, quantity,"
          " request_hash) VALUES ('young', 'AAPL', 'BUY', 1, 'h')")
    args = ["ops", "requeue", "--stuck-for", "5m", "--database-url", db.app_url, "--json"]
    first = runner.invoke(_app(), args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["trade_ids"] == [old]
    again = json.loads(runner.invoke(_app(), args).output)
    assert again["requeued"] == 0 and again["already_requeued_still_new"] == 1
    events = query(db.admin_url, "SELECT event FROM trade_events WHERE trade_id = %s", (old,))
    assert events == [("requeued",)]


def test_db_sessions_kill_frees_a_held_connection(db, lab_dir):
    held = psycopg.connect(db.app_url, application_name="stuck-client")
    held.execute("SELECT 1")  # opens a transaction, then sits idle in it
    pid = held.info.backend_pid
    listed = runner.invoke(_app(), ["ops", "db", "sessions", "--database-url",
                                    db.operator_url, "--json"])
    assert listed.exit_code == 0, listed.output
    sessions = {s["pid"]: s for s in json.loads(listed.output)["sessions"]}
    assert sessions[pid]["state"] == "idle in transaction"
    assert sessions[pid]["application_name"] == "stuck-client"

    denied = runner.invoke(_app(), ["ops", "db", "sessions", "--kill", str(pid),
                                    "--database-url", db.operator_url])
    assert denied.exit_code == 1  # the read-only role cannot terminate anything
    killed = runner.invoke(_app(), ["ops", "db", "sessions", "--kill-idle-in-transaction",
                                    "--database-url", db.admin_url, "--json"])
    assert killed.exit_code == 0, killed.output
    assert pid in json.loads(killed.output)["killed"]
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    unknown = runner.invoke(_app(), ["ops", "db", "sessions", "--kill", "1",
                                     "--database-url", db.admin_url])
    assert unknown.exit_code == 1 and "no client session with pid 1" in unknown.output


def test_every_lever_is_in_the_audit_log(db, lab_dir):
    commands = [
        ["ops", "halt", "--symbol", "AAPL"], ["ops", "resume"],
        ["ops", "route", "--venue", "beta"], ["ops", "route", "--venue", "nowhere"],
        ["ops", "requeue", "--stuck-for", "1h", "--database-url", db.app_url],
        ["ops", "db", "sessions", "--database-url", db.operator_url],  # a read: not audited
        ["ops", "db", "sessions", "--kill-idle-in-transaction", "--database-url",
         db.admin_url],
        ["ops", "restart", "engine"],  # no lab running: an error, audited all the same
        ["chaos", "on", "exchange-errors", "--venue", "alpha"], ["chaos", "off"],
    ]
    for args in commands:
        runner.invoke(_app(), args)
    log = read_audit(Lab.from_flag(lab_dir))
    assert [e["command"] for e in log] == [
        "ops halt", "ops resume", "ops route", "ops route", "ops requeue",
        "ops db sessions", "ops restart", "chaos on", "chaos off"]
    assert [e["outcome"] for e in log] == ["ok", "ok", "ok", "error", "ok", "ok", "error",
                                           "ok", "ok"]
    assert log[0]["arguments"] == ["--symbol", "AAPL"]
    assert "***" in log[4]["arguments"][3] and db.app_password not in json.dumps(log)
    assert all(e["time"].endswith("Z") for e in log)

    from tradelab.audit import AuditCollector, audit_path

    counts = AuditCollector(audit_path(Lab.from_flag(lab_dir))).counts()
    assert counts["ops route"] == 2 and counts["chaos on"] == 1 and counts["ops halt"] == 1


def test_a_restarted_process_does_not_have_a_wedged_process_fault(state):
    from datetime import UTC, datetime

    store = ChaosStore(state / "chaos.json")
    store.enable("engine-stall")
    store.enable("exchange-errors", rate=1.0)
    before = ChaosReader(state / "chaos.json", check_interval_s=0)
    restarted = ChaosReader(state / "chaos.json", check_interval_s=0,
                            started_at=datetime.now(UTC))
    assert {"engine-stall", "exchange-errors"} <= set(before.active())
    assert set(restarted.active()) == {"exchange-errors"}  # not cured by a restart


def test_a_persisting_fault_outlives_its_trigger_in_the_processes_it_hit(state):
    from datetime import UTC, datetime

    from tradelab.errors import TradelabError

    store = ChaosStore(state / "chaos.json")
    hit = ChaosReader(state / "chaos.json", check_interval_s=0, started_at=datetime.now(UTC))
    store.enable("engine-stall", duration_s=0.5, persists=True)
    store.enable("api-errors", duration_s=0.5)  # the same trigger, not persisting
    time.sleep(0.2)
    restarted_during_trigger = ChaosReader(state / "chaos.json", check_interval_s=0,
                                           started_at=datetime.now(UTC))
    assert set(hit.active()) == {"engine-stall", "api-errors"}
    assert set(restarted_during_trigger.active()) == {"engine-stall"}  # the trigger hits it
    time.sleep(0.5)  # the trigger is over
    restarted_after = ChaosReader(state / "chaos.json", check_interval_s=0,
                                  started_at=datetime.now(UTC))
    assert set(hit.active()) == {"engine-stall"}  # still wedged; api-errors ended
    assert set(restarted_during_trigger.active()) == {"engine-stall"}
    assert restarted_after.active() == {}  # a restart after the trigger clears it
    assert set(store.active()) == {"engine-stall"}  # the record stays until `chaos off`
    store.disable("engine-stall")
    assert hit.active() == {}
    with pytest.raises(TradelabError, match="takes no --persist"):
        store.enable("exchange-errors", persists=True)


def _app():
    from tradelab.cli.main import app

    return app
