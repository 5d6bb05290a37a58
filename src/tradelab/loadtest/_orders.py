"""Placing and reading orders the way a careful client does; shared by the users.

    trade_id = place_order(user)    # unique client_order_id; a 503 is retried with the same key
    read_trade(user, trade_id)      # GET /trades/<id>, reported as "/trades/[id]"

Each order goes into the run's ledger as attempted (with its body) before it is sent,
as acknowledged once the API answers 201 (or 200: a replay of the same key found it
committed), and as unanswered when its last try got no answer or an error. A run's
ledger is closed once the run has stopped and its last order in flight is through.

While the retry-storm fault is on (the lab's chaos file, $TRADELAB_CHAOS_FILE), each
order is sent STORM_COPIES times at once with its one key, like a client whose retry
loop has run away; every answer with a trade id is an acknowledgement in the ledger, so
`tradelab verify` sees a duplicate if the API ever stored or answered two trades. With
--persist a user that saw the storm is stuck in its retry loop: it resends the order it
has in flight again and again, also after the fault is off, until a 503 with
Retry-After (`tradelab ops halt`) makes it back off and start afresh.
COUNTERS holds this process's tallies for /metrics; workers send theirs to the
master with every stats report (see _hooks).
"""

from __future__ import annotations

import logging
import os
import random
import re
import uuid

import gevent
from _ledger import LEDGER_DIR_ENV, Ledger, is_safe_run_id

log = logging.getLogger("tradelab.load")

