"""The end of a game day: were the orders the load had acknowledged kept?

    result = reconcile_run(settings, lab, run_id)
    result["ok"], result["counts"], result["summary"]

With tradelab.verify (the full Jepsen-style check: ok, lost, altered, unexpected,
duplicate, indeterminate, and the trading invariants) this is its report. Where
verify is not installed yet, a smaller check of the same ledger against the trades
table stands in: every acknowledged order must be in the database under its key with
the trade id the API answered; orders never answered are counted present or absent.
"""

from __future__ import annotations

from typing import Any

from tradelab.errors import TradelabError


def reconcile_run(settings, lab, run_id: str | None) -> dict[str, Any]:
    if not run_id:
        return {"ok": False, "method": "none", "counts": {}, "violations": [],
                "summary": "no load ran, so nothing could be reconciled"}
    try:
        from tradelab.verify import verify
    except ImportError:
        return ledger_against_trades(settings, lab, run_id)
    report = verify(settings, lab, run_id=run_id)
    counts = dict(report.counts)
    return {"ok": bool(report.ok), "method": "tradelab verify", "run_id": run_id,
            "counts": counts, "violations": list(report.violations)[:50],
            "summary": _summary(counts, bool(report.ok)), "report": report.as_dict()}


def ledger_against_trades(settings, lab, run_id: str) -> dict[str, Any]:
    """The stand-in for verify: acknowledged orders against the trades table."""
    # TODO(issue 13, verify): once tradelab.verify is on main everywhere, drop this
    # function; reconcile_run already prefers verify when it can import it.
    from tradelab.db.connect import resolve_url
    from tradelab.loadtest._ledger import read_ledger
    from tradelab.ops import open_read_only

    run_dir = lab.state_dir / "load" / run_id
    if not run_dir.is_dir():
        raise TradelabError(f"no ledger for load run {run_id} under {run_dir.parent}")
    ledger = read_ledger(run_dir)
    keys = sorted(ledger.attempted | set(ledger.acknowledged))
    url = resolve_url(None, settings, lab, role="operator")
    with open_read_only(url) as conn:
        rows = conn.execute("SELECT client_order_id, id FROM trades"
                            " WHERE client_order_id = ANY(%s)", (keys,)).fetchall()
    in_db: dict[str, list[int]] = {}
    for key, trade_id in rows:
        in_db.setdefault(key, []).append(trade_id)
    counts = {"ok": 0, "lost": 0, "altered": 0, "duplicate": 0,
              "indeterminate_present": 0, "indeterminate_absent": 0}
    violations = []
    for key, trade_id in sorted(ledger.acknowledged.items()):
        ids = in_db.get(key, [])
        if not ids:
            counts["lost"] += 1
            violations.append({"client_order_id": key, "problem": "lost", "trade_id": trade_id})
        elif len(ids) > 1:
            counts["duplicate"] += 1
            violations.append({"client_order_id": key, "problem": "duplicate", "trade_ids": ids})
        elif ids[0] != trade_id:
            counts["altered"] += 1
            violations.append({"client_order_id": key, "problem": "altered",
                               "acknowledged_id": trade_id, "database_id": ids[0]})
        else:
            counts["ok"] += 1
    for key in sorted(ledger.unacknowledged):
        counts["indeterminate_present" if key in in_db else "indeterminate_absent"] += 1
    ok = not violations
    return {"ok": ok, "method": "ledger against trades (tradelab verify not available)",
            "run_id": run_id, "attempted": len(ledger.attempted),
            "acknowledged": len(ledger.acknowledged), "counts": counts,
            "violations": violations[:50], "summary": _summary(counts, ok)}


def _summary(counts: dict[str, int], ok: bool) -> str:
    shown = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items() if v) or "nothing"
    return ("nothing lost: " if ok else "VIOLATIONS: ") + shown
