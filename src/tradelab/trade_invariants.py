"""The rules every trade keeps, checked over rows read from the trades and trade_events tables.

    found = check_invariants(trades, events_by_trade, healthy_for_s=60)
    [(kind, trade, detail), ...]        # kind: left_new | broken_trail | outside_limit

`trades` are dicts with id, client_order_id, side, limit_price, status, fill_price,
created_at; `events_by_trade` maps a trade id to its events (dicts with id, event,
status, created_at) in id order. Plain functions over plain rows: tradelab.verify reads
them (operator role) and the tests can plant any defect.

- left_new: a trade still NEW although the engine, which always picks the oldest NEW
  trades first, has finished a younger trade `healthy_for_s` or more after this one
  was created. The engine was then working and passing it by for that long. While the
  engine is down or stalled nothing younger is finished, so a backlog is not flagged;
  once it comes back, the oldest trades go first.
- broken_trail: the first event is "received" (status NEW); timestamps never go back;
  a FILLED, REJECTED or FAILED trade has exactly one event with a final status, it is
  the last one and its status is the trade's; a NEW trade has no final event. Statuses
  beyond these (other venues, risk) are checked for the first two rules only.
- outside_limit: a FILLED limit order filled above its limit (BUY) or below it (SELL),
  or a FILLED trade without a fill price.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tradelab.const import TradeStatus

FINAL_STATUSES = (TradeStatus.FILLED, TradeStatus.REJECTED, TradeStatus.FAILED)
INVARIANT_KINDS = ("left_new", "broken_trail", "outside_limit")

Found = tuple[str, Mapping[str, Any], str]


def check_invariants(trades: Sequence[Mapping[str, Any]],
                     events_by_trade: Mapping[int, Sequence[Mapping[str, Any]]],
                     healthy_for_s: float) -> list[Found]:
    found: list[Found] = []
    found += left_new(trades, events_by_trade, healthy_for_s)
    for trade in trades:
        problem = trail_problem(trade, events_by_trade.get(trade["id"], []))
        if problem:
            found.append(("broken_trail", trade, problem))
        problem = fill_problem(trade)
        if problem:
            found.append(("outside_limit", trade, problem))
    return found


def left_new(trades: Sequence[Mapping[str, Any]],
             events_by_trade: Mapping[int, Sequence[Mapping[str, Any]]],
             healthy_for_s: float) -> list[Found]:
    """NEW trades the engine passed by for `healthy_for_s` (see the module docstring)."""
    ends = sorted((t["created_at"], _final_time(events_by_trade.get(t["id"], [])))
                  for t in trades if t["status"] != TradeStatus.NEW)
    finished = [(born, done) for born, done in ends if done is not None]
    births = [born for born, _ in finished]
    latest_after = _suffix_max([done for _, done in finished])
    grace = timedelta(seconds=healthy_for_s)
    found: list[Found] = []
    for trade in trades:
        if trade["status"] != TradeStatus.NEW:
            continue
        first_younger = bisect.bisect_right(births, trade["created_at"])
        if first_younger == len(births):
            continue
        last_done = latest_after[first_younger]
        if last_done - trade["created_at"] >= grace:
            waited = (last_done - trade["created_at"]).total_seconds()
            found.append(("left_new", trade, f"still NEW, while the engine finished younger "
                          f"trades for {waited:.0f}s after it (up to {_iso(last_done)})"))
    return found


def trail_problem(trade: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> str | None:
    """What is wrong with this trade's event trail, or None."""
    if not events:
        return "no events at all (not even received)"
    first = events[0]
    if (first["event"], first["status"]) != ("received", TradeStatus.NEW):
        return f"first event is {first['event']}/{first['status']}, not received/NEW"
    for before, after in zip(events, events[1:], strict=False):
        if after["created_at"] < before["created_at"]:
            return (f"event {after['id']} ({after['event']}) is timed before the event "
                    f"{before['id']} ({before['event']}) recorded ahead of it")
    finals = [e for e in events if e["status"] in FINAL_STATUSES]
    status = trade["status"]
    if status == TradeStatus.NEW:
        return f"still NEW but has a final event {finals[0]['event']}" if finals else None
    if status not in FINAL_STATUSES:
        return None
    if len(finals) != 1:
        what = ", ".join(e["event"] for e in finals) or "none"
        return f"{status} with {len(finals)} final events ({what}), not exactly one"
    if finals[0] is not events[-1]:
        return f"final event {finals[0]['event']} is followed by {events[-1]['event']}"
    if finals[0]["status"] != status:
        return f"trade is {status} but its final event says {finals[0]['status']}"
    return None


def fill_problem(trade: Mapping[str, Any]) -> str | None:
    """A FILLED trade outside its limit price, or without a fill price; else None."""
    if trade["status"] != TradeStatus.FILLED:
        return None
    fill, limit = trade["fill_price"], trade["limit_price"]
    if fill is None:
        return "FILLED without a fill price"
    if limit is None:
        return None
    if trade["side"] == "BUY" and fill > limit:
        return f"BUY filled at {float(fill)!r} above its limit {float(limit)!r}"
    if trade["side"] == "SELL" and fill < limit:
        return f"SELL filled at {float(fill)!r} below its limit {float(limit)!r}"
    return None


def _final_time(events: Iterable[Mapping[str, Any]]) -> datetime | None:
    times = [e["created_at"] for e in events if e["status"] in FINAL_STATUSES]
    return max(times) if times else None


def _suffix_max(values: list[datetime]) -> list[datetime]:
    out = list(values)
    for i in range(len(out) - 2, -1, -1):
        out[i] = max(out[i], out[i + 1])
    return out


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
