"""A simulated exchange: per-symbol random-walk prices, small latency, realistic outcomes.

    exchange = SimulatedExchange(["AAPL", "MSFT"], latency_ms=(5, 30))
    outcome = exchange.execute(Order("AAPL", "BUY", 10, limit_price=None), chaos={})
    outcome.status, outcome.reason, outcome.fill_price, outcome.latency_s

Outcomes are FILLED, REJECTED (a business answer: the order was understood and
refused) or FAILED (a technical fault: the order never got a business answer).
Only FAILED counts against the processing-success SLO. Every outcome carries a
reason code; FAILED and REJECTED also a human message.

`execute` does not sleep: it returns the latency the call took at the exchange,
so the engine can send a batch "concurrently" and wait once for the slowest.
"""

from __future__ import annotations

import math
import random
import time
import zlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

CHAOS_MESSAGE = "CHAOS: Forced connection failure to exchange"

# Rough real-world levels; a symbol not listed starts at a stable price from its name.
START_PRICES = {
    "AAPL": 190.0, "MSFT": 420.0, "GOOGL": 170.0, "AMZN": 185.0, "NVDA": 120.0,
    "TSLA": 250.0, "JPM": 200.0, "META": 500.0, "NFLX": 650.0, "V": 280.0,
}
VOLATILITY = 0.0004  # per sqrt(second): about 2.4% an hour, 11% a day
MEAN_REVERSION = 1 / 3600  # per second, so a long-running lab never drifts to absurd prices
LIMIT_REACH = 0.01  # a limit within 1% beyond the market is reached; further is not
MAX_LIQUIDITY = 250_000  # shares per order the book can absorb
TIMEOUT_MS = 2000  # the engine gives up on a venue after this (trading.venue_timeout_ms)
BAD_FILL_SLIP = 0.005  # bad-fills: how far past its limit a bad release fills an order
MIN_PRICE = 0.0001  # the smallest price the trades table stores (numeric(18, 4)), never 0


@dataclass(frozen=True)
class Order:
    symbol: str
    side: str  # BUY | SELL
    quantity: int
    limit_price: Decimal | float | None = None


@dataclass(frozen=True)
class Outcome:
    status: str  # FILLED | REJECTED | FAILED
    reason: str  # a code, e.g. LIMIT_NOT_REACHABLE, EXCHANGE_CONNECTION_FAILED
    message: str
    fill_price: float | None
    market_price: float
    latency_s: float

    @property
    def failure_reason(self) -> str | None:
        """What trades.failure_reason holds: "CODE: message", for REJECTED and FAILED."""
        return None if self.status == "FILLED" else f"{self.reason}: {self.message}"

    def detail(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "message": self.message,
            "fill_price": self.fill_price,
            "market_price": self.market_price,
            "latency_ms": round(self.latency_s * 1000, 1),
        }


def ou_step(log_gap: float, dt: float, z: float) -> float:
    """The log price's gap to its anchor `dt` seconds later (z a standard normal draw).

    The exact transition of the Ornstein-Uhlenbeck process dX = -θX dt + σ dW, not an
    Euler step: the gap shrinks by e^(-θ dt) whatever the idle time (an Euler step's
    factor 1 - θ dt turns negative after an hour and diverges after two), and its
    spread tends to σ/sqrt(2θ), about 1.7% around the anchor.
    """
    decay = math.exp(-MEAN_REVERSION * dt)
    spread = VOLATILITY * math.sqrt(-math.expm1(-2 * MEAN_REVERSION * dt) / (2 * MEAN_REVERSION))
    return log_gap * decay + spread * z


def start_price(symbol: str) -> float:
    if symbol in START_PRICES:
        return START_PRICES[symbol]
    return 20.0 + zlib.crc32(symbol.encode()) % 480


