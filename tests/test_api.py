"""The trading API in process (Flask test client) on a real PostgreSQL database."""

from __future__ import annotations

import io
import json
import time

import psycopg
import pytest

from tradelab.app.api import create_app
from tradelab.app.openapi import openapi_document
from tradelab.logs import setup_logging
from tradelab.settings import Settings

ORDER = {"client_order_id": "ord-1", "symbol": "AAPL", "side": "BUY", "quantity": 10,
         "limit_price": 187.25}


@pytest.fixture
def client(db, lab_dir):
    app = create_app(Settings(), database_url=db.app_url)
    return app.test_client()


def rows(db, sql, *args):
    with psycopg.connect(db.admin_url) as conn:
        return conn.execute(sql, args).fetchall()


def test_new_order_is_committed_with_its_received_event(client, db):
    r = client.post("/trades", json=ORDER)
    assert r.status_code == 201, r.json
    trade = r.json
    assert trade["status"] == "NEW" and trade["source"] == "api"
    assert {k: trade[k] for k in ORDER} == ORDER
    assert r.headers["Location"] == f"/trades/{trade['id']}"

    (row,) = rows(db, "SELECT client_order_id, quantity, limit_price::text, source, status, "
                      "length(request_hash) FROM trades")
    assert row == ("ord-1", 10, "187.2500", "api", "NEW", 64)
    events = rows(db, "SELECT trade_id, event, status FROM trade_events")
    assert events == [(trade["id"], "received", "NEW")]


def test_replay_with_same_body_answers_200_with_the_same_trade(client, db):
    first = client.post("/trades", json=ORDER)
    # Same order, different key order and 187.25 written as 187.250: still the same order.
    replay = client.post("/trades", data='{"limit_price": 187.250, "quantity": 10, "side": '
                                         '"BUY", "symbol": "AAPL", "client_order_id": "ord-1"}',
                         content_type="application/json")
    assert (first.status_code, replay.status_code) == (201, 200)
    assert replay.json == first.json
    assert rows(db, "SELECT count(*) FROM trades") == [(1,)]
    assert rows(db, "SELECT count(*) FROM trade_events") == [(1,)]


def test_same_key_with_a_different_order_is_409(client, db):
    assert client.post("/trades", json=ORDER).status_code == 201
    r = client.post("/trades", json={**ORDER, "quantity": 11})
    assert r.status_code == 409
    assert r.json["error"] == "idempotency_conflict"
    assert r.json["details"][0]["field"] == "client_order_id"
    assert rows(db, "SELECT quantity FROM trades") == [(10,)]


def test_missing_client_order_id_is_generated(client):
    body = {k: v for k, v in ORDER.items() if k != "client_order_id"}
    a, b = client.post("/trades", json=body), client.post("/trades", json=body)
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json["client_order_id"] != b.json["client_order_id"]
    assert a.json["client_order_id"]


def test_get_trade_has_its_events_and_unknown_is_404(client):
    trade = client.post("/trades", json=ORDER).json
    r = client.get(f"/trades/{trade['id']}")
    assert r.status_code == 200
    assert r.json["id"] == trade["id"]
    assert [(e["event"], e["status"]) for e in r.json["events"]] == [("received", "NEW")]
    for path in ("/trades/999999", f"/trades/{2**70}"):
        r = client.get(path)
        assert r.status_code == 404 and r.json["error"] == "not_found", path


@pytest.mark.parametrize("method, path, status, code", [
    ("GET", "/nowhere", 404, "not_found"),
    ("GET", "/trades/abc", 404, "not_found"),
    ("DELETE", "/trades", 405, "method_not_allowed"),
    ("PUT", "/trades/1", 405, "method_not_allowed"),
    ("GET", "/error", 500, "intentional_error"),
])
def test_errors_are_json(client, method, path, status, code):
    r = client.open(path, method=method)
    assert r.status_code == status
    assert r.mimetype == "application/json"
    assert r.json["error"] == code and r.json["message"] and r.json["details"] == []


def test_not_json_is_415_and_too_large_is_413(client):
    r = client.post("/trades", data="symbol=AAPL", content_type="application/x-www-form-urlencoded")
    assert r.status_code == 415 and r.json["error"] == "unsupported_media_type"
    big = json.dumps({**ORDER, "pad": "x" * 20_000})
    r = client.post("/trades", data=big, content_type="application/json")
    assert r.status_code == 413 and r.json["error"] == "payload_too_large"


