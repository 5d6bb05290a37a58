"""Pre-trade risk: the checks an order passes before it may reach a venue.

    breach = check(order, market_price=190.0, position=1200, limits=settings.trading.risk)
    breach.reason, breach.message      # e.g. "PRICE_BAND", "BUY limit 250.0000 is 31.6% ..."

Limits (settings `trading.risk`): quantity and notional per order; a price band
around the market for aggressive limits (a BUY above or a SELL below the market;
a passive limit far away only never fills, which the venue answers); and an
absolute net position per symbol over all venues, which an order may not push
beyond the limit (an order that reduces the exposure always passes).
A breach becomes a REJECTED trade with the reason in its event trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REASONS = ("QUANTITY_LIMIT", "NOTIONAL_LIMIT", "PRICE_BAND", "POSITION_LIMIT")
STALE_REASON = "STALE_MARKET_DATA"  # checked by the engine first, counted with these


@dataclass(frozen=True)
class Breach:
    reason: str
    message: str


def signed_quantity(side: str, quantity: int) -> int:
    return quantity if side == "BUY" else -quantity


def check(order: Any, market_price: float, position: int, limits: Any) -> Breach | None:
    """The first limit `order` breaches, or None."""
    if order.quantity > limits.max_quantity:
        return Breach("QUANTITY_LIMIT", f"quantity {order.quantity} exceeds the limit of "
                                        f"{limits.max_quantity} per order")
    limit = None if order.limit_price is None else float(order.limit_price)
    notional = order.quantity * (limit if limit is not None else market_price)
    if notional > limits.max_notional:
        return Breach("NOTIONAL_LIMIT", f"notional {notional:,.2f} exceeds the limit of "
                                        f"{limits.max_notional:,.2f} per order")
    if limit is not None:
        through = (limit - market_price if order.side == "BUY" else market_price - limit)
        if through / market_price > limits.price_band:
            return Breach("PRICE_BAND", f"{order.side} limit {limit:.4f} is "
                                        f"{through / market_price:.1%} through the market "
                                        f"{market_price:.4f} (band {limits.price_band:.0%})")
    after = position + signed_quantity(order.side, order.quantity)
    if abs(after) > limits.max_position and abs(after) > abs(position):
        return Breach("POSITION_LIMIT", f"position in {order.symbol} would be {after} shares, "
                                        f"beyond the limit of {limits.max_position}")
    return None
