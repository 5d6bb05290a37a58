"""Trades in PostgreSQL: create-or-replay with idempotency, and read one with its events.

    with pool.connection() as conn:           # autocommit: each statement commits
        trade, created = create_or_replay(conn, order, request_hash(order), source="api")
        trade = get_trade(conn, 7)            # dict with an `events` list, or None

`client_order_id` is UNIQUE: the INSERT ... ON CONFLICT DO NOTHING makes two
concurrent submissions of one key produce one row; the loser reads the winner's row
(READ COMMITTED: the SELECT sees what committed meanwhile). The trade and its
"received" event are one statement on an autocommit connection, so they commit
together before this returns; the caller answers only after that.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

TRADE_COLUMNS = ("id, client_order_id, symbol, side, quantity, limit_price, status, "
                 "fill_price, failure_reason, venue, source, request_hash, created_at, updated_at")

# One statement, so one round trip and one implicit transaction: the trade and its
# "received" event commit together, or neither does.
_INSERT = """
WITH trade AS (
    INSERT INTO trades (client_order_id, symbol, side, quantity, limit_price, source,
                        request_hash)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (client_order_id) DO NOTHING
    RETURNING id, status, created_at, updated_at
), event AS (
    INSERT INTO trade_events (trade_id, event, status, detail)
    SELECT id, 'received', 'NEW', %s FROM trade
)
SELECT * FROM trade
"""

_MAX_BIGINT = 2**63 - 1


def create_or_replay(conn, order: Any, req_hash: str, source: str = "api"
                     ) -> tuple[dict[str, Any], bool]:
    """(trade, created): a new committed trade, or the existing one with this key.

    The caller compares trade["request_hash"] with `req_hash` to tell a replay
    from a conflicting reuse of the key.
    """
    from psycopg.rows import dict_row
    from psycopg.types.json import Jsonb

    price = None if order.limit_price is None else Decimal(repr(order.limit_price))
    with conn.cursor() as cur:
        cur.execute(_INSERT, (order.client_order_id, order.symbol, order.side, order.quantity,
                              price, source, req_hash, Jsonb({"source": source})))
        inserted = cur.fetchone()
    if inserted is not None:
        # The new row is the order as inserted plus what the database set: RETURNING
        # reads back only the latter (fewer columns to send, parse and convert).
        trade_id, status, created_at, updated_at = inserted
        return {"id": trade_id, "client_order_id": order.client_order_id,
                "symbol": order.symbol, "side": order.side, "quantity": order.quantity,
                "limit_price": order.limit_price, "status": status, "fill_price": None,
                "failure_reason": None, "venue": None, "source": source,
                "request_hash": req_hash, "created_at": created_at,
                "updated_at": updated_at}, True
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {TRADE_COLUMNS} FROM trades WHERE client_order_id = %s",
                    (order.client_order_id,))
        row = cur.fetchone()
    if row is None:  # only if the winner's row vanished: nothing deletes trades
        raise RuntimeError(f"trade {order.client_order_id!r} conflicted but cannot be read")
    return _plain(row), False


def get_trade(conn, trade_id: int) -> dict[str, Any] | None:
    """The trade with its `events` (oldest first), or None."""
    from psycopg.rows import dict_row

    if not 0 < trade_id <= _MAX_BIGINT:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {TRADE_COLUMNS} FROM trades WHERE id = %s", (trade_id,))
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute(
            "SELECT id, event, status, detail, created_at FROM trade_events "
            "WHERE trade_id = %s ORDER BY created_at, id",
            (trade_id,),
        )
        events = cur.fetchall()
    trade = _plain(row)
    trade["events"] = events
    return trade


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """Numerics as floats, for JSON."""
    out = dict(row)
    for key in ("limit_price", "fill_price"):
        if out.get(key) is not None:
            out[key] = float(out[key])
    return out
