"""Figure 5: the operator's queries on 1M trades: find-trade, investigate-failures, EXPLAIN.

    python -m bench --only operator

Fills a database with 1M trades (--quick: 2,000) spread over the last 7 days, 2 %
FAILED, 10 % REJECTED, each with its `received` and final event (2M events), then
times tradelab.ops.find_trade (by id and by client order id, random trades) and
investigate_failures (last hour), each call on its own read-only connection as the
CLI makes it, as the operator role. Baseline: connect as the operator and SELECT 1,
the floor any operator command pays. EXPLAIN of every query shows which index it uses.
Then `verify` (tradelab.verify: read_ledger + reconcile) over a ledger that attempted
and acknowledged every one of those orders, against the floor of reading the same rows
once (one SELECT of every trade's key and body, fetched into Python).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from pathlib import Path

from bench.harness import Figure, Run, interleaved, percentile

LIMITS = """\
Every query is an index scan on a partial or plain index (trades_pkey, the unique
client_order_id index, trade_events_by_trade, trades_failed_by_time, trades_by_time),
so the time is dominated by the new connection each command opens (authentication,
backend start) and by the round trips: find-trade makes 2 queries, investigate-failures
6 in one REPEATABLE READ snapshot; its window count (trades_in_window) reads the
index over every trade of the window, so it grows with the traffic of that hour.
verify is Python-bound: it parses every ledger line (JSON), then fetches every trade
and every event row of the run's window into dicts and labels each key."""

SEED_TRADES = """
INSERT INTO trades (client_order_id, symbol, side, quantity, limit_price, status,
                    fill_price, failure_reason, source, request_hash, created_at, updated_at)
SELECT 'op-' || g, (ARRAY['AAPL','MSFT','GOOG','AMZN','TSLA'])[1 + g %% 5],
       CASE WHEN g %% 2 = 0 THEN 'BUY' ELSE 'SELL' END, 1 + g %% 100, NULL,
       CASE WHEN g %% 50 = 0 THEN 'FAILED' WHEN g %% 10 = 1 THEN 'REJECTED' ELSE 'FILLED' END,
       CASE WHEN g %% 50 = 0 OR g %% 10 = 1 THEN NULL ELSE 100 END,
       CASE WHEN g %% 50 = 0 THEN (ARRAY['EXCHANGE_CONNECTION_FAILED: venue down',
                                         'EXCHANGE_TIMEOUT: no answer'])[1 + g %% 2] END,
       'bench', '', now() - g * %s * interval '1 second',
       now() - g * %s * interval '1 second'
FROM generate_series(1, %s) AS g
"""
SEED_EVENTS = """
INSERT INTO trade_events (trade_id, event, status, detail, created_at)
SELECT id, 'received', 'NEW', '{}'::jsonb, created_at FROM trades
UNION ALL
SELECT id, lower(status), status, '{}', created_at + interval '20 milliseconds' FROM trades
"""


def seed(admin_url: str, n: int) -> None:
    import psycopg

    spacing = 7 * 86400 / n  # n trades over the last 7 days
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(SEED_TRADES, (spacing, spacing, n))
        conn.execute(SEED_EVENTS)
        conn.execute("VACUUM ANALYZE trades")
        conn.execute("VACUUM ANALYZE trade_events")


def plan_indexes(conn, sql: str, params) -> str:
    """The scan nodes of EXPLAIN, e.g. 'Index Scan on trades_pkey'."""
    (plan,) = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()
    found = []

    def walk(node):
        if "Scan" in node["Node Type"]:
            found.append(f"{node['Node Type']}"
                         + (f" on {node['Index Name']}" if "Index Name" in node else
                            f" of {node.get('Relation Name', '?')}"))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return ", ".join(dict.fromkeys(found))


def write_ledger(admin_url: str, run_dir: Path) -> None:
    """A load ledger in which every trade of the database was attempted and acknowledged
    (201) with the body that is stored: what verify sees after a clean run."""
    import psycopg

    run_dir.mkdir(parents=True)
    with psycopg.connect(admin_url) as conn, open(run_dir / "bench-1.jsonl", "w") as out:
        cur = conn.cursor(name="ledger")  # server-side: 1M rows without 1M in memory at once
        cur.execute("SELECT id, client_order_id, symbol, side, quantity, limit_price,"
                    " extract(epoch FROM created_at)::float FROM trades ORDER BY id")
        for trade_id, key, symbol, side, quantity, limit, ts in cur:
            body = {"symbol": symbol, "side": side, "quantity": quantity,
                    "limit_price": None if limit is None else float(limit)}
            out.write(json.dumps({"event": "attempted", "client_order_id": key, **body,
                                  "ts": round(ts, 3)}) + "\n")
            out.write(json.dumps({"event": "acknowledged", "client_order_id": key,
                                  "trade_id": trade_id, "code": 201,
                                  "ts": round(ts, 3)}) + "\n")


