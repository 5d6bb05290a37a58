"""What POST /trades accepts and rejects: a table, a property test, and schemathesis."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tradelab.app import models
from tradelab.app.api import create_app
from tradelab.lab import Lab
from tradelab.settings import Settings

SYMBOLS = tuple(Settings().symbols)
Order = models.order_model(SYMBOLS)
GOOD = {"client_order_id": "k-1", "symbol": "MSFT", "side": "SELL", "quantity": 3,
        "limit_price": 410.5}


@pytest.fixture(scope="module")
def client(pg, tmp_path_factory):
    # One database for the module: rejected orders never write, and accepted ones
    # below use their own keys.
    from conftest import make_database

    db = make_database(pg)
    lab = Lab(tmp_path_factory.mktemp("lab"))
    return create_app(Settings(), lab=lab, database_url=db.app_url,
                      configure_logging=False).test_client()


def _with(**changes):
    body = dict(GOOD)
    for key, value in changes.items():
        if value is _MISSING:
            body.pop(key)
        else:
            body[key] = value
    return json.dumps(body)


_MISSING = object()

BAD = [
    # (name, raw JSON body, the field the error must name)
    ("quantity float", _with(quantity=10.0), "quantity"),
    ("quantity string", _with(quantity="10"), "quantity"),
    ("quantity bool", _with(quantity=True), "quantity"),
    ("quantity zero", _with(quantity=0), "quantity"),
    ("quantity negative", _with(quantity=-5), "quantity"),
    ("quantity too big", _with(quantity=1_000_001), "quantity"),
    ("quantity huge", _with(quantity=10**40), "quantity"),
    ("quantity null", _with(quantity=None), "quantity"),
    ("quantity missing", _with(quantity=_MISSING), "quantity"),
    ("quantity list", _with(quantity=[1]), "quantity"),
    ("symbol unknown", _with(symbol="ZZZZ"), "symbol"),
    ("symbol lowercase", _with(symbol="msft"), "symbol"),
    ("symbol number", _with(symbol=7), "symbol"),
    ("symbol missing", _with(symbol=_MISSING), "symbol"),
    ("side lowercase", _with(side="sell"), "side"),
    ("side other", _with(side="HOLD"), "side"),
    ("side missing", _with(side=_MISSING), "side"),
    ("price zero", _with(limit_price=0), "limit_price"),
    ("price negative", _with(limit_price=-1.5), "limit_price"),
    ("price bool", _with(limit_price=True), "limit_price"),
    ("price string", _with(limit_price="410.5"), "limit_price"),
    ("price 5 decimals", _with(limit_price=1.23456), "limit_price"),
    ("price tiny", _with(limit_price=1e-5), "limit_price"),
    ("price too big", _with(limit_price=1e12), "limit_price"),
    ("price NaN", _with().replace("410.5", "NaN"), "limit_price"),
    ("price Infinity", _with().replace("410.5", "Infinity"), "limit_price"),
    ("price object", _with(limit_price={}), "limit_price"),
    ("key empty", _with(client_order_id=""), "client_order_id"),
    ("key too long", _with(client_order_id="a" * 65), "client_order_id"),
    ("key space", _with(client_order_id="a b"), "client_order_id"),
    ("key slash", _with(client_order_id="a/b"), "client_order_id"),
    ("key unicode", _with(client_order_id="ordér"), "client_order_id"),
    ("key newline", _with(client_order_id="abc\n"), "client_order_id"),
    ("key number", _with(client_order_id=123), "client_order_id"),
    ("unknown field", _with(account="x"), "account"),
    ("array body", "[1, 2]", "body"),
    ("null body", "null", "body"),
    ("number body", "42", "body"),
    ("broken JSON", '{"symbol": "MSFT",', "body"),
    ("deep nesting", "[" * 5000, "body"),
    ("not UTF-8", b'{"symbol": "\xff"}', "body"),
]


@pytest.mark.parametrize("body, field", [(b, f) for _, b, f in BAD],
                         ids=[name for name, _, _ in BAD])
def test_bad_orders_are_400_naming_the_field(client, body, field):
    r = client.post("/trades", data=body, content_type="application/json")
    assert r.status_code == 400, r.text
    assert r.json["error"] in ("validation_error", "invalid_json")
    assert r.json["message"]
    assert field in [d["field"] for d in r.json["details"]], r.json


def test_good_edge_values_are_accepted(client):
    for i, changes in enumerate([
        {"quantity": 1}, {"quantity": 1_000_000}, {"limit_price": 0.0001},
        {"limit_price": 12}, {"limit_price": None}, {"limit_price": 99999.9999},
        {"client_order_id": "A" * 64}, {"client_order_id": "a.b_c:d-9"},
    ]):
        body = {**GOOD, "client_order_id": f"edge-{i}", **changes}
        r = client.post("/trades", json=body)
        assert r.status_code == 201, (body, r.json)


# -- property: the validator only ever accepts or raises a ValidationError --------------

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats()
                | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)
four_decimals = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("1e9"), places=4,
                            allow_nan=False, allow_infinity=False).map(float)
fields = {
    "client_order_id": st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True) | json_values,
    "symbol": st.sampled_from(SYMBOLS) | json_values,
    "side": st.sampled_from(["BUY", "SELL"]) | json_values,
    "quantity": st.integers(-1, 1_000_001) | json_values,
    "limit_price": st.none() | four_decimals | st.floats() | json_values,
}
order_like = st.fixed_dictionaries({}, optional=fields).flatmap(
    lambda d: st.dictionaries(st.text(max_size=8), json_values, max_size=2).map(
        lambda extra: {**extra, **d}))
bodies = order_like | json_values


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_validator_accepts_exactly_valid_orders_and_round_trips(data):
    try:
        order = models.parse_order(Order, data)
    except ValidationError as exc:
        details = models.error_details(exc)
        assert details and all(d["field"] and d["message"] for d in details)
        return
    # Accepted: every field has its exact type and range, and reads back unchanged.
    assert isinstance(data, dict) and set(data) <= set(fields)
    assert type(order.quantity) is int and 1 <= order.quantity <= 1_000_000
    assert order.symbol in SYMBOLS and order.side in ("BUY", "SELL")
    assert data["quantity"] == order.quantity and type(data["quantity"]) is int
    price = order.limit_price
    if price is not None:
        assert math.isfinite(price) and 0 < price <= models.MAX_LIMIT_PRICE
        assert round(price, 4) == price
        assert not isinstance(data["limit_price"], bool) and data["limit_price"] == price
    if data.get("client_order_id") is not None:
        assert order.client_order_id == data["client_order_id"]
    again = models.parse_order(Order, order.model_dump())
    assert again == order
    assert models.request_hash(again) == models.request_hash(order)


# -- schemathesis: fuzz the running server from its own OpenAPI document -----------------

def test_schemathesis_finds_no_server_errors(db, tmp_path):
    from support.api import ApiServer

    with ApiServer(db.app_url, tmp_path / "api", workers=2) as api:
        result = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", api.url + "/openapi.json",
             "--checks", "all",
             # "At most 4 decimals" has no exact JSON-Schema form for binary floats,
             # so schema-valid 0.12345 is rightly refused: not a defect.
             "--exclude-checks", "positive_data_acceptance",
             "--exclude-path", "/error",
             "--phases", "examples,coverage,fuzzing,stateful",
             "--max-examples", "60", "--generation-database", "none",
             "--request-timeout", "10", "--no-color"],
            capture_output=True, text=True, timeout=240, cwd=tmp_path,
        )
        log = api.output()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert '"level": "error"' not in log, log[-3000:]
