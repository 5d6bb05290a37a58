"""The end of a game day: were the orders the load had acknowledged kept?

    result = reconcile_run(settings, lab, run_id)
    result["ok"], result["counts"], result["summary"]

This is `tradelab verify` on the game day's own load run (tradelab.verify: every
acknowledged order ok, lost or altered, unexpected rows, duplicates, indeterminate
orders, and the trading invariants), as a JSON-ready dict for the journal.

A fault whose damage is what verify exists to find (bad-fills: fills outside their
limit) names it in its experiment, `"expected_violations": ["outside_limit"]`: then
the reconciliation is ok when verify found and named that damage, and nothing else.
"""

from __future__ import annotations

from typing import Any


def reconcile_run(settings, lab, run_id: str | None,
                  expected: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    if not run_id:
        return {"ok": False, "method": "none", "counts": {}, "violations": [],
                "summary": "no load ran, so nothing could be reconciled"}
    from tradelab.verify import verify

    report = verify(settings, lab, run_id=run_id)
    details = report.as_dict()
    result = {"ok": report.ok, "method": "tradelab verify", "run_id": run_id,
              "counts": dict(report.counts), "invariants": details["invariants"],
              "violations": details["violations"][:50], "summary": report.summary_line()}
    if expected:
        found = sum(1 for v in report.violations if v.kind in expected)
        others = len(report.violations) - found
        result["expected_violations"] = {"kinds": list(expected), "found": found}
        result["ok"] = found > 0 and others == 0
        result["summary"] += (f" (expected: the fault's {', '.join(expected)}; "
                              f"{'none found' if not found else f'{found} found and named'}"
                              f"{f', {others} others' if others else ''})")
    return result
