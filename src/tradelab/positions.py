"""Positions from the fills: "what is our exposure right now?" (`tradelab positions`).

    report = positions(operator_url)
    report["positions"]   # [{"symbol", "venue", "net_quantity", "net_notional", "fills", ...}]
    report["by_symbol"]   # {"AAPL": {"net_quantity": ..., "net_notional": ...}}

Computed from FILLED trades on a read-only connection, not from the engine's
`positions` table (which pre-trade risk reads): the fills are the record, and the
two must agree. net_notional is signed (BUY adds quantity x fill price, SELL
subtracts); average price = net_notional / net_quantity when the position is not flat.
Fills recorded before venues existed show venue "unrouted".
"""

from __future__ import annotations

from typing import Any

_FROM_FILLS = """
SELECT symbol, coalesce(venue, 'unrouted') AS venue,
       sum(CASE side WHEN 'BUY' THEN quantity ELSE -quantity END) AS net_quantity,
       sum(CASE side WHEN 'BUY' THEN quantity ELSE -quantity END * fill_price) AS net_notional,
       count(*) AS fills,
       sum(quantity) FILTER (WHERE side = 'BUY') AS bought,
       sum(quantity) FILTER (WHERE side = 'SELL') AS sold
FROM trades WHERE status = 'FILLED'
GROUP BY symbol, coalesce(venue, 'unrouted')
ORDER BY symbol, venue
"""
COLUMNS = ("symbol", "venue", "net_quantity", "net_notional", "fills", "bought", "sold")


def positions(url: str, symbol: str | None = None) -> dict[str, Any]:
    from tradelab.ops import _explained, open_read_only

    with open_read_only(url) as conn, _explained(url):
        rows = conn.execute(_FROM_FILLS).fetchall()
    out = []
    for r in rows:
        row = dict(zip(COLUMNS, r, strict=True))
        if symbol and row["symbol"] != symbol:
            continue
        row.update(net_quantity=int(row["net_quantity"]),
                   net_notional=round(float(row["net_notional"]), 4),
                   bought=int(row["bought"] or 0), sold=int(row["sold"] or 0))
        row["average_price"] = (round(row["net_notional"] / row["net_quantity"], 4)
                                if row["net_quantity"] else None)
        out.append(row)
    by_symbol: dict[str, dict[str, Any]] = {}
    for row in out:
        total = by_symbol.setdefault(row["symbol"], {"net_quantity": 0, "net_notional": 0.0,
                                                     "fills": 0})
        total["net_quantity"] += row["net_quantity"]
        total["net_notional"] = round(total["net_notional"] + row["net_notional"], 4)
        total["fills"] += row["fills"]
    return {"positions": out, "by_symbol": by_symbol}
