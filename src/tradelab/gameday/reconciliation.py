"""The end of a game day: were the orders the load had acknowledged kept?

    result = reconcile_run(settings, lab, run_id)
    result["ok"], result["counts"], result["summary"]

This is `tradelab verify` on the game day's own load run (tradelab.verify: every
acknowledged order ok, lost or altered, unexpected rows, duplicates, indeterminate
orders, and the trading invariants), as a JSON-ready dict for the journal.
"""

from __future__ import annotations

from typing import Any


def reconcile_run(settings, lab, run_id: str | None) -> dict[str, Any]:
    if not run_id:
        return {"ok": False, "method": "none", "counts": {}, "violations": [],
                "summary": "no load ran, so nothing could be reconciled"}
    from tradelab.verify import verify

    report = verify(settings, lab, run_id=run_id)
    details = report.as_dict()
    return {"ok": report.ok, "method": "tradelab verify", "run_id": run_id,
            "counts": dict(report.counts), "invariants": details["invariants"],
            "violations": details["violations"][:50], "summary": report.summary_line()}
