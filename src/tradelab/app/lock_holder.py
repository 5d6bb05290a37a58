"""The db-lock-contention fault's session: a SHARE lock on trades, held idle in a transaction.

    python -m tradelab.app.lock_holder --lab-dir LAB --since SINCE   # started by `chaos on`
    hold(database_url, reader, since)                                # the same, in-process

A SHARE lock is what CREATE INDEX without CONCURRENTLY takes: reads go on, while every
INSERT and UPDATE of trades (the API's new orders, the engine's fills) waits behind it
until its lock_timeout and fails. The session then sits "idle in transaction", as a
forgotten psql session or a stuck batch job does, until one of these ends it:
the fault is turned off (or its --for runs out), or an operator terminates the session
(`tradelab ops db sessions --kill PID` or `--kill-idle-in-transaction`). A terminated
session is not taken again: the lever mends the lab, as it would at work. It connects
as the application role, as a batch job of the application would.
"""

from __future__ import annotations

import argparse
import logging
import select
import sys
from typing import Any

log = logging.getLogger("tradelab.lock_holder")

FAULT = "db-lock-contention"
APPLICATION_NAME = "tradelab-report"  # what `ops db sessions` shows: a job, not the fault
LOCK_SQL = "LOCK TABLE trades IN SHARE MODE"
READY = "ready"  # the line `chaos on` waits for on this process's stdout (tradelab.chaos)
POLL_S = 0.25


def hold(database_url: str, reader: Any, since: str, started=lambda: None) -> str:
    """Take the lock and keep it while the fault switched on at `since` is on; return why
    it ended ("fault off" or "session terminated"). `started` is called once it holds."""
    import psycopg

    conn = psycopg.connect(database_url, autocommit=False, connect_timeout=5,
                           application_name=APPLICATION_NAME,
                           options="-c lock_timeout=15s -c statement_timeout=0"
                                   " -c idle_in_transaction_session_timeout=0")
    try:
        conn.execute(LOCK_SQL)
        log.warning("holding a SHARE lock on trades", extra={
            "event": "chaos_injected", "fault": FAULT, "pid": conn.info.backend_pid})
        started()
        while _still_on(reader, since):
            readable, _, _ = select.select([conn.fileno()], [], [], POLL_S)
            if readable:  # an idle session hears from the server only when it is ended
                return "session terminated"
        return "fault off"
    finally:
        try:
            conn.rollback()
        except psycopg.Error:
            pass  # terminated: the lock went with the session
        conn.close()


def _still_on(reader: Any, since: str) -> bool:
    """The fault is on, and it is the one switched on at `since` (not a later one)."""
    from datetime import datetime

    fault = reader.active().get(FAULT)
    return fault is not None and fault.since == datetime.fromisoformat(
        since.replace("Z", "+00:00"))


def main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    import psycopg

    from tradelab.chaos_state import ChaosReader, chaos_file_from_env
    from tradelab.db.connect import resolve_url
    from tradelab.lab import Lab
    from tradelab.logs import setup_logging
    from tradelab.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m tradelab.app.lock_holder")
    parser.add_argument("--lab-dir", type=Path, required=True)
    parser.add_argument("--since", required=True, help="the fault's `since` in chaos.json")
    args = parser.parse_args(argv)
    setup_logging("lock-holder", stream=sys.stderr)  # stdout: the handshake
    lab = Lab(args.lab_dir)
    settings = load_settings(lab)
    reader = ChaosReader(chaos_file_from_env(lab), check_interval_s=POLL_S)

    def started() -> None:
        print(READY, flush=True)

    try:
        why = hold(resolve_url(None, settings, lab, "app"), reader, args.since, started)
    except psycopg.Error as exc:
        print(f"cannot lock trades: {str(exc).strip().splitlines()[0]}", file=sys.stderr,
              flush=True)
        return 1
    log.info(f"lock on trades released: {why}", extra={"event": "chaos_ended", "fault": FAULT})
    return 0


if __name__ == "__main__":
    sys.exit(main())
