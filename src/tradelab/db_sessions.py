"""Who holds database connections and locks, and freeing them (`tradelab ops db sessions`).

    sessions = list_sessions(operator_url)       # read-only: pg_stat_activity + pg_locks
    kill_session(admin_url, pid=4242)            # pg_terminate_backend, this database only
    kill_idle_in_transaction(admin_url)          # every session idle inside a transaction

Listing needs only the read-only operator role (it is granted pg_read_all_stats by
`tradelab db migrate`, so it sees every session's state and query). Terminating a
backend needs more than a read-only role can have: it is done as the lab's admin role
(the server's superuser, secrets/postgres_password) or the --database-url given, and
it is limited to client sessions of this database, never this command's own.
"""

from __future__ import annotations

from typing import Any

from tradelab.errors import TradelabError

_SESSIONS = """
SELECT a.pid, a.usename, a.application_name, a.client_addr::text, a.state,
       a.wait_event_type, a.wait_event,
       extract(epoch FROM now() - a.backend_start)::float8 AS connected_s,
       extract(epoch FROM now() - a.xact_start)::float8 AS transaction_s,
       extract(epoch FROM now() - a.state_change)::float8 AS in_state_s,
       (SELECT count(*) FROM pg_locks l WHERE l.pid = a.pid AND l.granted) AS locks_held,
       pg_blocking_pids(a.pid) AS blocked_by,
       left(a.query, 200) AS query
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.backend_type = 'client backend'
  AND a.pid <> pg_backend_pid()
ORDER BY a.xact_start NULLS LAST, a.pid
"""
_KILLABLE = """
SELECT pid, state FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend'
  AND pid <> pg_backend_pid()
"""
COLUMNS = ("pid", "usename", "application_name", "client_addr", "state", "wait_event_type",
           "wait_event", "connected_s", "transaction_s", "in_state_s", "locks_held",
           "blocked_by", "query")


def list_sessions(url: str) -> dict[str, Any]:
    from tradelab.ops import open_read_only

    with open_read_only(url) as conn:
        rows = conn.execute(_SESSIONS).fetchall()
    sessions = [{c: (round(v, 1) if isinstance(v, float) else v)
                 for c, v in zip(COLUMNS, r, strict=True)} for r in rows]
    states: dict[str, int] = {}
    for s in sessions:
        state = str(s["state"] or "unknown")
        states[state] = states.get(state, 0) + 1
    return {"sessions": sessions, "by_state": states,
            "blocked": sum(1 for s in sessions if s["blocked_by"])}


def kill_session(url: str, pid: int) -> dict[str, Any]:
    with _admin(url) as conn:
        killable = dict(conn.execute(_KILLABLE).fetchall())
        if pid not in killable:
            raise TradelabError(f"no client session with pid {pid} in this database: "
                                "`tradelab ops db sessions` lists them")
        done = _terminate(conn, [pid])
    return {"killed": done, "asked": [pid]}


def kill_idle_in_transaction(url: str) -> dict[str, Any]:
    with _admin(url) as conn:
        pids = [p for p, state in conn.execute(_KILLABLE).fetchall()
                if state in ("idle in transaction", "idle in transaction (aborted)")]
        done = _terminate(conn, pids)
    return {"killed": done, "asked": pids}


def _terminate(conn, pids: list[int]) -> list[int]:
    import psycopg

    done = []
    for pid in pids:
        try:
            if conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0]:
                done.append(pid)
        except psycopg.errors.InsufficientPrivilege:
            raise TradelabError(
                "this database user may not terminate sessions: use the lab's admin role "
                "(the default) or a --database-url of a superuser or a member of "
                "pg_signal_backend") from None
    return done


def _admin(url: str):
    from tradelab.db.connect import connect

    return connect(url, autocommit=True)