def test_index_health_and_readiness(client, db):
    assert client.get("/").json["service"] == "tradelab-api"
    assert client.get("/healthz").json == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json["status"] == "ready"
    # A database migrated by a newer tradelab is not this API's schema: not ready.
    with psycopg.connect(db.admin_url) as conn:
        conn.execute("INSERT INTO schema_migrations (version) VALUES ('9999_future')")
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json["error"] == "schema_outdated"
    assert "tradelab db migrate" in r.json["message"]


def test_unreachable_database_is_503_with_retry_after(lab_dir, pg):
    from conftest import free_port

    settings = Settings(api={"db_timeout_s": 0.5})
    url = pg.url("tradelab_app", "x", "nodb").replace(f":{pg.port}/", f":{free_port()}/")
    client = create_app(settings, database_url=url).test_client()
    r = client.post("/trades", json=ORDER)
    assert r.status_code == 503 and r.json["error"] == "db_unavailable"
    assert r.headers["Retry-After"] == "1"
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200
    assert "tradelab_db_up 0.0" in client.get("/metrics").text


def test_accepted_trades_are_logged_as_json(db, lab_dir):
    out = io.StringIO()
    setup_logging("api", stream=out)
    client = create_app(Settings(), database_url=db.app_url,
                        configure_logging=False).test_client()
    trade = client.post("/trades", json=ORDER).json
    client.post("/trades", json=ORDER)
    client.post("/trades", json={**ORDER, "side": "SELL"})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    by_event = {entry["event"]: entry for entry in lines}
    accepted = by_event["trade_accepted"]
    assert accepted["service"] == "api" and accepted["level"] == "info"
    assert (accepted["trade_id"], accepted["client_order_id"]) == (trade["id"], "ord-1")
    assert by_event["trade_replayed"]["trade_id"] == trade["id"]
    assert by_event["trade_conflict"]["client_order_id"] == "ord-1"


def test_metrics_use_route_templates_and_the_slo_bucket(db, lab_dir):
    settings = Settings(slo={"latency_threshold_s": 0.25})
    client = create_app(settings, database_url=db.app_url).test_client()
    trade = client.post("/trades", json=ORDER).json
    client.get(f"/trades/{trade['id']}")
    client.get("/no/such/page/12345")
    client.put(f"/trades/{trade['id']}")  # 405: the route exists, the method does not
    text = client.get("/metrics").text
    assert 'route="/trades/{trade_id}"' in text
    assert 'route="unmatched"' in text
    assert 'tradelab_http_requests_total{code="405",method="PUT",route="/trades/{trade_id}"}' \
        in text
    assert "12345" not in text and f"/trades/{trade['id']}\"" not in text
    assert 'tradelab_http_request_duration_seconds_bucket{le="0.25",method="POST"' in text
    assert 'tradelab_chaos_active{fault="api-errors"} 0.0' in text
    assert "tradelab_db_up 1.0" in text
    assert 'tradelab_build_info{version="' in text


def test_openapi_schema_is_the_validator_schema(client):
    doc = client.get("/openapi.json").json
    assert doc == json.loads(json.dumps(openapi_document(tuple(Settings().symbols))))
    order = doc["components"]["schemas"]["Order"]
    assert order["additionalProperties"] is False
    assert order["properties"]["symbol"]["enum"] == Settings().symbols
    assert order["properties"]["quantity"]["type"] == "integer"
    assert set(doc["paths"]) >= {"/trades", "/trades/{trade_id}", "/readyz", "/metrics"}


def test_pool_exhaustion_answers_503_within_the_pool_timeout_then_recovers(db, tmp_path,
                                                                           monkeypatch):
    """The pool-exhaustion fault holds every pooled connection: POST /trades waits for
    the pool and answers a JSON 503 (never hangs); once off, the connections go back."""
    from tradelab.chaos_state import ChaosStore

    chaos_file = tmp_path / "chaos.json"
    monkeypatch.setenv("TRADELAB_CHAOS_FILE", str(chaos_file))
    settings = Settings(api={"db_timeout_s": 0.5, "db_pool_size": 2})
    client = create_app(settings, database_url=db.app_url).test_client()
    assert client.post("/trades", json=ORDER).status_code == 201
    store = ChaosStore(chaos_file)
    store.enable("pool-exhaustion")
    time.sleep(0.6)  # the reader re-reads the file at most every half second
    r = client.post("/trades", json={**ORDER, "client_order_id": "ord-2"})
    assert r.status_code == 503, r.json
    assert set(r.json) == {"error", "message", "details"}
    text = client.get("/metrics").get_data(as_text=True)
    assert "tradelab_db_pool_available 0.0" in text
    store.disable()
    time.sleep(0.6)
    assert client.post("/trades", json={**ORDER, "client_order_id": "ord-2"}).status_code == 201
