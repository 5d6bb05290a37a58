"""Per-run ledgers of the orders a load test attempted, and what the API answered.

    ledger = Ledger(Path("<lab>/state/load"), run_id="20250101T120000Z-ab12")
    ledger.attempted(order)          # the whole body, written before the request is sent
    ledger.acknowledged("load-3f…", trade_id=12, code=201)
    ledger.unanswered("load-3f…", code=0, error="ConnectionResetError")  # or a 5xx
    summary = read_ledger(Path("<lab>/state/load/20250101T120000Z-ab12"))
    summary.acknowledged          # {client_order_id: trade_id}
    summary.unacknowledged        # attempted, never acknowledged: maybe in the database
    summary.orders["load-3f…"]    # {"symbol", "side", "quantity", "limit_price"}

Layout: <dir>/<run_id>/<host>-<pid>.jsonl, one file per Locust process (workers on other
machines write their own), one JSON object per line, flushed line by line so a killed
worker leaves a complete ledger. An acknowledged order was answered 201 or 200 (a
replay of the same key), so it must be in the database, with the body attempted:
`tradelab verify` checks exactly that. An order without an acknowledgement (no answer,
a reset, a timeout, a 5xx) may or may not have been committed. Ledgers written before
the body was recorded ({"client_order_id"} only) are still read; their orders cannot be
checked for alterations. A run id is a path component, so only safe tokens are taken
(`check_run_id`). This module does not import Locust; tradelab reads ledgers with it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

LEDGER_DIR_ENV = "TRADELAB_LOAD_LEDGER_DIR"
RUN_ID_ENV = "TRADELAB_LOAD_RUN_ID"
ORDER_FIELDS = ("symbol", "side", "quantity", "limit_price")
# Letters, digits, dot, dash, underscore; no leading dot: never "..", never a slash.
_SAFE_RUN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def new_run_id() -> str:
    """A sortable, unique run id: UTC start time plus a little randomness."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)


def is_safe_run_id(run_id: str) -> bool:
    return isinstance(run_id, str) and _SAFE_RUN_ID.fullmatch(run_id) is not None


def check_run_id(run_id: str) -> str:
    """`run_id` if it is a safe folder name; ValueError saying what is allowed otherwise."""
    if not is_safe_run_id(run_id):
        raise ValueError(f"invalid run id {run_id!r}: use 1 to 100 letters, digits, '.', "
                         "'_' or '-', not starting with '.'")
    return run_id


class Ledger:
    """Appends this process's order events for one run."""

    def __init__(self, directory: Path, run_id: str) -> None:
        self.run_id = check_run_id(run_id)
        self.path = Path(directory) / run_id / f"{socket.gethostname()}-{os.getpid()}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Line-buffered: each event is one write(), so it survives a SIGKILL of the worker.
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")

    def attempted(self, order: dict | str) -> None:
        """An order about to be sent: its body (a bare client_order_id is accepted too)."""
        if isinstance(order, str):
            self._write({"event": "attempted", "client_order_id": order})
            return
        self._write({"event": "attempted", "client_order_id": order["client_order_id"],
                     **{k: order.get(k) for k in ORDER_FIELDS}})

    def acknowledged(self, client_order_id: str, trade_id: int, code: int) -> None:
        self._write({"event": "acknowledged", "client_order_id": client_order_id,
                     "trade_id": trade_id, "code": code})

    def unanswered(self, client_order_id: str, code: int, error: str = "") -> None:
        """The order's last try got no acknowledgement: code 0 (no answer: timeout, reset,
        refused) or an error status; whether it was committed is unknown."""
        self._write({"event": "unanswered", "client_order_id": client_order_id,
                     "code": code, "error": error[:200]})

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        self._file.close()

    def _write(self, record: dict) -> None:
        record["ts"] = round(time.time(), 3)
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")


@dataclass
class LedgerSummary:
    run_dir: Path
    attempted: set[str] = field(default_factory=set)
    acknowledged: dict[str, int] = field(default_factory=dict)
    # Every trade id an order was acknowledged with: more than one is a duplicate.
    acknowledgements: dict[str, set[int]] = field(default_factory=dict)
    orders: dict[str, dict] = field(default_factory=dict)  # body per key, where recorded
    unanswered: dict[str, dict] = field(default_factory=dict)  # last {"code", "error"}
    files: list[Path] = field(default_factory=list)
    first_ts: float | None = None
    last_ts: float | None = None

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def unacknowledged(self) -> set[str]:
        """Sent but never acknowledged: each may or may not have been committed."""
        return self.attempted - self.acknowledged.keys()

    def _seen(self, ts) -> None:
        if isinstance(ts, int | float):
            self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
            self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)


def read_ledger(run_dir: Path) -> LedgerSummary:
    """Every process's events for one run, merged. A torn last line is skipped."""
    summary = LedgerSummary(Path(run_dir))
    for path in sorted(Path(run_dir).glob("*.jsonl")):
        summary.files.append(path)
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
                key = record["client_order_id"]
            except (ValueError, KeyError, TypeError):
                continue  # a process killed mid-line; the complete lines still count
            summary._seen(record.get("ts"))
            event = record.get("event")
            if event == "attempted":
                summary.attempted.add(key)
                if any(k in record for k in ORDER_FIELDS):
                    summary.orders[key] = {k: record.get(k) for k in ORDER_FIELDS}
            elif event == "acknowledged":
                summary.acknowledged.setdefault(key, record["trade_id"])
                summary.acknowledgements.setdefault(key, set()).add(record["trade_id"])
            elif event == "unanswered":
                summary.unanswered[key] = {"code": record.get("code"),
                                           "error": record.get("error", "")}
    return summary


def run_dirs(directory: Path) -> list[Path]:
    """Every run's directory under `directory`, oldest first (run ids sort by time)."""
    if not Path(directory).is_dir():
        return []
    return sorted((p for p in Path(directory).iterdir() if p.is_dir()), key=lambda p: p.name)


def latest_run(directory: Path) -> Path | None:
    """The most recent run's directory under `directory`, if any."""
    runs = run_dirs(directory)
    return runs[-1] if runs else None
