"""Per-run ledgers of the orders a load test attempted and the ones the API acknowledged.

    ledger = Ledger(Path("<lab>/state/load"), run_id="20250101T120000Z-ab12")
    ledger.attempted("load-3f…")                       # written before the request is sent
    ledger.acknowledged("load-3f…", trade_id=12, code=201)
    summary = read_ledger(Path("<lab>/state/load/20250101T120000Z-ab12"))
    summary.acknowledged          # {client_order_id: trade_id}
    summary.unacknowledged        # attempted, never acknowledged: maybe in the database

Layout: <dir>/<run_id>/<host>-<pid>.jsonl, one file per Locust process (workers on other
machines write their own), one JSON object per line, flushed line by line so a killed
worker leaves a complete ledger. An acknowledged order was answered 201 or 200 (a
replay of the same key), so it must be in the database: the game-day reconciliation
checks exactly that. This module does not import Locust; tradelab reads ledgers with it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

LEDGER_DIR_ENV = "TRADELAB_LOAD_LEDGER_DIR"
RUN_ID_ENV = "TRADELAB_LOAD_RUN_ID"


def new_run_id() -> str:
    """A sortable, unique run id: UTC start time plus a little randomness."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)


class Ledger:
    """Appends this process's order events for one run."""

    def __init__(self, directory: Path, run_id: str) -> None:
        self.path = Path(directory) / run_id / f"{socket.gethostname()}-{os.getpid()}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Line-buffered: each event is one write(), so it survives a SIGKILL of the worker.
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")

    def attempted(self, client_order_id: str) -> None:
        self._write({"event": "attempted", "client_order_id": client_order_id})

    def acknowledged(self, client_order_id: str, trade_id: int, code: int) -> None:
        self._write({"event": "acknowledged", "client_order_id": client_order_id,
                     "trade_id": trade_id, "code": code})

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
    files: list[Path] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def unacknowledged(self) -> set[str]:
        """Sent but never acknowledged: each may or may not have been committed."""
        return self.attempted - self.acknowledged.keys()


def read_ledger(run_dir: Path) -> LedgerSummary:
    """Every process's events for one run, merged. A torn last line is skipped."""
    summary = LedgerSummary(Path(run_dir))
    for path in sorted(Path(run_dir).glob("*.jsonl")):
        summary.files.append(path)
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a process killed mid-line; the complete lines still count
            if record.get("event") == "attempted":
                summary.attempted.add(record["client_order_id"])
            elif record.get("event") == "acknowledged":
                summary.acknowledged[record["client_order_id"]] = record["trade_id"]
    return summary


def latest_run(directory: Path) -> Path | None:
    """The most recent run's directory under `directory`, if any."""
    runs = [p for p in Path(directory).glob("*") if p.is_dir()] if Path(directory).is_dir() else []
    return max(runs, key=lambda p: p.name, default=None)
