"""`tradelab verify`: no acknowledged order lost, altered or duplicated, and trades keep the rules.

    report = verify(settings, lab)                                # the latest load run
    report = verify(settings, lab, run_id="20250101T120000Z-ab12", healthy_for_s=60)
    report.ok                       # False on any violation
    report.counts["lost"]           # ok, lost, altered, unexpected, duplicate,
                                    # indeterminate_present, indeterminate_absent
    report.violations[0]            # Violation(kind, client_order_id, trade_id, detail)
    report.as_dict()                # JSON-ready, every violation included

A load run's ledger (tradelab.loadtest._ledger) is reconciled against the trades table
like Jepsen's set-full check. Every attempted order gets one label:
- ok: acknowledged, stored once, with the body that was sent, under the acknowledged id;
- lost: acknowledged (201, or 200 for a replay) but not in the database;
- altered: in the database with another symbol, side, quantity or limit price;
- duplicate: its key stored more than once, or acknowledged with more than one trade id,
  or acknowledged with an id that is not the stored trade's;
- indeterminate_present / indeterminate_absent: no acknowledgement came (timeout, reset,
  5xx, a killed worker): either is fine, the count says which happened.
And every load-generated row (client_order_id "load-…") created during the run that no
ledger of the lab attempted is unexpected; the engine's own flow ("flow-…") and other
clients are not load rows. Then the trading invariants (tradelab.trade_invariants) over
every trade created since the run began: no NEW left behind once the engine has been
working past it for `healthy_for_s`, complete ordered event trails, no fill outside its
limit. Without a run id, the latest run is verified; without any run, the invariants
over all trades only. The database is read as the operator role (db.connect.resolve_url),
through a read-only connection, in one snapshot.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from tradelab.errors import TradelabError
from tradelab.loadtest._ledger import (
    ORDER_FIELDS,
    LedgerSummary,
    check_run_id,
    read_ledger,
    run_dirs,
)
from tradelab.trade_invariants import INVARIANT_KINDS, check_invariants

COUNT_KEYS = ("ok", "lost", "altered", "unexpected", "duplicate", "indeterminate_present",
              "indeterminate_absent")
VIOLATION_KINDS = ("lost", "altered", "unexpected", "duplicate", *INVARIANT_KINDS)
LOAD_PREFIX = "load-"
# Ledger times come from the load generator's clock, row times from the database's.
CLOCK_SLACK_S = 5.0
# An order in flight at the run's last ledger line is committed within moments.
RUN_TAIL_S = 30.0


@dataclass(frozen=True)
class Violation:
    kind: str
    client_order_id: str | None
    trade_id: int | None
    detail: str


@dataclass
class VerifyReport:
    run_id: str | None
    healthy_for_s: float
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))
    invariants: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INVARIANT_KINDS,
                                                                             0))
    violations: list[Violation] = field(default_factory=list)
    checked: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_kind(self) -> dict[str, int]:
        return dict(Counter(v.kind for v in self.violations))

    def summary_line(self) -> str:
        """One line: 'no violations…' or '3 violations: 2 lost (load-…, …), 1 altered (…)'."""
        if self.ok:
            return (f"no violations: {self.counts['ok']} acknowledged orders ok, "
                    f"{self.checked.get('trades', 0)} trades keep the invariants")
        parts = []
        for kind, n in self.by_kind().items():
            names = [v.client_order_id or f"trade {v.trade_id}" for v in self.violations
                     if v.kind == kind][:3]
            parts.append(f"{n} {kind} ({', '.join(names)}{', …' if n > 3 else ''})")
        return f"{len(self.violations)} violations: " + "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "run_id": self.run_id, "healthy_for_s": self.healthy_for_s,
                "counts": dict(self.counts), "invariants": dict(self.invariants),
                "checked": dict(self.checked),
                "violations": [asdict(v) for v in self.violations]}


def verify(settings: Any, lab: Any, run_id: str | None = None, healthy_for_s: float = 60.0,
           database_url: str | None = None) -> VerifyReport:
    """Reconcile a load run (default: the latest) and check the invariants; see above."""
    if not 0 < healthy_for_s < float("inf"):
        raise TradelabError(f"invalid healthy window {healthy_for_s!r}: must be a positive "
                            "number of seconds")
    ledger_root = Path(lab.state_dir) / "load"
    run_dir = _run_dir(ledger_root, run_id)
    ledger = read_ledger(run_dir) if run_dir else None
    from tradelab.db.connect import resolve_url

    url = resolve_url(database_url, settings, lab, "operator")
    return reconcile(url, ledger, _all_attempted(ledger_root), healthy_for_s)


def reconcile(url: str, ledger: LedgerSummary | None, lab_attempted: set[str],
              healthy_for_s: float) -> VerifyReport:
    """The check itself, on one ledger (or none) and the keys every ledger attempted."""
    import psycopg

    from tradelab.ops import _explained, open_read_only

    report = VerifyReport(ledger.run_id if ledger else None, healthy_for_s)
    with open_read_only(url) as conn, _explained(url):
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        now = conn.execute("SELECT now()").fetchone()[0]
        since = _since(ledger)
        if ledger is not None:
            _check_ledger(conn, ledger, lab_attempted, now, report)
        _check_duplicate_keys(conn, since, report)
        trades = _rows(conn, _TRADES_SQL, {"since": since})
        events: dict[int, list[dict]] = defaultdict(list)
        for event in _rows(conn, _EVENTS_SQL, {"since": since}):
            events[event["trade_id"]].append(event)
    for kind, trade, detail in check_invariants(trades, events, healthy_for_s):
        report.invariants[kind] += 1
        report.violations.append(Violation(kind, trade["client_order_id"], trade["id"], detail))
    report.checked.update(trades=len(trades), since=_iso(since), at=_iso(now))
    return report


# -- the ledger against the table -------------------------------------------------------

_ROWS_BY_KEY_SQL = ("SELECT id, client_order_id, symbol, side, quantity, limit_price"
                    " FROM trades WHERE client_order_id = ANY(%(keys)s) ORDER BY id")
_LOAD_ROWS_SQL = ("SELECT id, client_order_id FROM trades WHERE created_at >= %(since)s"
                  " AND created_at <= %(until)s AND starts_with(client_order_id, %(prefix)s)"
                  " ORDER BY id")
_DUPLICATE_KEYS_SQL = ("SELECT client_order_id, array_agg(id ORDER BY id) FROM trades"
                       " WHERE created_at >= %(since)s GROUP BY client_order_id"
                       " HAVING count(*) > 1 ORDER BY min(id)")
_TRADES_SQL = ("SELECT id, client_order_id, side, limit_price, status, fill_price, created_at"
               " FROM trades WHERE created_at >= %(since)s ORDER BY created_at, id")
_EVENTS_SQL = ("SELECT e.trade_id, e.id, e.event, e.status, e.created_at FROM trade_events e"
               " JOIN trades t ON t.id = e.trade_id WHERE t.created_at >= %(since)s"
               " ORDER BY e.trade_id, e.id")


def _check_ledger(conn, ledger: LedgerSummary, lab_attempted: set[str], now: datetime,
                  report: VerifyReport) -> None:
    rows: dict[str, list[dict]] = defaultdict(list)
    for row in _rows(conn, _ROWS_BY_KEY_SQL, {"keys": sorted(ledger.attempted)}):
        rows[row["client_order_id"]].append(row)
    for key in sorted(ledger.attempted):
        label, violation = _label(key, rows.get(key, []), ledger)
        report.counts[label] += 1
        if violation:
            report.violations.append(violation)
    window = {"since": _since(ledger),
              "until": datetime.fromtimestamp(ledger.last_ts + RUN_TAIL_S, UTC)
              if ledger.last_ts else now, "prefix": LOAD_PREFIX}
    for row in _rows(conn, _LOAD_ROWS_SQL, window):
        if row["client_order_id"] not in lab_attempted:
            report.counts["unexpected"] += 1
            report.violations.append(Violation(
                "unexpected", row["client_order_id"], row["id"],
                "a load order no ledger of this lab attempted"))
    report.checked.update(attempted=len(ledger.attempted),
                          acknowledged=len(ledger.acknowledged),
                          ledger=str(ledger.run_dir), ledger_files=len(ledger.files))


def _label(key: str, rows: list[dict], ledger: LedgerSummary
           ) -> tuple[str, Violation | None]:
    acked = ledger.acknowledgements.get(key, set())
    first = rows[0]["id"] if rows else None
    if len(rows) > 1:
        ids = ", ".join(str(r["id"]) for r in rows)
        return "duplicate", Violation("duplicate", key, first, f"stored {len(rows)} times "
                                      f"(trades {ids})")
    if len(acked) > 1:
        ids = " and ".join(str(i) for i in sorted(acked))
        return "duplicate", Violation("duplicate", key, first, f"acknowledged as trades {ids}")
    if acked and not rows:
        trade_id = next(iter(acked))
        return "lost", Violation("lost", key, trade_id,
                                 f"acknowledged as trade {trade_id}, not in the database")
    if acked and first not in acked:
        return "duplicate", Violation("duplicate", key, first, f"acknowledged as trade "
                                      f"{next(iter(acked))}, stored as trade {first}")
    if rows and key in ledger.orders:
        changes = _changes(ledger.orders[key], rows[0])
        if changes:
            return "altered", Violation("altered", key, first, "stored with " + changes)
    if acked:
        return "ok", None
    return ("indeterminate_present" if rows else "indeterminate_absent"), None


def _changes(sent: dict, row: dict) -> str:
    """'quantity 5 (sent 7), …' for each field stored differently from what was sent."""
    diffs = []
    for name in ORDER_FIELDS:
        want, got = sent.get(name), row[name]
        if name == "limit_price":
            same = (want is None and got is None) or (
                want is not None and got is not None
                and Decimal(str(want)).quantize(Decimal("0.0001")) == got)
        else:
            same = want == got
        if not same:
            diffs.append(f"{name} {_plain(got)} (sent {want})")
    return ", ".join(diffs)


def _check_duplicate_keys(conn, since: datetime, report: VerifyReport) -> None:
    """A key stored twice outside the ledger's orders (the unique index forbids it; a
    migration that lost it would not)."""
    reported = {v.client_order_id for v in report.violations if v.kind == "duplicate"}
    for key, ids in conn.execute(_DUPLICATE_KEYS_SQL, {"since": since}).fetchall():
        if key not in reported:
            report.counts["duplicate"] += 1
            report.violations.append(Violation("duplicate", key, ids[0], f"stored {len(ids)} "
                                               f"times (trades {', '.join(map(str, ids))})"))


# -- small helpers ----------------------------------------------------------------------

def _run_dir(ledger_root: Path, run_id: str | None) -> Path | None:
    runs = run_dirs(ledger_root)
    if run_id is None:
        return runs[-1] if runs else None
    try:
        check_run_id(run_id)
    except ValueError as exc:
        raise TradelabError(str(exc)) from None
    if not (ledger_root / run_id).is_dir():
        known = ", ".join(p.name for p in runs[-3:]) or "none yet"
        raise TradelabError(f"no load run {run_id!r} in {ledger_root} (latest: {known}); "
                            "`tradelab load --json` prints a run's id")
    return ledger_root / run_id


def _all_attempted(ledger_root: Path) -> set[str]:
    keys: set[str] = set()
    for run in run_dirs(ledger_root):
        keys |= read_ledger(run).attempted
    return keys


def _since(ledger: LedgerSummary | None) -> datetime:
    if ledger is None or ledger.first_ts is None:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return datetime.fromtimestamp(ledger.first_ts, UTC) - timedelta(seconds=CLOCK_SLACK_S)


def _rows(conn, sql: str, params: dict) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
