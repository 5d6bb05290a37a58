"""`tradelab ops restart` on a live lab: one scenario, run on either runtime.

    restart_loses_no_order(cli, api_url, lab_root)    # cli(*args) -> (exit code, output)

The engine is stalled (engine-stall, a wedged process) with acknowledged orders
waiting NEW; `ops restart engine` must bring back a healthy engine that executes
them, and `ops restart api` a healthy API that still knows every acknowledged order.
Both restarts are in the lab's audit log. Chaos is off again when it returns.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests

from support.polling import wait_for

Cli = Callable[..., tuple[int, str]]
SETTLED = ("FILLED", "REJECTED", "FAILED")


def _order(api: str) -> int:
    body = {"client_order_id": f"restart-{uuid.uuid4().hex[:12]}", "symbol": "AAPL",
            "side": "BUY", "quantity": 5}
    r = requests.post(f"{api}/trades", json=body, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _status(api: str, trade_id: int) -> str | None:
    r = requests.get(f"{api}/trades/{trade_id}", timeout=5)
    return r.json()["status"] if r.status_code == 200 else None


def _restart(cli: Cli, service: str) -> dict:
    code, out = cli("ops", "restart", service, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert (report["service"], report["after"], report["health"]) == (
        service, "running", "healthy"), report
    return report


def restart_loses_no_order(cli: Cli, api: str, lab_root: Path) -> None:
    settled = [_order(api) for _ in range(3)]
    wait_for(lambda: all(_status(api, t) in SETTLED for t in settled), 60,
             "the first orders to settle")
    code, out = cli("chaos", "on", "engine-stall", "--for", "3m")
    assert code == 0, out
    try:
        time.sleep(1.5)  # the engine re-reads chaos.json within about a second
        waiting = [_order(api) for _ in range(3)]
        time.sleep(2)
        assert {_status(api, t) for t in waiting} == {"NEW"}, "the stall did not hold orders"

        _restart(cli, "engine")  # a new engine process: the stall was the old one's
        wait_for(lambda: all(_status(api, t) in SETTLED for t in waiting), 60,
                 "the restarted engine to execute the waiting orders")
        _restart(cli, "api")
        statuses = {t: _status(api, t) for t in settled + waiting}
        assert all(s in SETTLED for s in statuses.values()), statuses
    finally:
        cli("chaos", "off")
    audit = [json.loads(line) for line in
             (lab_root / "state" / "audit.jsonl").read_text().splitlines()]
    restarts = [(e["arguments"][0], e["outcome"]) for e in audit
                if e["command"] == "ops restart"]
    assert ("engine", "ok") in restarts and ("api", "ok") in restarts, restarts
