"""The API benchmark's baselines: bare Flask under gunicorn, one INSERT per POST /trades,
and GET /hello (no database at all).

    BENCH_DATABASE_URL=postgresql://… gunicorn -k gthread -w 2 --threads 4 bare_app:app

No validation, idempotency, events, metrics or logs: the cost floor of "Flask +
gunicorn + PostgreSQL" on this machine, against which `tradelab serve api` is measured;
/hello is the floor of Flask + gunicorn alone.
"""

import os
import threading

from flask import Flask, request
from psycopg_pool import ConnectionPool

app = Flask(__name__)
_pool = None
_lock = threading.Lock()


def pool() -> ConnectionPool:
    global _pool
    with _lock:  # made in the worker, after the fork, like the real API's pool
        if _pool is None:
            _pool = ConnectionPool(os.environ["BENCH_DATABASE_URL"], min_size=1,
                                   max_size=int(os.environ.get("BENCH_POOL_SIZE", "4")),
                                   kwargs={"autocommit": True})
        return _pool


@app.post("/trades")
def create_trade():
    order = request.get_json()
    with pool().connection() as conn:
        (trade_id,) = conn.execute(
            "INSERT INTO trades (client_order_id, symbol, side, quantity, source, request_hash)"
            " VALUES (%s, %s, %s, %s, 'bench', '') RETURNING id",
            (order["client_order_id"], order["symbol"], order["side"], order["quantity"]),
        ).fetchone()
    return {"id": trade_id}, 201


@app.get("/hello")
def hello():
    return {"hello": "world"}