MAX_ATTEMPTS = 5
STORM_COPIES = 4  # retry-storm: sends of each order, all at once, with its one key
STORM_FAULT = "retry-storm"
STUCK_PAUSE_S = 0.1  # retry-storm --persist: between two resends of the order in flight
MAX_RETRY_AFTER_S = 30.0
# The defaults of tradelab's `symbols` setting; `tradelab load` passes the lab's own.
DEFAULT_SYMBOLS = ("AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "TSLA", "JPM")


class Counters:
    """Order outcomes and response codes seen by this process since the run started."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.orders = {"attempted": 0, "acknowledged": 0, "retried": 0, "resent": 0}
        self.responses: dict[tuple[str, str, str], int] = {}

    def response(self, method: str, name: str, code: int) -> None:
        key = (method, name, str(code))
        self.responses[key] = self.responses.get(key, 0) + 1

    def take(self) -> dict:
        """The tallies as plain data (for a worker's report), then start again from zero."""
        data = {"orders": dict(self.orders),
                "responses": [[*key, n] for key, n in self.responses.items()]}
        self.clear()
        return data

    def add(self, data: dict) -> None:
        """Add a worker's report (the output of `take`)."""
        for outcome, n in data.get("orders", {}).items():
            self.orders[outcome] = self.orders.get(outcome, 0) + n
        for method, name, code, n in data.get("responses", []):
            key = (method, name, code)
            self.responses[key] = self.responses.get(key, 0) + n


COUNTERS = Counters()
_ledgers: dict[str, Ledger] = {}  # run id -> this process's open ledger
_in_flight: dict[str, int] = {}  # run id -> orders being seen through
_stopped: set[str] = set()  # runs that ended: their ledgers close once nothing is in flight
_warned_no_ledger = False


def run_id(environment) -> str:
    return getattr(environment.parsed_options, "tradelab_run_id", "") or "unnamed"


def ledger_for(environment) -> Ledger | None:
    """This process's ledger for the current run; None when no ledger directory is set."""
    global _warned_no_ledger
    directory = os.environ.get(LEDGER_DIR_ENV)
    if not directory:
        if not _warned_no_ledger:
            log.warning("%s is not set: orders are not written to a ledger", LEDGER_DIR_ENV)
            _warned_no_ledger = True
        return None
    rid = run_id(environment)
    if not is_safe_run_id(rid):  # the master replaces such ids; never make it a path
        log.error("run id %r is not a safe folder name: orders are not written to a ledger",
                  rid)
        return None
    _stopped.discard(rid)
    if rid not in _ledgers:
        _ledgers[rid] = Ledger(directory, rid)
    return _ledgers[rid]


def retire_ledgers() -> None:
    """The run stopped: close each ledger now, or when its last order in flight is through
    (Locust lets a stopping user finish its request, and that answer belongs in the ledger)."""
    _stopped.update(_ledgers)
    for rid in list(_stopped):
        _close_if_idle(rid)


def close_ledgers() -> None:
    while _ledgers:
        _ledgers.popitem()[1].close()
    _stopped.clear()


def _close_if_idle(rid: str) -> None:
    if rid in _stopped and not _in_flight.get(rid) and rid in _ledgers:
        _ledgers.pop(rid).close()
        _stopped.discard(rid)


def symbols(environment) -> list[str]:
    """The lab's symbols: --tradelab-symbols / TRADELAB_SYMBOLS ("AAPL,MSFT" or "[AAPL, MSFT]")."""
    text = getattr(environment.parsed_options, "tradelab_symbols", "") or ""
    found = [s.strip("'\"") for s in re.split(r"[\s,\[\]]+", text) if s.strip("'\"")]
    return found or list(DEFAULT_SYMBOLS)


def new_order(symbol_list: list[str]) -> dict:
    order: dict[str, object] = {
        "client_order_id": f"load-{uuid.uuid4().hex}",
        "symbol": random.choice(symbol_list),
        "side": random.choice(("BUY", "SELL")),
        "quantity": random.randint(1, 500),
    }
    if random.random() < 0.5:  # half are limit orders, priced to the cent
        order["limit_price"] = round(random.uniform(10, 900), 2)
    return order


def place_order(user) -> int | None:
    """POST one new order; the trade id once acknowledged, else None."""
    # The order is seen through in a greenlet of its own: when Locust stops a user it can
    # kill it mid-request, and an order the api then commits would never be acknowledged.
    return gevent.spawn(_place_order, user).get()


def _place_order(user) -> int | None:
    order = new_order(symbols(user.environment))
    ledger = ledger_for(user.environment)
    if ledger is None:
        return _send(user, order, None)
    _in_flight[ledger.run_id] = _in_flight.get(ledger.run_id, 0) + 1
    try:
        return _send(user, order, ledger)
    finally:
        _in_flight[ledger.run_id] -= 1
        _close_if_idle(ledger.run_id)


def _send(user, order: dict, ledger: Ledger | None) -> int | None:
    key = order["client_order_id"]
    if ledger:
        ledger.attempted(order)
    COUNTERS.orders["attempted"] += 1
    copies = [gevent.spawn(_resend, user, order, ledger)
              for _ in range(storm_copies(user) - 1)]
    try:
        trade_id = _send_until_answered(user, order, ledger, key)
    finally:
        gevent.joinall(copies)
    while getattr(user, "tradelab_storm_persists", False) and not _stopping(user):
        _resend(user, order, ledger)  # stuck in its retry loop; a Retry-After ends it
        gevent.sleep(STUCK_PAUSE_S)
    return trade_id


def _resend(user, order: dict, ledger: Ledger | None) -> None:
    """One more send of `order` with its key (a retry storm); a trade id is an ack."""
    COUNTERS.orders["resent"] += 1
    with user.client.post("/trades", json=order, name="/trades",
                          catch_response=True) as resp:
        if resp.status_code == 503:
            _back_off(user, resp)
        if resp.status_code not in (200, 201):
            resp.failure(_describe(resp))
            return
        try:
            trade_id = int(resp.json()["id"])
        except (ValueError, KeyError, TypeError):
            resp.failure(f"{resp.status_code} without a trade id in the body")
            return
        resp.success()
        if ledger:
            ledger.acknowledged(order["client_order_id"], trade_id, resp.status_code)


def storm_copies(user) -> int:
    """How many times to send the next order: STORM_COPIES in a retry storm, else 1."""
    fault = _storm()
    if fault is not None and fault.persists:
        user.tradelab_storm_persists = True
    if fault is not None or getattr(user, "tradelab_storm_persists", False):
        return STORM_COPIES
    return 1


def _back_off(user, resp) -> None:
    """A 503 with Retry-After: the server asks clients to back off; a persisting storm
    ends there (the client's retry loop starts afresh)."""
    if resp.headers.get("Retry-After"):
        user.tradelab_storm_persists = False


_storm_reader = None


def _storm():
    """The retry-storm fault if it is on (None without a chaos file or tradelab)."""
    global _storm_reader
    if _storm_reader is None:
        path = os.environ.get("TRADELAB_CHAOS_FILE")
        try:
            from tradelab.chaos_state import ChaosReader
        except ImportError:  # a Locust image without tradelab: no chaos for the clients
            path = None
        _storm_reader = ChaosReader(path) if path else False
    return _storm_reader.get(STORM_FAULT) if _storm_reader else None


def _send_until_answered(user, order: dict, ledger: Ledger | None, key: str) -> int | None:
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with user.client.post("/trades", json=order, name="/trades",
                              catch_response=True) as resp:
            code = resp.status_code
            if code in (200, 201):
                try:
                    trade_id = int(resp.json()["id"])
                except (ValueError, KeyError, TypeError):
                    resp.failure(f"{code} without a trade id in the body")
                    if ledger:
                        ledger.unanswered(key, code, "no trade id in the body")
                    return None
                resp.success()
                if ledger:
                    ledger.acknowledged(key, trade_id, code)
                COUNTERS.orders["acknowledged"] += 1
                return trade_id
            if code == 503:
                _back_off(user, resp)
            if code != 503 or attempt == MAX_ATTEMPTS or _stopping(user):
                resp.failure(_describe(resp))
                if ledger:
                    ledger.unanswered(key, code, _describe(resp))
                return None
            delay = _retry_after(resp.headers.get("Retry-After"))
            resp.failure(f"503, retrying after {delay:g}s with the same client_order_id")
        COUNTERS.orders["retried"] += 1
        gevent.sleep(delay)
    return None


def _stopping(user) -> bool:
    return getattr(user.environment.runner, "state", "") in ("stopping", "cleanup", "stopped")


def read_trade(user, trade_id: int) -> None:
    user.client.get(f"/trades/{trade_id}", name="/trades/[id]")


def _describe(resp) -> str:
    # The error code, not the message: messages carry ids and would split Locust's error table.
    try:
        return f"{resp.status_code} {resp.json().get('error', '')}".strip()
    except (ValueError, AttributeError, TypeError):
        return f"{resp.status_code} {getattr(resp, 'error', '') or ''}".strip()


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value or ""), 0.1), MAX_RETRY_AFTER_S)
    except (TypeError, ValueError):
        return 1.0  # absent, or an HTTP date: a short pause is a safe guess