class SimulatedExchange:
    def __init__(self, symbols: list[str], latency_ms: tuple[float, float] = (5.0, 30.0),
                 baseline_failure_rate: float = 0.0005, rng: random.Random | None = None,
                 clock=time.monotonic, timeout_ms: float = TIMEOUT_MS) -> None:
        self.rng = rng or random.Random()
        self.timeout_ms = timeout_ms
        self.latency_ms = (min(latency_ms), max(latency_ms))
        self.baseline_failure_rate = baseline_failure_rate
        self._clock = clock
        self._anchor = {s: start_price(s) for s in symbols}
        self._price = dict(self._anchor)
        self._moved_at = {s: clock() for s in symbols}

    def price(self, symbol: str) -> float:
        """The market price now: a mean-reverting geometric random walk per symbol
        (log-OU around the start price), always positive."""
        if symbol not in self._price:
            self._anchor[symbol] = self._price[symbol] = start_price(symbol)
            self._moved_at[symbol] = self._clock()
        now = self._clock()
        dt = max(0.0, now - self._moved_at[symbol])
        if dt > 0:
            gap = ou_step(math.log(self._price[symbol] / self._anchor[symbol]), dt,
                          self.rng.gauss(0.0, 1.0))
            self._price[symbol] = self._anchor[symbol] * math.exp(gap)
            self._moved_at[symbol] = now
        return max(MIN_PRICE, round(self._price[symbol], 4))

    def execute(self, order: Order, chaos: dict[str, Any]) -> Outcome:
        """The exchange's answer to `order` under the active chaos faults (name -> fault)."""
        market = self.price(order.symbol)
        latency_ms = self.rng.uniform(*self.latency_ms)
        slow = chaos.get("exchange-latency")
        if slow is not None and slow.latency_ms:
            latency_ms += slow.latency_ms

        timeout_ms = self.timeout_ms

        def outcome(status, reason, message, fill=None, latency=min(latency_ms, timeout_ms)):
            # Never longer than the venue timeout: the engine waits this long
            # inside its transaction, holding the batch's row locks.
            return Outcome(status, reason, message, fill, market, latency / 1000)

        no_answer = f"no answer from the exchange within {timeout_ms:g} ms"
        if chaos.get("exchange-down") is not None:  # it stops answering: a timeout, no error
            return outcome("FAILED", "EXCHANGE_TIMEOUT", no_answer, latency=timeout_ms)
        errors = chaos.get("exchange-errors")
        if errors is not None and errors.rate and self.rng.random() < errors.rate:
            return outcome("FAILED", "EXCHANGE_CONNECTION_FAILED", CHAOS_MESSAGE)
        if latency_ms > timeout_ms:
            return outcome("FAILED", "EXCHANGE_TIMEOUT", no_answer, latency=timeout_ms)
        if self.rng.random() < self.baseline_failure_rate:
            if self.rng.random() < 0.5:
                return outcome("FAILED", "EXCHANGE_CONNECTION_FAILED",
                               "connection reset by exchange")
            return outcome("FAILED", "EXCHANGE_TIMEOUT", no_answer, latency=timeout_ms)

        if order.quantity > MAX_LIQUIDITY:
            return outcome("REJECTED", "INSUFFICIENT_LIQUIDITY",
                           f"quantity {order.quantity} exceeds the {MAX_LIQUIDITY} shares "
                           "the book can fill")
        bad = chaos.get("bad-fills")
        if (bad is not None and order.limit_price is not None
                and self.rng.random() < (1.0 if bad.rate is None else bad.rate)):
            # The bad release ignores the limit, and says it filled as usual.
            limit = float(order.limit_price)
            price = (max(market, limit) * (1 + BAD_FILL_SLIP) if order.side == "BUY"
                     else min(market, limit) * (1 - BAD_FILL_SLIP))
            return outcome("FILLED", "LIMIT_ORDER_FILLED", "filled at market",
                           max(MIN_PRICE, round(price, 4)))
        if order.limit_price is None:
            return outcome("FILLED", "MARKET_ORDER_FILLED", "filled at market", market)
        limit = float(order.limit_price)
        if order.side == "BUY":
            if limit >= market:
                return outcome("FILLED", "LIMIT_ORDER_FILLED", "filled at market", market)
            if (market - limit) / market <= LIMIT_REACH:
                return outcome("FILLED", "LIMIT_ORDER_FILLED", "filled at limit", limit)
        else:
            if limit <= market:
                return outcome("FILLED", "LIMIT_ORDER_FILLED", "filled at market", market)
            if (limit - market) / market <= LIMIT_REACH:
                return outcome("FILLED", "LIMIT_ORDER_FILLED", "filled at limit", limit)
        return outcome("REJECTED", "LIMIT_NOT_REACHABLE",
                       f"{order.side} limit {limit:.4f} is more than {LIMIT_REACH:.0%} "
                       f"from the market {market:.4f}")