def measure_verify(run: Run, fig: Figure, url: str, n: int) -> None:
    import psycopg

    from tradelab.loadtest._ledger import read_ledger
    from tradelab.verify import reconcile

    run_dir = run.root / "lab-operator" / "state" / "load" / "20260101T000000Z-bench"
    write_ledger(run.admin_url("bench_operator"), run_dir)
    times, floor = [], []
    for _ in range(run.size(2, 1)):
        started = time.perf_counter()
        ledger = read_ledger(run_dir)
        report = reconcile(url, ledger, set(ledger.attempted), healthy_for_s=60)
        times.append(time.perf_counter() - started)
        started = time.perf_counter()
        with psycopg.connect(url) as conn:
            conn.execute("SELECT id, client_order_id, symbol, side, quantity, limit_price"
                         " FROM trades").fetchall()
        floor.append(time.perf_counter() - started)
    ok = report.counts["ok"]
    fig.row(f"verify over a {n:,}-order ledger", round(min(times), 2), "s",
            baseline=round(min(floor), 2), baseline_name="one SELECT of every trade",
            note=f"best of {len(times)}; {ok:,} ok, {len(report.violations)} violations")


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def run_figure(run: Run) -> Figure:
    import psycopg

    from tradelab import ops

    n = run.size(1_000_000, 2_000)
    fig = Figure("operator", f"Operator queries on {n:,} trades",
                 goal="index use for every query (EXPLAIN); p50/p99 reported", limits=LIMITS)
    run.database("bench_operator")
    url = run.operator_url("bench_operator")
    started = time.monotonic()
    seed(run.admin_url("bench_operator"), n)
    fig.notes.append(f"filled {n:,} trades and {2 * n:,} events in "
                     f"{time.monotonic() - started:.0f} s")
    rng = random.Random(16)
    calls = run.size(100, 5)

    def floor():
        with psycopg.connect(url) as conn:
            conn.execute("SELECT 1").fetchone()

    queries = {
        "connect + SELECT 1 (floor)": floor,
        "find-trade by id": lambda: ops.find_trade(url, trade_id=rng.randint(1, n)),
        "find-trade by client order id": lambda: ops.find_trade(
            url, client_order_id=f"op-{rng.randint(1, n)}"),
        "investigate-failures, last hour": lambda: ops.investigate_failures(
            url, limit=20, since_s=3600),
    }
    # Call by call in rotation, so that a busy moment of the machine lands on all four.
    results: dict[str, list[float]] = {what: [] for what in queries}
    for order in interleaved(list(queries), calls):
        for what in order:
            results[what] += timed(queries[what], 1)
    floor_p50 = percentile(results["connect + SELECT 1 (floor)"], 50)
    for what, ms in results.items():
        is_floor = what.endswith("(floor)")
        fig.row(f"{what}, p50", round(percentile(ms, 50), 2), "ms",
                baseline=None if is_floor else round(floor_p50, 2),
                baseline_name=None if is_floor else "connect + SELECT 1",
                note=f"p99 {percentile(ms, 99):.2f} ms over {calls} calls")
    tradelab = shutil.which("tradelab")
    if tradelab:  # the whole command, as the operator types it
        wall = timed(lambda: subprocess.run(
            [tradelab, "find-trade", "--id", str(rng.randint(1, n)), "--json",
             "--database-url", url], capture_output=True, check=True), run.size(10, 2))
        fig.row("`tradelab find-trade --id N --json` wall time, p50",
                round(percentile(wall, 50), 1), "ms", note="Python start, imports, query")
    with psycopg.connect(url) as conn:
        since = conn.execute("SELECT now() - interval '1 hour'").fetchone()[0]
        params = {"since": since, "symbol": None, "limit": 20}
        fig.notes.append("EXPLAIN find-trade by id: "
                         + plan_indexes(conn, ops.FIND_TRADE_SQL["id"], (n // 2,)))
        fig.notes.append("EXPLAIN find-trade by client order id: "
                         + plan_indexes(conn, ops.FIND_TRADE_SQL["client_order_id"],
                                        (f"op-{n // 2}",)))
        fig.notes.append("EXPLAIN the trade's events: "
                         + plan_indexes(conn, ops.TRADE_EVENTS_SQL, (n // 2,)))
        for name, sql in ops.failure_queries(None).items():
            fig.notes.append(f"EXPLAIN investigate-failures {name}: "
                             + plan_indexes(conn, sql, params))
    measure_verify(run, fig, url, n)
    return fig
