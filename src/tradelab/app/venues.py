"""Simulated venues and their market-data feeds, as the engine sees them.

    venues = Venues(settings, rng)
    venues.tick(active_faults)                 # every engine loop: the feeds move on
    quote = venues.quote("beta", "AAPL")       # Quote(price, age_s)
    outcome = venues.execute("beta", order, active_faults)

Each venue is its own SimulatedExchange (own latency, own baseline failures, own
price walk). Its feed publishes that venue's price for every symbol on each tick;
the fault `market-data-stale` freezes a venue's feed, so its quotes age. Exchange
faults carrying a venue act on that venue only; without one, on every venue.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from tradelab.app.exchange import Order, Outcome, SimulatedExchange

STALE_FAULT = "market-data-stale"


@dataclass(frozen=True)
class Quote:
    price: float
    age_s: float


def faults_for(venue: str, active: dict[str, Any]) -> dict[str, Any]:
    """The active faults that act on `venue` (those naming no venue act on all)."""
    return {name: f for name, f in active.items()
            if getattr(f, "venue", None) in (None, venue)}


class Venues:
    def __init__(self, settings: Any, rng: random.Random | None = None,
                 clock=time.monotonic) -> None:
        self.rng = rng or random.Random()
        self._clock = clock
        trading, engine, symbols = settings.trading, settings.engine, settings.symbols
        self.names = list(trading.venues)
        self.exchanges = {
            name: SimulatedExchange(
                symbols, tuple(v.latency_ms or engine.exchange_latency_ms),
                engine.baseline_failure_rate if v.baseline_failure_rate is None
                else v.baseline_failure_rate, rng=self.rng, clock=clock,
                timeout_ms=trading.venue_timeout_ms)
            for name, v in trading.venues.items()
        }
        self.symbols = list(symbols)
        now = clock()
        self._quotes = {(v, s): (self.exchanges[v].price(s), now)
                        for v in self.names for s in self.symbols}

    def tick(self, active: dict[str, Any]) -> None:
        """Publish every venue's current prices, except from the feeds a fault froze."""
        now = self._clock()
        for venue in self.names:
            if STALE_FAULT in faults_for(venue, active):
                continue
            for symbol in self.symbols:
                self._quotes[(venue, symbol)] = (self.exchanges[venue].price(symbol), now)

    def quote(self, venue: str, symbol: str) -> Quote:
        if (venue, symbol) not in self._quotes:  # a symbol outside the settings' list
            self._quotes[(venue, symbol)] = (self.exchanges[venue].price(symbol), self._clock())
            self.symbols.append(symbol)
        price, at = self._quotes[(venue, symbol)]
        return Quote(price, max(0.0, self._clock() - at))

    def ages(self) -> dict[tuple[str, str], float]:
        now = self._clock()
        return {key: max(0.0, now - at) for key, (_, at) in self._quotes.items()}

    def execute(self, venue: str, order: Order, active: dict[str, Any]) -> Outcome:
        return self.exchanges[venue].execute(order, faults_for(venue, active))

    def price(self, symbol: str) -> float:
        """A reference price for `symbol` (the first venue's), e.g. to price flow orders."""
        return self.exchanges[self.names[0]].price(symbol)
