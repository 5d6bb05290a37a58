"""What db-lock-contention, bad-fills, exchange-down and retry-storm do to the real
components (PostgreSQL, the API, the engine, a Locust run), what they leave in the
metrics, and the `tradelab ops` lever that mends each one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import requests
from test_load import _start_api, _stop, _wait_for
from test_trading_ops import _app, drain, make_engine, outcomes, query, runner, settings, submit

from tradelab.app.api import create_app
from tradelab.chaos import chaos_off, chaos_on
from tradelab.chaos_state import ChaosStore
from tradelab.lab import Lab
from tradelab.levers_state import LeverStore
from tradelab.loadtest._ledger import read_ledger
from tradelab.settings import load_settings
from tradelab.verify import reconcile

ORDER = {"client_order_id": "during-lock", "symbol": "AAPL", "side": "BUY", "quantity": 10}


@pytest.fixture
def state(tmp_path):
    path = tmp_path / "state"
    path.mkdir()
    return path


# -- exchange-down -------------------------------------------------------------------

def test_a_venue_that_stops_answering_times_orders_out_and_failover_mends_it(db, state):
    engine = make_engine(db, state, settings(**{"trading.venue_timeout_ms": 150}))
    ChaosStore(state / "chaos.json").enable("exchange-down", venue="alpha")
    down = submit(engine, [("AAPL", "BUY", 10, None)] * 5)
    drain(engine)
    assert set(outcomes(db, down).values()) == {("FAILED", "alpha", "EXCHANGE_TIMEOUT")}
    waited = query(db.admin_url, "SELECT DISTINCT (detail->>'latency_ms')::float FROM"
                   " trade_events WHERE trade_id = ANY(%s) AND event = 'failed'", (down,))
    assert waited == [(150.0,)]  # the venue timeout setting, not an error at once
    failed = engine.metrics.venue_orders.labels(venue="alpha", status="FAILED")._value.get()
    assert failed == 5

    LeverStore(state / "levers.json").route("beta", symbol=None)  # `ops route --venue beta`
    routed = submit(engine, [("AAPL", "BUY", 10, None)] * 5)
    drain(engine)
    assert set(outcomes(db, routed).values()) == {("FILLED", "beta", "")}


# -- bad-fills -----------------------------------------------------------------------

def test_bad_fills_are_counted_by_the_engine_and_verify_names_each_order(db, state):
    engine = make_engine(db, state)
    market = engine.venues.price("MSFT")
    ChaosStore(state / "chaos.json").enable("bad-fills", rate=1.0)
    limits = submit(engine, [("MSFT", "BUY", 10, round(market * 1.01, 2)),
                             ("MSFT", "BUY", 10, round(market * 0.995, 2)),
                             ("MSFT", "SELL", 10, round(market * 0.99, 2))])
    at_market = submit(engine, [("MSFT", "SELL", 10, None)])
    drain(engine)
    rows = query(db.admin_url, "SELECT id, status, side, limit_price, fill_price FROM trades"
                 " WHERE id = ANY(%s)", (limits,))
    assert {r[1] for r in rows} == {"FILLED"}
    assert all((fill > limit) if side == "BUY" else (fill < limit)
               for _, _, side, limit, fill in rows)
    counted = engine.metrics.fills_outside_limit.labels(venue="alpha")._value.get()
    assert counted == len(limits)

    report = reconcile(db.operator_url, None, set(), healthy_for_s=60)
    named = {v.trade_id for v in report.violations if v.kind == "outside_limit"}
    assert named == set(limits) and not report.ok  # the market order is fine
    assert at_market[0] not in named
    # (submit() writes no "received" events: those trails are the helper's doing)
    assert {v.kind for v in report.violations} == {"outside_limit", "broken_trail"}


# -- db-lock-contention --------------------------------------------------------------

def test_a_held_lock_makes_writes_time_out_and_killing_its_session_mends_it(db, lab_dir,
                                                                           monkeypatch):
    monkeypatch.setenv("TRADELAB_DATABASE_URL", db.app_url)  # the lock holder's database
    lab = Lab.from_flag(lab_dir)
    s = load_settings(lab)
    client = create_app(s, lab=lab, database_url=db.app_url).test_client()
    engine = make_engine(db, lab.state_dir)
    waiting = submit(engine, [("AAPL", "BUY", 10, None)])
    engine.process_batch()  # the database answers: db_up 1
    waiting += submit(engine, [("AAPL", "BUY", 10, None)])

    chaos_on(s, lab, "db-lock-contention")
    holder = _sessions(db, "tradelab-report")
    assert len(holder) == 1 and holder[0]["state"] == "idle in transaction", holder
    assert holder[0]["locks_held"] >= 1
    assert client.get(f"/trades/{waiting[0]}").status_code == 200  # reads go on
    refused = client.post("/trades", json=ORDER)
    assert refused.status_code == 503, refused.json  # after its 2s lock_timeout
    assert set(refused.json) == {"error", "message", "details"}
    assert "tradelab_db_lock_timeouts_total 1.0" in client.get("/metrics").get_data(
        as_text=True)
    with pytest.raises(Exception):  # noqa: B017 - the engine's private _DbDown
        engine.process_batch()
    assert engine.metrics.lock_timeouts._value.get() == 1
    assert engine.metrics.db_up._value.get() == 1  # contention is not an outage

    killed = runner.invoke(_app(), ["ops", "db", "sessions", "--kill", str(holder[0]["pid"]),
                                    "--database-url", db.admin_url, "--json"])
    assert killed.exit_code == 0, killed.output
    assert client.post("/trades", json=ORDER).status_code == 201
    drain(engine)
    assert {o[0] for o in outcomes(db, waiting).values()} == {"FILLED"}
    time.sleep(1.0)  # the holder had a few polls to take the lock again: it must not
    assert _sessions(db, "tradelab-report") == []
    assert "db-lock-contention" in ChaosStore(lab.chaos_file).active()  # the record stays

    chaos_off(s, lab)
    chaos_on(s, lab, "db-lock-contention")  # on again: a new session; off ends it
    assert len(_sessions(db, "tradelab-report")) == 1
    chaos_off(s, lab)
    _wait_for(lambda: _sessions(db, "tradelab-report") == [], 10, "the lock to be released")


def test_a_lock_that_cannot_be_taken_is_one_line_and_leaves_no_record(lab_dir, monkeypatch):
    from conftest import free_port

    from tradelab.errors import TradelabError

    monkeypatch.setenv("TRADELAB_DATABASE_URL",
                       f"postgresql://nobody:x@127.0.0.1:{free_port()}/none")
    lab = Lab.from_flag(lab_dir)
    with pytest.raises(TradelabError, match="cannot turn db-lock-contention on: cannot lock"):
        chaos_on(load_settings(lab), lab, "db-lock-contention")
    assert ChaosStore(lab.chaos_file).active() == {}


def _sessions(db, application_name: str) -> list[dict]:
    listed = runner.invoke(_app(), ["ops", "db", "sessions", "--database-url",
                                    db.operator_url, "--json"])
    assert listed.exit_code == 0, listed.output
    return [s for s in json.loads(listed.output)["sessions"]
            if s["application_name"] == application_name]


# -- retry-storm ---------------------------------------------------------------------

@pytest.mark.slow
def test_a_retry_storm_duplicates_nothing_persists_past_off_and_a_halt_ends_it(db, lab_dir):
    """4 Locust users. First the plain storm: each order sent 4 times at once. Then
    --persist: the users get stuck resending their order in flight, also once the fault
    is off, until `ops halt` answers them 503 + Retry-After; after `ops resume` every
    order goes once. Through it all, each key is one trade."""
    proc, url = _start_api(db.app_url, lab_dir)
    try:
        assert runner.invoke(_app(), ["chaos", "on", "retry-storm"]).exit_code == 0
        load = subprocess.Popen(
            [sys.executable, "-m", "tradelab", "load", "--host", url, "--users", "4",
             "--spawn-rate", "4", "--duration", "24s", "--fail-ratio", "1", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: any(p.stat().st_size for p in
                              (lab_dir / "state" / "load").glob("*/*.jsonl")),
                  60, "the first order in the ledger")
        started = time.time()
        marks = {}
        # A user sees --persist at its next order after its chaos reader's next look
        # (about a second each): the fault stays on 4 s so that every user has seen it.
        for at, args in ((3, ["chaos", "on", "retry-storm", "--persist"]),
                         (7, ["chaos", "off"]), (9, ["ops", "halt"]), (10, ["ops", "resume"])):
            time.sleep(max(0.0, started + at - time.time()))
            assert runner.invoke(_app(), args).exit_code == 0, args
            marks[" ".join(args[:2]) + (" persist" if "--persist" in args else "")] = time.time()
        out, err = load.communicate(timeout=120)
        metrics = _wait_for(lambda: requests.get(url + "/metrics", timeout=5).text, 10,
                            "the api's metrics")
    finally:
        _stop(proc)
    summary = json.loads(out)
    ledger = read_ledger(Path(summary["orders"]["ledger"]))
    first_sent, acks = _ledger_events(ledger.run_dir)
    plain = [k for k, at in first_sent.items() if at < marks["chaos on persist"] - 0.5]
    assert plain, (len(first_sent), marks)
    for key in plain:  # one 201, the copies 200, all with the same trade id
        assert sorted(code for code, _ in acks[key]) == [200, 200, 200, 201], acks[key]
    replays = [ts for key in acks for code, ts in acks[key] if code == 200]
    stuck = [ts for ts in replays if marks["chaos off"] + 0.5 < ts < marks["ops halt"]]
    assert len(stuck) > 10, (len(stuck), marks)  # the storm outlived its trigger
    assert not [ts for ts in replays if ts > marks["ops resume"] + 6]  # the halt ended it
    assert [k for k, at in first_sent.items() if at > marks["ops resume"] + 6]
    report = reconcile(db.operator_url, ledger, ledger.attempted, healthy_for_s=60)
    assert report.counts["duplicate"] == 0 and report.counts["lost"] == 0, report.as_dict()
    assert report.counts["ok"] == len(ledger.acknowledged) > 0
    counted = [float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("tradelab_idempotent_replays_total")]
    assert counted and counted[0] >= len(replays) > 0, (counted, len(replays))


def _ledger_events(run_dir: Path) -> tuple[dict[str, float], dict[str, list[tuple[int, float]]]]:
    """Per key: when it was first attempted, and (code, time) of each acknowledgement."""
    first: dict[str, float] = {}
    acks: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for path in run_dir.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["event"] == "attempted":
                first.setdefault(record["client_order_id"], record["ts"])
            elif record["event"] == "acknowledged":
                acks[record["client_order_id"]].append((record["code"], record["ts"]))
    return first, acks
