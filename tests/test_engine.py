"""The execution engine on a real PostgreSQL: exactly-once execution, outcomes, chaos,
metrics that match the database, and surviving a database outage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
import requests
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families
from support.polling import wait_for

from tradelab.app.engine import Engine, EngineMetrics
from tradelab.app.exchange import CHAOS_MESSAGE, Order, SimulatedExchange
from tradelab.chaos_state import ChaosReader, ChaosStore
from tradelab.faults import FAULTS
from tradelab.settings import load_settings


def settings(**flags):
    return load_settings(None, flags=flags, env={})


def query(url, sql, params=()):
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def scrape(port) -> dict[tuple[str, tuple], float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def chaos_file(tmp_path):
    return tmp_path / "state" / "chaos.json"


def make_engine(s, url, chaos_file, tmp_path, **kw):
    reader = ChaosReader(chaos_file, flag_dir=tmp_path, check_interval_s=0.1)
    return Engine(s, url, chaos=reader, **kw)


# -- the exchange alone ---------------------------------------------------------------------

def test_exchange_outcomes_have_reasons_and_follow_the_rules():
    import random

    ex = SimulatedExchange(["AAPL"], latency_ms=(5, 30), baseline_failure_rate=0,
                           rng=random.Random(7))
    market = ex.price("AAPL")
    assert ex.execute(Order("AAPL", "BUY", 10), {}).status == "FILLED"
    far_below = ex.execute(Order("AAPL", "BUY", 10, market * 0.5), {})
    assert (far_below.status, far_below.reason) == ("REJECTED", "LIMIT_NOT_REACHABLE")
    far_above = ex.execute(Order("AAPL", "SELL", 10, market * 2), {})
    assert (far_above.status, far_above.reason) == ("REJECTED", "LIMIT_NOT_REACHABLE")
    huge = ex.execute(Order("AAPL", "BUY", 1_000_000), {})
    assert (huge.status, huge.reason) == ("REJECTED", "INSUFFICIENT_LIQUIDITY")
    generous = ex.execute(Order("AAPL", "BUY", 10, market * 2), {})
    assert generous.status == "FILLED" and generous.fill_price <= market * 1.01
    for o in (far_below, huge, generous):
        assert 0.005 <= o.latency_s <= 0.030 and o.detail()["reason"]


def test_prices_stay_positive_and_near_their_anchor_over_days_of_idle_steps():
    """The engine asks for a price whenever it runs: after a night idle, or every few
    hours for days. Each gap is one step of the model, so the step must be exact."""
    import math
    import random

    now = [0.0]
    rng = random.Random(11)
    ex = SimulatedExchange(["AAPL"], latency_ms=(5, 30), baseline_failure_rate=0,
                           rng=rng, clock=lambda: now[0])
    anchor = ex.price("AAPL")
    gaps = []
    for _ in range(3000):
        now[0] += rng.choice((1.0, 60.0, 3 * 3600.0, 10 * 3600.0, 3 * 86400.0))
        market = ex.price("AAPL")
        assert math.isfinite(market) and market > 0
        gaps.append(math.log(market / anchor))
        # A SELL limit (the order whose check divides by the market) always has an answer.
        assert ex.execute(Order("AAPL", "SELL", 10, market * 1.005), {}).status == "FILLED"
    assert max(abs(g) for g in gaps) < 0.15  # the spread is about 1.7%: nine sigmas
    spread = math.sqrt(sum(g * g for g in gaps) / len(gaps))
    assert 0.01 < spread < 0.025


# -- exactly once -----------------------------------------------------------------------------

def test_two_engines_execute_every_trade_exactly_once(db, chaos_file, tmp_path):
    s = settings(**{"engine.batch_size": 10, "engine.order_rate": 0})
    ChaosStore(chaos_file).enable("exchange-errors", rate=0.3)  # a mix of outcomes
    seeder = make_engine(s, db.app_url, chaos_file, tmp_path)
    ids = seeder.submit_orders(300)
    seeder.close()

    engines = [make_engine(s, db.app_url, chaos_file, tmp_path) for _ in range(2)]
    stop = threading.Event()
    threads = [threading.Thread(target=e.run, args=(stop,)) for e in engines]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: query(db.app_url, "SELECT count(*) FROM trades WHERE status = 'NEW'")
                 [0][0] == 0, timeout=60, what="the backlog to drain")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)

    rows = query(db.app_url, """
        SELECT t.id, t.status, t.failure_reason, count(e.id), min(e.status), min(e.event),
               min(e.detail ->> 'reason')
        FROM trades t LEFT JOIN trade_events e ON e.trade_id = t.id AND e.event <> 'received'
        GROUP BY t.id""")
    assert sorted(r[0] for r in rows) == sorted(ids)
    for trade_id, status, failure_reason, n_events, ev_status, event, reason in rows:
        assert n_events == 1, f"trade {trade_id} executed {n_events} times"
        assert ev_status == status and event == status.lower()
        assert reason, f"trade {trade_id} has no reason code"
        assert (failure_reason is None) == (status == "FILLED")
    statuses = Counter(r[1] for r in rows)
    assert statuses["FAILED"] > 0 and statuses["FILLED"] > 0

    per_engine = [sum(e.metrics.processed.labels(status=st)._value.get()
                      for st in ("FILLED", "REJECTED", "FAILED")) for e in engines]
    assert sum(per_engine) == 300
    assert all(n > 0 for n in per_engine), per_engine  # both shared the backlog


def test_exchange_errors_at_full_rate_fail_everything_with_the_chaos_message(
        db, chaos_file, tmp_path):
    s = settings(**{"engine.order_rate": 0})
    ChaosStore(chaos_file).enable("exchange-errors", rate=1.0)
    engine = make_engine(s, db.app_url, chaos_file, tmp_path)
    engine.submit_orders(50)
    while engine.process_batch():
        pass
    engine.close()
    rows = query(db.app_url, """
        SELECT t.status, t.failure_reason, e.event, e.detail,
               extract(epoch FROM e.created_at - t.created_at) * 1000
        FROM trades t
        JOIN trade_events e ON e.trade_id = t.id AND e.event <> 'received'""")
    assert len(rows) == 50
    for status, failure_reason, event, detail, event_after_ms in rows:
        assert status == "FAILED" and event == "failed"
        # the timeline shows when the exchange answered, not when the batch began
        assert event_after_ms >= detail["latency_ms"]
        assert CHAOS_MESSAGE in failure_reason
        assert detail["reason"] == "EXCHANGE_CONNECTION_FAILED"
        assert detail["message"] == CHAOS_MESSAGE


def test_chaos_changes_reach_a_running_engine(db, chaos_file, tmp_path):
    s = settings(**{"engine.order_rate": 20, "engine.poll_interval_s": 0.05})
    store = ChaosStore(chaos_file)
    engine = make_engine(s, db.app_url, chaos_file, tmp_path)
    stop = threading.Event()
    thread = threading.Thread(target=engine.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: query(db.app_url, "SELECT count(*) FROM trades WHERE status <> 'NEW'")
                 [0][0] > 5, what="the engine to process the flow")
        store.enable("exchange-errors", rate=1.0)
        turned_on = query(db.app_url, "SELECT now()")[0][0]
        wait_for(lambda: query(db.app_url, "SELECT count(*) FROM trades WHERE failure_reason"
                               " LIKE %s AND updated_at > %s", (f"%{CHAOS_MESSAGE}", turned_on))
                 [0][0] > 0, what="CHAOS failures after chaos on")

        store.disable()
        store.enable("engine-stall")
        wait_for(lambda: engine.metrics.last_batch._value.get() < time.time() - 1.0,
                 what="the engine to stall")
        stalled = query(db.app_url, "SELECT count(*) FROM trades WHERE status = 'NEW'")[0][0]
        wait_for(lambda: query(db.app_url, "SELECT count(*) FROM trades WHERE status = 'NEW'")
                 [0][0] > stalled + 5, what="the backlog to grow while stalled")

        store.disable("engine-stall")
        wait_for(lambda: query(db.app_url, "SELECT count(*) FROM trades WHERE status = 'NEW'")
                 [0][0] < 5, what="the backlog to drain after the stall")
    finally:
        stop.set()
        thread.join(30)


def test_chaos_flag_file_turns_the_default_fault_on(db, chaos_file, tmp_path):
    (tmp_path / "chaos.flag").touch()
    engine = make_engine(settings(**{"engine.order_rate": 0}), db.app_url, chaos_file, tmp_path)
    engine.submit_orders(200)
    while engine.process_batch():
        pass
    engine.close()
    failed = query(db.app_url, "SELECT count(*) FROM trades WHERE failure_reason LIKE %s",
                   (f"%{CHAOS_MESSAGE}",))[0][0]
    assert 80 <= failed <= 160  # rate 0.6 of 200, with room for chance


# -- metrics ----------------------------------------------------------------------------------

def test_metrics_pass_promtool_and_match_the_database(db, chaos_file, tmp_path):
    from prometheus_client import start_http_server

    s = settings(**{"engine.order_rate": 0})
    ChaosStore(chaos_file).enable("exchange-errors", rate=0.5)
    reader = ChaosReader(chaos_file, flag_dir=tmp_path)
    metrics = EngineMetrics(reader)
    engine = Engine(s, db.app_url, chaos=reader, metrics=metrics)
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    try:
        fresh = scrape(port)
        for st in ("FILLED", "REJECTED", "FAILED"):  # present at 0 before the first trade
            assert fresh[("tradelab_trades_processed_total", (("status", st),))] == 0
        engine.submit_orders(120)
        engine.process_batch()  # leave some NEW for the backlog gauge
        engine.refresh_gauges()
        engine.close()
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        m = scrape(port)
    finally:
        server.shutdown()
        server.server_close()

    promtool = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                              capture_output=True)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr

    by_status = dict(query(db.app_url, "SELECT status, count(*) FROM trades GROUP BY status"))
    for st in ("FILLED", "REJECTED", "FAILED"):
        assert m[("tradelab_trades_processed_total", (("status", st),))] == by_status.get(st, 0)
    assert m[("tradelab_order_backlog", ())] == by_status["NEW"] == 120 - s.engine.batch_size
    assert m[("tradelab_orders_received_total", (("source", "engine"),))] == 120
    assert m[("tradelab_trade_processing_duration_seconds_count", ())] == s.engine.batch_size
    assert m[("tradelab_oldest_pending_order_age_seconds", ())] >= 0
    assert m[("tradelab_db_up", ())] == 1
    for fault in FAULTS:
        expected = 1 if fault == "exchange-errors" else 0
        assert m[("tradelab_chaos_active", (("fault", fault),))] == expected
    assert m[("tradelab_engine_last_batch_timestamp_seconds", ())] > 0
    assert any(k[0] == "tradelab_build_info" for k in m)


# -- the real process: signals, logs, database outage --------------------------------------------

def start_engine_process(db, tmp_path, port, chaos_file, order_rate=10):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELAB_")}
    env.update(TRADELAB_DATABASE_URL=db.app_url, TRADELAB_CHAOS_FILE=str(chaos_file),
               TRADELAB_ENGINE__ORDER_RATE=str(order_rate), TRADELAB_HOME=str(tmp_path / "lab"))
    code = ("import sys; from tradelab.lab import Lab; from tradelab.settings import load_settings;"
            "from tradelab.app.engine import main; lab = Lab.from_flag(None);"
            "main(load_settings(lab), lab, sys.argv[1])")
    log = open(tmp_path / "engine.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", code, f"127.0.0.1:{port}"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    return proc, tmp_path / "engine.log"


def log_events(path: Path) -> list[dict]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is JSON


def metric(port, name, labels=()):
    try:
        return scrape(port).get((name, labels))
    except requests.RequestException:
        return None


def test_engine_process_survives_database_outage_and_stops_on_sigterm(db, chaos_file, tmp_path):
    port = free_port()
    proc, log_path = start_engine_process(db, tmp_path, port, chaos_file)
    processed = ("tradelab_trades_processed_total", (("status", "FILLED"),))
    try:
        wait_for(lambda: (metric(port, *processed) or 0) > 0, what="the engine to fill orders")
        try:
            db.cluster.stop()
            wait_for(lambda: metric(port, "tradelab_db_up") == 0, what="tradelab_db_up 0")
            assert proc.poll() is None, "the engine died with the database"
        finally:
            db.cluster.start()
        before = metric(port, *processed)
        wait_for(lambda: metric(port, "tradelab_db_up") == 1, what="tradelab_db_up back to 1")
        wait_for(lambda: metric(port, *processed) > before, what="processing to resume")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
    events = log_events(log_path)
    names = [e["event"] for e in events]
    assert "db_unavailable" in names and "db_recovered" in names
    assert names[-1] == "engine_stopped"
    outcomes = [e for e in events if e["event"] in ("filled", "rejected", "failed")]
    assert outcomes and all(e["service"] == "engine" and e["trade_id"] and e["client_order_id"]
                            and e["reason"] for e in outcomes)


# -- a database that stops answering -----------------------------------------------------------

def test_engine_work_on_a_frozen_database_ends_in_bounded_time(db, chaos_file, tmp_path):
    """The server process of the engine's connection is stopped (SIGSTOP: what a paused
    container or a partition looks like to the client: no answer, no error). The engine's
    batch must fail within its bound, show the wait in tradelab_engine_db_busy_seconds
    meanwhile, then carry on once the server answers again."""
    s = settings(**{"engine.order_rate": 0})
    engine = make_engine(s, db.app_url, chaos_file, tmp_path, db_work_limit_s=2.0)
    engine.refresh_gauges()  # connected
    (pid,) = query(db.admin_url, "SELECT pid FROM pg_stat_activity"
                                 " WHERE application_name = 'tradelab-engine'"
                                 " AND datname = current_database()")[0]
    failures = []

    def batch():
        try:
            engine.process_batch()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(exc)

    os.kill(pid, signal.SIGSTOP)
    try:
        worker = threading.Thread(target=batch, daemon=True)
        worker.start()
        seen = []

        def busy_shows():
            seen.append(engine.metrics.registry.get_sample_value(
                "tradelab_engine_db_busy_seconds"))
            return seen[-1] > 0.5 or not worker.is_alive()

        wait_for(busy_shows, what="the wait to show in tradelab_engine_db_busy_seconds")
        busy = max(seen)
        worker.join(timeout=60)
        assert not worker.is_alive(), "the batch still waits on a frozen database"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert busy > 0.5 and failures, (busy, failures)
    assert engine.metrics.registry.get_sample_value("tradelab_db_up") == 0
    assert engine.metrics.registry.get_sample_value("tradelab_engine_db_busy_seconds") == 0
    assert engine.process_batch() == 0  # a fresh connection
    assert engine.metrics.registry.get_sample_value("tradelab_db_up") == 1
    engine.close()


def test_the_engine_session_bounds_its_statements_and_lock_waits(db, chaos_file, tmp_path):
    engine = make_engine(settings(), db.app_url, chaos_file, tmp_path)
    engine.refresh_gauges()
    rows = query(db.admin_url, "SELECT name, setting FROM pg_settings WHERE name IN"
                 " ('statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout')")
    own = dict(engine._conn.execute(
        "SELECT name, setting FROM pg_settings WHERE name IN ('statement_timeout',"
        " 'lock_timeout', 'idle_in_transaction_session_timeout')").fetchall())
    engine._conn.rollback()
    assert dict(rows) != own
    assert all(int(v) > 0 for v in own.values()), own
    dsn = engine._conn.info.dsn
    assert "keepalives=1" in dsn and "tcp_user_timeout=" in dsn, dsn
    engine.close()
