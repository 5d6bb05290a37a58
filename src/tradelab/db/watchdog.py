"""Client-side deadlines for database work: a frozen or cut-off server hangs no caller.

    watchdog = Watchdog(limit_s=15)
    with watchdog.watching(conn):          # past 15 s the connection's socket is shut
        conn.execute("SELECT ...")         # down, and this raises psycopg.OperationalError
    with watchdog.watching(conn, 1.0):     # a shorter limit for one piece of work
        ...
    watchdog.busy_s()                      # age of the oldest work still running (a gauge)

Server-side timeouts (statement_timeout, lock_timeout) end work on a server that runs.
A server that is frozen (SIGSTOP, a paused container) runs nothing, and its kernel still
acknowledges every packet, so neither those timeouts nor TCP keepalives ever fire: only
the client can end the wait. One daemon thread per watchdog checks the work in progress
every `check_every_s` and shuts down the socket of whatever is overdue; the connection
is then broken, and a pool discards it when it comes back.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("tradelab.db")


class Watchdog:
    def __init__(self, limit_s: float, check_every_s: float = 0.25) -> None:
        self.limit_s = limit_s
        self.check_every_s = check_every_s
        self._lock = threading.Lock()
        self._work: dict[int, tuple[float, float, Any]] = {}  # token: (since, limit, conn)
        self._next = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @contextmanager
    def watching(self, conn: Any, limit_s: float | None = None) -> Iterator[Any]:
        token = self.watch(conn, limit_s)
        try:
            yield conn
        finally:
            self.done(token)

    def watch(self, conn: Any, limit_s: float | None = None) -> int:
        """Start the clock on work over `conn`; `done(token)` stops it."""
        with self._lock:
            self._next += 1
            self._work[self._next] = (time.monotonic(), limit_s or self.limit_s, conn)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="tradelab-db-watchdog",
                                                daemon=True)
                self._thread.start()
            return self._next

    def done(self, token: int) -> None:
        with self._lock:
            self._work.pop(token, None)

    def busy_s(self) -> float:
        with self._lock:
            oldest = min((since for since, _, _ in self._work.values()), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.check_every_s):
            now = time.monotonic()
            with self._lock:
                overdue = [(token, limit, conn) for token, (since, limit, conn)
                           in self._work.items() if now - since > limit]
                for token, _, _ in overdue:
                    del self._work[token]
            for _, limit, conn in overdue:
                cut(conn, limit)


def cut(conn: Any, limit_s: float) -> None:
    """Shut down `conn`'s socket: a call blocked on it fails at once."""
    log.error(f"database work ran past {limit_s:g}s: closing the connection",
              extra={"event": "db_work_timeout"})
    try:
        sock = socket.socket(fileno=os.dup(conn.fileno()))
    except Exception:  # noqa: BLE001 - closed meanwhile: nothing left to end
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()
