"""Operator queries: one trade with its history, and what failed lately.

    trade = find_trade(url, trade_id=10)        # {"id": 10, ..., "events": [...]}
    report = investigate_failures(url, limit=20, since_s=3600, symbol="AAPL")
    report.summary.by_reason                    # {"EXCHANGE_CONNECTION_FAILED": 12}
    report.failures[0].status                   # TradeStatus.FAILED
    report.as_dict()                            # what `--json` prints

Both take a database URL (or, for find_trade, an open psycopg connection) and
read through a read-only connection. find_trade returns a JSON-ready dict, and
investigate_failures a FailureReport whose as_dict() is one; in both, timestamps
are ISO 8601 strings in UTC ("2024-05-01T12:00:00.123456Z", as the API), ids,
quantities and counts are integers, prices are JSON numbers (floats; the database
keeps them exact as numeric(18,4), and four decimals print back exactly).

The failure window is by the trade's `created_at` (the engine settles a trade
within moments of its creation), which is what the partial indexes serve.
A failure reason "EXCHANGE_CONNECTION_FAILED: CHAOS: …" is grouped by its code,
the text before the first colon.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tradelab.const import TradeStatus
from tradelab.db.connect import connect, redact
from tradelab.errors import TradelabError

TRADE_COLUMNS = (
    "id", "client_order_id", "symbol", "side", "quantity", "limit_price", "status",
    "fill_price", "failure_reason", "venue", "source", "created_at", "updated_at",
)
FAILURE_COLUMNS = (
    "id", "client_order_id", "symbol", "side", "quantity", "status", "failure_reason",
    "venue", "created_at", "updated_at",
)
# The reason code: text before the first colon, or the whole reason.
_MAX_WINDOW_S = 100 * 365 * 86400
_REASON_CODE = "coalesce(nullif(btrim(split_part(failure_reason, ':', 1)), ''), 'UNKNOWN')"


def find_trade(conn_or_url: Any, trade_id: int | None = None,
               client_order_id: str | None = None) -> dict[str, Any]:
    """The trade with its `events` (oldest first); TradelabError when unknown."""
    if (trade_id is None) == (client_order_id is None):
        raise TradelabError("give exactly one of a trade id or a client order id")
    if isinstance(conn_or_url, str):
        with open_read_only(conn_or_url) as conn:
            return _find_trade(conn, trade_id, client_order_id, conn_or_url)
    return _find_trade(conn_or_url, trade_id, client_order_id, None)


@dataclass(frozen=True)
class Failure:
    """One FAILED trade, as investigate-failures lists it."""

    id: int
    client_order_id: str
    symbol: str
    side: str
    quantity: int
    status: TradeStatus
    failure_reason: str | None
    venue: str | None  # the venue that failed it (None: failed before routing)
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class FailureWindow:
    since: str
    until: str
    seconds: float
    label: str  # "1h", "0.5s"


@dataclass(frozen=True)
class FailureSummary:
    window: FailureWindow
    symbol: str | None
    total: int  # failed trades in the window
    shown: int
    trades_in_window: int
    failure_ratio: float | None  # None: no trade in the window at all
    first_failure_at: str | None
    last_failure_at: str | None
    by_reason: dict[str, int]  # reason code -> count, biggest first
    by_symbol: dict[str, int]
    by_venue: dict[str, int]  # "unrouted": failed before reaching a venue


@dataclass(frozen=True)
class FailureReport:
    failures: list[Failure]
    summary: FailureSummary

    def as_dict(self) -> dict[str, Any]:
        """The JSON `investigate-failures --json` prints (statuses as plain text)."""
        report = asdict(self)
        for failure in report["failures"]:
            failure["status"] = str(failure["status"])
        return report


def investigate_failures(url: str, limit: int = 20, since_s: float = 3600,
                         symbol: str | None = None) -> FailureReport:
    """FAILED trades of the last `since_s` seconds, newest first, and a summary."""
    if limit < 1:
        raise TradelabError(f"invalid limit {limit}: must be at least 1")
    if not 0 < since_s <= _MAX_WINDOW_S:
        raise TradelabError(f"invalid window {since_s:g}s: must be more than zero and "
                            "at most 100 years")
    import psycopg

    with open_read_only(url) as conn, _explained(url):
        # One snapshot for the list and the summary, so their counts agree.
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        return _investigate(conn, limit, since_s, symbol)


def open_read_only(url: str):
    """A read-only psycopg connection to `url` (a TradelabError if it cannot be had)."""
    conn = connect(url)
    conn.read_only = True
    return conn


# -- queries ---------------------------------------------------------------------

FIND_TRADE_SQL = {
    "id": f"SELECT {', '.join(TRADE_COLUMNS)} FROM trades WHERE id = %s",
    "client_order_id": f"SELECT {', '.join(TRADE_COLUMNS)} FROM trades"
                       " WHERE client_order_id = %s",
}
TRADE_EVENTS_SQL = ("SELECT created_at, event, status, detail FROM trade_events"
                    " WHERE trade_id = %s ORDER BY created_at, id")


def failure_queries(symbol: str | None) -> dict[str, str]:
    """The investigate-failures queries; parameters since, symbol, limit (by name)."""
    by_symbol = "AND symbol = %(symbol)s" if symbol else ""
    failed = f"status = '{TradeStatus.FAILED}' AND created_at >= %(since)s {by_symbol}"
    return {
        "failures": f"SELECT {', '.join(FAILURE_COLUMNS)} FROM trades WHERE {failed}"
                    " ORDER BY created_at DESC, id DESC LIMIT %(limit)s",
        "totals": f"SELECT count(*), min(created_at), max(created_at) FROM trades"
                  f" WHERE {failed}",
        "in_window": f"SELECT count(*) FROM trades WHERE created_at >= %(since)s {by_symbol}",
        "by_reason": f"SELECT {_REASON_CODE} AS code, count(*) FROM trades WHERE {failed}"
                     " GROUP BY code ORDER BY count(*) DESC, code",
        "by_venue": f"SELECT coalesce(venue, 'unrouted') AS v, count(*) FROM trades"
                    f" WHERE {failed} GROUP BY v ORDER BY count(*) DESC, v",
        "by_symbol": f"SELECT symbol, count(*) FROM trades WHERE {failed}"
                     " GROUP BY symbol ORDER BY count(*) DESC, symbol",
    }


def _find_trade(conn, trade_id, client_order_id, url) -> dict[str, Any]:
    key, value = ("id", trade_id) if trade_id is not None else (
        "client_order_id", client_order_id)
    with _explained(url):
        row = conn.execute(FIND_TRADE_SQL[key], (value,)).fetchone()
        if row is None:
            what = f"{trade_id}" if trade_id is not None else f"with client order id {value}"
            raise TradelabError(f"trade {what} not found")
        trade = _record(TRADE_COLUMNS, row)
        events = conn.execute(TRADE_EVENTS_SQL, (trade["id"],)).fetchall()
    trade["events"] = [_record(("time", "event", "status", "detail"), e) for e in events]
    return trade


def _investigate(conn, limit: int, since_s: float, symbol: str | None) -> FailureReport:
    since, until = conn.execute(
        "SELECT now() - make_interval(secs => %s), now()", (since_s,)).fetchone()
    params = {"since": since, "symbol": symbol, "limit": limit}
    sql = failure_queries(symbol)
    rows = conn.execute(sql["failures"], params).fetchall()
    total, first, last = conn.execute(sql["totals"], params).fetchone()
    in_window = conn.execute(sql["in_window"], params).fetchone()[0]
    reasons = conn.execute(sql["by_reason"], params).fetchall()
    symbols = conn.execute(sql["by_symbol"], params).fetchall()
    venues = conn.execute(sql["by_venue"], params).fetchall()

    from tradelab.durations import format_duration

    failures = []
    for row in rows:
        record = _record(FAILURE_COLUMNS, row)
        failures.append(Failure(**{**record, "status": TradeStatus(record["status"])}))
    label = format_duration(since_s) if since_s >= 1 else f"{since_s:g}s"
    return FailureReport(failures, FailureSummary(
        window=FailureWindow(_iso(since) or "", _iso(until) or "", since_s, label),
        symbol=symbol,
        total=total,
        shown=len(rows),
        trades_in_window=in_window,
        failure_ratio=round(total / in_window, 4) if in_window else None,
        first_failure_at=_iso(first),
        last_failure_at=_iso(last),
        by_reason={code: n for code, n in reasons},
        by_symbol={sym: n for sym, n in symbols},
        by_venue={venue: n for venue, n in venues},
    ))


# -- JSON-ready values -------------------------------------------------------------

def _record(columns, row) -> dict[str, Any]:
    return {c: _plain(v) for c, v in zip(columns, row, strict=True)}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, Decimal):
        return float(value)
    return value


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class _explained:
    """Turns a database error during a query into a TradelabError saying what to do."""

    def __init__(self, url: str | None) -> None:
        self.where = f" at {redact(url)}" if url else ""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        import psycopg

        if exc is None or not isinstance(exc, psycopg.Error):
            return False
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate == "42P01":  # undefined_table
            raise TradelabError(
                f"no trades table in the database{self.where}: run `tradelab db migrate`"
            ) from None
        if sqlstate == "42501":
            raise TradelabError(
                f"this database user may not read trades{self.where}: use the operator "
                "role (run `tradelab db migrate` to create it)") from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if isinstance(exc, psycopg.OperationalError):
            raise TradelabError(f"lost the database connection{self.where}: {first}") from None
        raise TradelabError(f"database error{self.where}: {first}") from None
